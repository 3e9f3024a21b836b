// NAME: a wasiclaw skill in JavaScript, built into a component with ComponentizeJS.
//
// Build:   npm install && npm run build
// Install: cp NAME.wasm ~/.local/share/wasiclaw/skills/
// Then:    wasiclaw skills approve NAME
//
// `wit/` is the contract (wasiclaw:plugin); `describe` says what the skill
// offers and asks for, `invoke` runs one tool. Each call is a fresh sandbox.
// (For a skill without a build step, see `wasiclaw new script`.)

export const toolApi = {
  describe() {
    const hello = {
      name: "hello",
      description: "Greet someone by name",
      parameters: JSON.stringify({ type: "object", properties: { name: { type: "string" } }, "x-risk": "read" }),
    };
    return {
      name: "NAME",
      version: "0.1.0",
      description: "Says hello",
      tools: [hello],
      // Ask for what the tools need, e.g. `kv: true`.
      capabilities: {
        http: [],
        secrets: [],
        rights: { kv: false, notify: false, files: false, memoryRead: false, memoryWrite: false },
      },
    };
  },

  invoke(tool, argsJson) {
    const args = JSON.parse(argsJson);
    if (tool === "hello") return `Hello, ${args.name || "world"}!`;
    throw { tag: "not-found", val: `no tool ${tool}` };
  },
};

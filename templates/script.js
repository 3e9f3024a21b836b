// NAME: a script skill, run by wasiclaw's built-in script runner.
// Every edit is a new build: approve it with `wasiclaw skills approve NAME`.
// Ask for rights in `capabilities` (http, secrets, kv, notify, memory_read,
// memory_write); the script API is kv, fetch, config, memory, notify, hmac, log.
const manifest = {
  name: "NAME",
  version: "0.1.0",
  description: "Says hello",
  tools: [
    {
      name: "hello",
      description: "Greet someone by name",
      parameters: { type: "object", properties: { name: { type: "string" } }, "x-risk": "read" },
    },
  ],
  capabilities: {},
};

function hello(args) {
  return `Hello, ${args.name || "world"}!`;
}

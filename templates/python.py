"""NAME: a wasiclaw skill in Python, built with componentize-py.

Build:   componentize-py -d wit -w wasiclaw:plugin/skill componentize app -o NAME.wasm
Install: cp NAME.wasm ~/.local/share/wasiclaw/skills/
Then:    wasiclaw skills approve NAME
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.wasiclaw_plugin_types import (
    Capabilities,
    Error_InvalidInput,
    Error_NotFound,
    Manifest,
    Rights,
    Tool,
)


class ToolApi(exports.ToolApi):
    def describe(self) -> Manifest:
        schema = {"type": "object", "properties": {"name": {"type": "string"}}, "x-risk": "read"}
        return Manifest(
            name="NAME",
            version="0.1.0",
            description="Says hello",
            tools=[Tool("hello", "Greet someone by name", json.dumps(schema))],
            # Ask for what the tools need, e.g. Rights.KV.
            capabilities=Capabilities(http=[], secrets=[], rights=Rights(0)),
        )

    def invoke(self, tool: str, args_json: str) -> str:
        try:
            args = json.loads(args_json)
        except json.JSONDecodeError as e:
            raise Err(Error_InvalidInput(f"arguments: {e}"))
        if tool == "hello":
            return f"Hello, {args.get('name') or 'world'}!"
        raise Err(Error_NotFound(f"no tool {tool}"))

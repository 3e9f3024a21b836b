"""wordstats: a wasiclaw skill written in Python, built with componentize-py.

Build (from the repository root):

    componentize-py -d wit -w wasiclaw:plugin/skill componentize \
        -p examples/python-skill app -o wordstats.wasm

It asks for `kv` to keep a running tally; `count` needs no rights at all.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, config
from wit_world.imports.wasiclaw_plugin_types import (
    Capabilities,
    Rights,
    Error_InvalidInput,
    Error_NotFound,
    Manifest,
    Tool,
)


def _args(args_json: str) -> dict:
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as e:
        raise Err(Error_InvalidInput(f"arguments are not valid JSON: {e}"))
    if not isinstance(args, dict):
        raise Err(Error_InvalidInput("arguments must be a JSON object"))
    return args


def _stats(text: str) -> dict:
    return {"words": len(text.split()), "chars": len(text), "lines": len(text.splitlines())}


class ToolApi(exports.ToolApi):
    def describe(self) -> Manifest:
        text_schema = json.dumps(
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        )
        return Manifest(
            name="wordstats",
            version="0.1.0",
            description="Word, character and line counts, with a running tally",
            tools=[
                Tool("count", "Count words, characters and lines of a text.", text_schema),
                Tool("tally", "Add a text's words to a running total kept across calls.", text_schema),
            ],
            capabilities=Capabilities(http=[], secrets=[], rights=Rights.KV),
        )

    def invoke(self, tool: str, args_json: str) -> str:
        args = _args(args_json)
        text = args.get("text")
        if not isinstance(text, str):
            raise Err(Error_InvalidInput("missing string argument `text`"))
        if tool == "count":
            stats = _stats(text)
            stats["language"] = config.get("language") or "unknown"
            return json.dumps(stats)
        if tool == "tally":
            total = int((kv.get("total") or b"0").decode()) + _stats(text)["words"]
            kv.set("total", str(total).encode())
            return json.dumps({"total_words": total})
        raise Err(Error_NotFound(f"no tool named `{tool}`"))

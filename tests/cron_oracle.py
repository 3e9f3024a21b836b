"""Oracle for tests/cron.rs: next fire times from croniter 7.0.0.

stdin: JSON list of {"expr", "tz", "from" (ISO 8601 with offset), "n"}
stdout: JSON list of lists of UTC times "YYYY-MM-DDTHH:MM:SSZ".
"""
import json
import sys
from datetime import datetime, timezone
from importlib.metadata import version
from zoneinfo import ZoneInfo

if version("croniter") != "7.0.0":
    sys.exit(f"croniter {version('croniter')} is installed; the oracle needs 7.0.0 (pip install croniter==7.0.0)")

from croniter import croniter  # noqa: E402

out = []
for case in json.load(sys.stdin):
    tz = ZoneInfo(case["tz"])
    it = croniter(case["expr"], datetime.fromisoformat(case["from"]).astimezone(tz))
    out.append(
        [it.get_next(datetime).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for _ in range(case["n"])]
    )
json.dump(out, sys.stdout)

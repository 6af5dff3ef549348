"""`python -m failure_stories.tools.schema`: write scenarios/scenario.schema.json,
the JSON Schema of scenario.yaml generated from the model the loader validates
with, for editors (a YAML language server reads it)."""

from __future__ import annotations

import json

from failure_stories.contract import scenario as scenarios
from failure_stories.core import atomic


def main() -> int:
    target = scenarios.scenarios_root() / "scenario.schema.json"
    atomic.write_text(target, json.dumps(scenarios.json_schema(), indent=2) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

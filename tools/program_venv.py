"""Planning inside the program's own virtualenv, as Pulumi's language host runs a program.

When `Pulumi.yaml` names `runtime.options.virtualenv` and it exists, the program's imports
must resolve there (its SDK versions, `pulumi-random`, its own helpers), not in the engine's
environment. The engine then runs one plan in a child process with that interpreter: this
module (`python -m tools.program_venv REQUEST RESULT`) plans in-process there with the
engine's code on its path, checks the inputs against that environment's SDKs, and writes the
inventory (secrets already masked) or the error as JSON. The engine needs nothing there but
`pulumi` (its own dependencies: PyYAML, protobuf) and what the program imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tools.engine import (
    PlanError,
    PlanResult,
    ProgramError,
    Project,
    StackConfig,
    checks,
    plan_here,
    read_project,
)
from tools.inventory import Inventory

TOOLS_ROOT = Path(__file__).resolve().parent.parent


def plan_in_virtualenv(
    python: Path, project: Project, stack: str, config: StackConfig, *, check: bool = True
) -> PlanResult:
    """Plan the stack in a child process running the program virtualenv's interpreter."""
    with tempfile.TemporaryDirectory(prefix="plan-venv-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(
            json.dumps(
                {
                    "program": str(project.root),
                    "stack": stack,
                    "config": config.values,
                    "secretKeys": list(config.secret_keys),
                    "check": check,
                }
            )
        )
        path = os.pathsep.join(p for p in (str(TOOLS_ROOT), os.environ.get("PYTHONPATH")) if p)
        completed = subprocess.run(
            [str(python), "-m", "tools.program_venv", str(request), str(result)],
            env={**os.environ, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            check=False,
        )
        output = completed.stdout + completed.stderr
        if not result.is_file():
            # The engine never started there: its traceback is for --verbose only.
            last = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise ProgramError(
                [
                    f"the program's virtualenv ({project.virtualenv_path}) cannot run the"
                    f" offline engine ({last[0]}); it needs pulumi and what the program imports"
                    f" (pip install -r {project.requirements})"
                ],
                output,
            )
        # The program's own prints and warnings, as the language host shows them.
        sys.stderr.write(output)
        answer = json.loads(result.read_text())
    if "error" in answer:
        error = answer["error"]
        if error["kind"] == "program":
            raise ProgramError(error["lines"], error.get("traceback", ""))
        raise PlanError("\n".join(error["lines"]))
    return PlanResult(
        Inventory.from_json(answer["inventory"]),
        list(answer.get("unknownInputs", [])),
        list(answer.get("uncheckedTypes", [])),
    )


def main(argv: list[str]) -> int:
    """The child: plan as asked in REQUEST and write the answer to RESULT."""
    request_path, result_path = Path(argv[0]), Path(argv[1])
    request = json.loads(request_path.read_text())
    answer: dict[str, Any]
    try:
        project = read_project(Path(request["program"]))
        config = StackConfig(dict(request["config"]), tuple(request["secretKeys"]))
        inventory = plan_here(project, request["stack"], config)
        result = checks(inventory) if request.get("check", True) else PlanResult(inventory)
        answer = {
            "inventory": result.inventory.to_json(),
            "unknownInputs": result.unknown_inputs,
            "uncheckedTypes": result.unchecked_types,
        }
    except ProgramError as exc:
        answer = {"error": {"kind": "program", "lines": exc.lines, "traceback": exc.traceback_text}}
    except PlanError as exc:
        answer = {"error": {"kind": "plan", "lines": str(exc).splitlines()}}
    result_path.write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

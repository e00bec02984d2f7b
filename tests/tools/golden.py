"""Golden inventories of the repository's stacks: a digest per resource, and what the plan read.

The engine's speed work must not change what a plan declares. The golden file
(`fixtures/golden/inventories.json`) keeps, per stack, a digest of each resource row (type,
name, URN, parent, provider, inputs, secrets, options) and of the outputs, plus a
fingerprint of the program's inputs: every file under the repository the plan opened or
imported (infra/, the app modules it imports, the stack file ...), by content. A test plans
the stacks again: with the same program inputs, every digest must match.

Regenerate only when an intended change alters the inventory, and say so in the commit:

    .venv/bin/python -m tests.tools.golden
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tools.inventory import Inventory

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden" / "inventories.json"
STACKS = ("dev", "prod")
# Not the program: the engine itself, the tests, environments and caches.
_NOT_PROGRAM = ("tools", "tests", ".venv", "policies", ".git", "bench")

_opened: set[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.add(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks stay for the process; it records only while planning


@contextmanager
def recording() -> Iterator[set[str]]:
    """The files opened while the block runs (imports included)."""
    global _opened
    _opened = set()
    try:
        yield _opened
    finally:
        _opened = None


def program_files(opened: set[str]) -> list[Path]:
    """The repository files among those opened, with compiled modules as their sources."""
    found: set[Path] = set()
    for name in opened:
        path = Path(name)
        if path.suffix == ".pyc" and path.parent.name == "__pycache__":
            path = path.parent.parent / f"{path.name.split('.')[0]}.py"
        elif "__pycache__" in path.parts:  # other caches (Numba's): rewritten, not inputs
            continue
        path = path.resolve() if path.is_absolute() else (REPO / path).resolve()
        if not path.is_file() or not path.is_relative_to(REPO):
            continue
        relative = path.relative_to(REPO)
        if relative.parts[0] not in _NOT_PROGRAM:
            found.add(path)
    return sorted(found)


def fingerprint(opened: set[str], also: Iterable[str] = ()) -> dict[str, str]:
    """Content digests of the program files among `opened`, and of the files named in `also`
    (the golden's own list: modules loaded before this plan began are not opened again)."""
    files = {str(f.relative_to(REPO)) for f in program_files(opened)} | set(also)
    return {name: _content(REPO / name) for name in sorted(files)}


def _content(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def digests(inventory: Inventory) -> dict[str, Any]:
    data = inventory.to_json()
    return {
        "resources": {row["urn"]: digest(row) for row in data["resources"]},
        "outputs": digest(data["outputs"]),
    }


def load() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


def write(entries: dict[str, Any]) -> None:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")


def main() -> int:
    from tools.engine import plan

    entries = {}
    for stack in STACKS:
        # The program's modules are imported afresh by each plan, so every one is opened.
        with recording() as opened:
            inventory = plan(REPO, stack)
        files = fingerprint(opened)
        entries[stack] = {"program": files, **digests(inventory)}
        print(f"{stack}: {len(inventory.resources)} resources, {len(files)} program files")
    write(entries)
    print(f"wrote {GOLDEN.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

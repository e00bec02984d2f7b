"""The signal service's image in a stack file: where the image workflow pushes it, and the edit
that pins the pushed digest (`workloads.signalService.image`).

    python3 .github/scripts/stack_image.py repository Pulumi.prod.yaml
    python3 .github/scripts/stack_image.py pin Pulumi.prod.yaml sha256:<64 hex>

`repository` prints the reference without its tag or digest (the stack's Artifact Registry
repository the image lives in). `pin` rewrites that one value to `<repository>@<digest>`, and a
stack still at `signal-platform:stage: infrastructure` (a new project's first deploy, which
creates the registry) moves to `workloads`: the image now exists, so the pull request that pins
it also deploys the workloads (README, "Deploying for real"). Every other line, comment
included, stays as it was. Standard library only: the workflow runs it before any virtualenv
exists. Exit codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

PATH = ("config", "signal-platform:workloads", "signalService", "image")
STAGE = ("config", "signal-platform:stage")
# The stage the first deploy of a new project runs at, and the one a pushed image allows.
FIRST_STAGE, WITH_IMAGE = "infrastructure", "workloads"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# registry host / path [:tag] [@digest]
REFERENCE_RE = re.compile(
    r"^(?P<repository>[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)+)(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$"
)


class BadInput(Exception):
    """A stack file or argument the script cannot use; the message is the one line to print."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _children(lines: list[str], start: int, parent_indent: int) -> Iterator[int]:
    """The lines of a block's direct children: the block ends at the first line indented no
    deeper than its parent; its children share the indentation of its first line."""
    child_indent = None
    for i in range(start, len(lines)):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _indent(line) <= parent_indent:
            return
        child_indent = _indent(line) if child_indent is None else child_indent
        if _indent(line) == child_indent:
            yield i


def find(lines: list[str], path: tuple[str, ...]) -> tuple[int, str] | None:
    """The index of the line holding `path`'s value and the value (None: no such key), each key
    looked for among the direct children of the one before."""
    start, indent = 0, -1
    for depth, key in enumerate(path):
        for i in _children(lines, start, indent):
            match = re.fullmatch(rf"{re.escape(key)}:(.*)", lines[i].strip())
            if match:
                break
        else:
            return None
        if depth == len(path) - 1:
            return i, match.group(1).split(" #")[0].strip().strip("\"'")
        start, indent = i + 1, _indent(lines[i])
    raise AssertionError("unreachable: path is not empty")


def find_image(lines: list[str], source: str) -> tuple[int, str]:
    """The line holding the signal service's image, and the image."""
    found = find(lines, PATH)
    if found is None:
        raise BadInput(f"{source}: no {'.'.join(PATH[1:])} (the signal service's image)")
    if not found[1]:
        raise BadInput(f"{source}:{found[0] + 1}: {'.'.join(PATH[1:])} is empty")
    return found


def repository(reference: str, source: str) -> str:
    match = REFERENCE_RE.match(reference)
    if not match:
        raise BadInput(
            f"{source}: {'.'.join(PATH[1:])} = {reference!r} is not an image reference "
            "(registry host/path[:tag][@sha256:digest])"
        )
    return match.group("repository")


def pin(path: Path, digest: str) -> str:
    """Rewrite the image to `<repository>@<digest>` in place; returns the new reference."""
    if not DIGEST_RE.match(digest):
        raise BadInput(f"digest {digest!r} is not sha256:<64 lowercase hex digits>")
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    index, value = find_image(lines, str(path))
    pinned = f"{repository(value, str(path))}@{digest}"
    lines[index] = lines[index].replace(value, pinned, 1)
    stage = find(lines, STAGE)
    if stage is not None and stage[1] == FIRST_STAGE:
        # The value after `signal-platform:stage:` (quoted or not), not the key or a comment.
        lines[stage[0]] = re.sub(
            rf"(stage:\s*[\"']?){FIRST_STAGE}", rf"\g<1>{WITH_IMAGE}", lines[stage[0]], count=1
        )
    path.write_text("".join(lines))
    return pinned


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["repository", file]:
                path = Path(file)
                _, value = find_image(path.read_text().splitlines(), file)
                print(repository(value, file))
            case ["pin", file, digest]:
                print(pin(Path(file), digest))
            case _:
                raise BadInput("usage: stack_image.py repository FILE | pin FILE sha256:DIGEST")
    except (BadInput, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

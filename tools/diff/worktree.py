"""Git for a diff: the repository a program lives in, refs resolved to commits, and a
temporary detached worktree of a commit that is removed afterwards, even on failure."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class DiffError(Exception):
    """The diff cannot run: not a git repository, an unknown ref, a bad argument."""


def git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def repo_root(path: Path) -> Path:
    try:
        return Path(git(path, "rev-parse", "--show-toplevel")).resolve()
    except DiffError as exc:
        raise DiffError(f"{path} is not inside a git repository ({exc})") from None


def resolve_ref(root: Path, ref: str) -> str:
    try:
        return git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except DiffError:
        raise DiffError(f"unknown git ref {ref!r} in {root}") from None


@contextlib.contextmanager
def worktree(root: Path, commit: str) -> Iterator[Path]:
    """A temporary detached worktree of `commit`, removed afterwards even on failure."""
    parent = Path(tempfile.mkdtemp(prefix="plan-diff-"))
    path = parent / "tree"
    try:
        git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
        yield path
    finally:
        with contextlib.suppress(DiffError):
            git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        with contextlib.suppress(DiffError):
            git(root, "worktree", "prune")

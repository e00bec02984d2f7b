"""A directory a setting names, made ready with an error that names the setting."""

from __future__ import annotations

from pathlib import Path


def ensure_directory(path: Path, setting: str) -> Path:
    """Create ``path`` (and its parents) if missing; an ``OSError`` naming ``setting`` and the
    reason otherwise, which the CLI prints as one line (exit 2)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OSError(f"{setting} = '{path}': a file is in the way; name a directory") from None
    except OSError as exc:
        raise OSError(
            f"{setting} = '{path}': cannot create the directory ({exc.strerror or exc})"
        ) from None
    return path

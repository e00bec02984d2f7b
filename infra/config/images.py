"""Container image references: where an image comes from and how firmly it is pinned.

Every image names its registry host (a reference without one resolves to Docker Hub), and a
prod image is pinned by a real digest: a digest of one repeated character (all zeros) is a
placeholder. A prod image may go without a digest only when the stack lists that exact
reference in `unpinnedImages` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated

from pydantic import AfterValidator

from app.config_errors import Problem
from infra.config.base import refuse

# The distribution reference grammar (github.com/distribution/reference), lowercase names.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?)"
REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
REFERENCE_ALLOWED = "[host[:port]/]path[:tag][@sha256:<64 hex digits>], lowercase path"
PINNED_ALLOWED = "<registry host>/<path>[:tag]@sha256:<the image's 64-hex-digit digest>"


def _reference(value: str) -> str:
    if not REFERENCE_RE.match(value):
        raise refuse("not an image reference", value, REFERENCE_ALLOWED)
    return value


ImageReference = Annotated[str, AfterValidator(_reference)]


def registry_host(image: str) -> str | None:
    """The registry an image is pulled from, or None when it names none (Docker Hub)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def repository(image: str) -> str:
    """The reference without its tag or digest: what is pulled, at whichever version."""
    match = REFERENCE_RE.match(image)
    return match["name"] if match else image


def digest(image: str) -> str | None:
    match = REFERENCE_RE.match(image)
    return match["digest"] if match else None


def is_placeholder_digest(value: str) -> bool:
    """sha256:000…0 (or any one repeated character): written by hand, never by a registry."""
    return len(set(value.removeprefix("sha256:"))) == 1


def image_problems(
    path: str, image: str, prod: bool, unpinned: Mapping[str, str]
) -> Iterator[Problem]:
    """The rules every image follows; ``unpinned``: prod's accepted digest-less references."""
    if registry_host(image) is None:
        yield Problem(
            path,
            "image names no registry host, so it would be pulled from Docker Hub",
            image,
            "a registry host first: nvcr.io/..., <region>-docker.pkg.dev/<project>/<repo>/...",
        )
    pinned = digest(image)
    if pinned is not None and is_placeholder_digest(pinned):
        yield Problem(path, "a placeholder digest, not an image's", image, PINNED_ALLOWED)
    elif prod and pinned is None and image not in unpinned:
        yield Problem(path, "prod images must be pinned by digest", image, PINNED_ALLOWED)

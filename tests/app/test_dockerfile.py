"""The service image, checked statically (no Docker engine here): hadolint, and a parse of the
Dockerfile's stages; plus the health probe the image runs, against a real gRPC server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.app.conftest import run

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "app" / "Dockerfile"
DOCKERIGNORE = REPO / "app" / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage: comments dropped, continuation lines joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args.strip(), re.IGNORECASE)
            assert m, f"unparsable FROM: {line}"
            stages.append(Stage(m.group(1), m.group(2)))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction; fails on shell form."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_parser_sees_through_continuations_and_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS one\nRUN x \\\n  && y\n# mid\nFROM b\nUSER 1\n")
    assert [(s.base, s.name) for s in parsed] == [("a", "one"), ("b", None)]
    assert parsed[0].all("RUN") == ["x && y"] and parsed[1].all("USER") == ["1"]


def test_final_stage_is_distroless_pinned_by_digest_and_non_root(stages: list[Stage]) -> None:
    final = stages[-1]
    image, _, digest = final.base.partition("@sha256:")
    assert image.startswith("gcr.io/distroless/python3-debian12")
    assert re.fullmatch(r"[0-9a-f]{64}", digest), final.base
    assert all("@sha256:" in s.base or s.base in {t.name for t in stages} for s in stages)
    users = final.all("USER")
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"} and (not user.isdigit() or int(user) >= 1000), user
    # No shell in distroless: nothing may need one.
    assert not final.all("RUN")
    for keyword in ("ENTRYPOINT", "CMD"):
        for args in final.all(keyword):
            argv = exec_form(args)
            assert argv[0] not in {"/bin/sh", "sh", "bash", "/bin/bash"}
    assert exec_form(final.all("ENTRYPOINT")[-1])[:3] == ["/usr/bin/python3", "-m", "app"]


def test_health_check_uses_the_grpc_probe_module(stages: list[Stage]) -> None:
    (healthcheck,) = stages[-1].all("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv[:3] == ["/usr/bin/python3", "-m", "app.healthcheck"]
    assert "--interval=" in options and "--timeout=" in options


def test_dependencies_are_a_layer_before_the_code(stages: list[Stage]) -> None:
    ordered = [(i, kw, args) for i, s in enumerate(stages) for kw, args in s.instructions]
    deps_install = next(n for n, (_, kw, args) in enumerate(ordered)
                        if kw == "RUN" and "-r requirements.lock" in args)  # fmt: skip
    requirements_copy = next(n for n, (_, kw, args) in enumerate(ordered)
                             if kw == "COPY" and args.startswith("requirements.lock"))  # fmt: skip
    code_copy = next(n for n, (_, kw, args) in enumerate(ordered)
                     if kw == "COPY" and args.startswith(". "))  # fmt: skip
    assert requirements_copy < deps_install < code_copy


def test_numba_cache_is_writable_under_tmp_and_models_are_mounted(stages: list[Stage]) -> None:
    final = stages[-1]
    env = " ".join(final.all("ENV"))
    assert re.search(r"NUMBA_CACHE_DIR=/tmp/\S+", env)
    assert '"/models"' in " ".join(final.all("VOLUME"))
    assert "--model-dir" in exec_form(final.all("CMD")[-1])
    copies = " ".join(args for s in stages for args in s.all("COPY"))
    assert "model" not in copies.lower() and ".onnx" not in copies
    ignored = DOCKERIGNORE.read_text()
    for pattern in ("**/*.onnx", "**/artifacts", "proto/*_pb2.py", "**/__pycache__"):
        assert pattern in ignored.splitlines(), pattern


# --- the probe the image's HEALTHCHECK runs ---------------------------------------------------


def probe(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.healthcheck", "--target", f"127.0.0.1:{port}",
         "--timeout", "3"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip


def test_the_health_probe_exits_zero_only_while_serving() -> None:
    async def scenario() -> list[tuple[int, str]]:
        import asyncio

        server = grpc.aio.server()
        # grpc_health's public asyncio servicer (defined under a version check pyright skips)
        servicer = health.aio.HealthServicer()  # pyright: ignore[reportAttributeAccessIssue]
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        results = []
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        done = await asyncio.to_thread(probe, port)
        results.append((done.returncode, done.stderr))
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        done = await asyncio.to_thread(probe, port)
        results.append((done.returncode, done.stderr))
        await server.stop(None)
        done = await asyncio.to_thread(probe, port)  # nothing listening any more
        results.append((done.returncode, done.stderr))
        return results

    serving, not_serving, gone = run(scenario())
    assert serving[0] == 0
    assert not_serving[0] == 1 and "NOT_SERVING" in not_serving[1]
    assert gone[0] == 1 and "UNAVAILABLE" in gone[1]

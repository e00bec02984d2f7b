"""Session fixtures for the app tests: one built model and one MLServer, shared by all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app.model.build import BuildOptions, ModelArtifacts, build_model

T = TypeVar("T")

# Smaller than the default build (the same code path), so the session builds in seconds.
TEST_BUILD = BuildOptions(
    train_symbols=16, heldout_symbols=8, ticks_per_symbol=1500, epochs=4, qat_epochs=3
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario on a fresh event loop (no pytest-asyncio needed)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The platform state directory (XDG_STATE_HOME) of every server the tests start, in-process
    or not: embedded defaults (the spool) never write into the real home directory."""
    path = tmp_path_factory.mktemp("state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifacts:
    root = tmp_path_factory.mktemp("model")
    return build_model(root, TEST_BUILD, log=lambda _msg: None)


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory, model: ModelArtifacts) -> Iterator[Any]:
    """MLServer serving the fp32 model over KServe-v2 gRPC on a free loopback port."""
    from app.serving.launch import MLServerProcess

    server = MLServerProcess(
        tmp_path_factory.mktemp("mlserver"),
        model.path("fp32"),
        model_name=model.name,
        model_version=str(model.version),
    )
    server.start(timeout_s=90)
    yield server
    server.stop()


@pytest.fixture
def model_path(model: ModelArtifacts) -> Path:
    return model.path("fp32")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real six-node Redis Cluster (3 masters, 3 replicas) on loopback, shared by the
    session; tests that kill nodes call ``ensure_healthy()`` when they are done."""
    from tests.app.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.close()

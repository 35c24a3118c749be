"""Test-suite setup: make ``tests/`` importable (``from builders import ...``), and the ``cluster`` fixture: one
local Ray cluster shared by the Ray test files, stopped after the last test that uses it."""

import sys
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

_LAST_CLUSTER_TEST = pytest.StashKey[str]()


@pytest.fixture
def cluster() -> str:
    """The address of the session's local 2-CPU Ray cluster (:data:`ray_cluster.CLUSTER`), started on first use."""
    from ray_cluster import CLUSTER

    return CLUSTER.start()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the last test that uses the Ray cluster (after selection and reordering): it stops the cluster."""
    users = [item.nodeid for item in session.items if "cluster" in getattr(item, "fixturenames", ())]
    if users:
        session.stash[_LAST_CLUSTER_TEST] = users[-1]


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if item.nodeid == item.session.stash.get(_LAST_CLUSTER_TEST, None):
        _stop_cluster()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _stop_cluster()  # a session stopped early (-x, Ctrl-C) before the last Ray test


def _stop_cluster() -> None:
    if "ray_cluster" in sys.modules:
        sys.modules["ray_cluster"].CLUSTER.stop()

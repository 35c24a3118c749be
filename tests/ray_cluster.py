"""What the Ray tests (``test_distributed``, ``test_distributed_label``) share: a local 2-CPU Ray cluster owned
by the test process, and ``fluxprm`` subprocesses that can join it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

TIMEOUT = 240  # seconds for one fluxprm run; a hung run fails the test instead of hanging the suite


def ray_env() -> dict[str, str]:
    """This process's environment as it is now: ``ray.init`` set the cluster's token-auth mode in it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return env


def fluxprm(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m fluxprm ARGS`` with :func:`ray_env`, its output captured."""
    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True, env=ray_env(),
                          timeout=timeout)


def local_cluster() -> Iterator[str]:
    """A local Ray cluster with 2 CPUs, owned by this test process; yields its address for ``--address``
    (wrap it in a module-scoped fixture)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def assert_same_files(out: Path, reference: Path) -> None:
    """``out`` and its errors file are byte for byte ``reference`` and its errors file."""
    assert out.read_bytes() == reference.read_bytes()
    ref_errors = reference.with_name(reference.stem + ".errors.jsonl")
    assert out.with_name(out.stem + ".errors.jsonl").read_bytes() == ref_errors.read_bytes()


def pool_actors() -> dict[str, set[int]]:
    """Process ids of the Ray Data actors that ran requests, by Ray job (from the cluster's actor table)."""
    import ray

    found: dict[str, set[int]] = {}
    for actor in ray._private.state.actors().values():
        if "_PoolActor" in actor["ActorClassName"]:
            found.setdefault(actor["JobID"], set()).add(actor["Pid"])
    return found


def ray_args(address: str) -> list[str]:
    """The flags of a run on ``address`` with a pool of two 1-CPU actors."""
    return ["--ray", "--address", address, "--workers", "2", "--cpus-per-worker", "1"]

"""What the Ray tests (``test_distributed``, ``test_distributed_label``) share: a local 2-CPU Ray cluster owned
by the test process, and ``fluxprm`` subprocesses that can join it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
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

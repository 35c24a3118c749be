"""What the Ray tests (``test_distributed``, ``test_distributed_label``) share: one local 2-CPU Ray cluster owned
by the test process (:data:`CLUSTER`, behind the ``cluster`` fixture of ``conftest.py``), and ``fluxprm``
subprocesses that can join it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

TIMEOUT = 240  # seconds for one fluxprm run; a hung run fails the test instead of hanging the suite


def ray_env() -> dict[str, str]:
    """This process's environment as it is now: ``ray.init`` set the cluster's token-auth mode in it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return env


def fluxprm(*args: str, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    """``python -m fluxprm ARGS`` with :func:`ray_env` (plus ``env``), its output captured."""
    return subprocess.run([sys.executable, "-m", "fluxprm", *args], capture_output=True, text=True,
                          env={**ray_env(), **env}, timeout=timeout)


def imported_torch(stderr: str) -> bool:
    """Whether a process run with ``PYTHONPROFILEIMPORTTIME=1`` imported torch (its import-time lines)."""
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in stderr.splitlines()
               if line.startswith("import time:"))


class SharedCluster:
    """One local Ray cluster with 2 CPUs for every Ray test of the session, owned by this test process.

    Started by the first test that asks for it and stopped right after the last one (``conftest.py`` knows which
    that is): ``ray.init`` of a fresh cluster costs seconds of the suite's budget, so the Ray test files share
    one, and the tests after them (``test_rl_verl`` starts its own Ray) find the process free of Ray.
    """

    def __init__(self) -> None:
        self.address: str | None = None

    def start(self) -> str:
        """The cluster's address for ``--address``, starting the cluster if it is not running."""
        if self.address is None:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            self.address = ray.get_runtime_context().gcs_address
        return self.address

    def stop(self) -> None:
        if self.address is not None:
            import ray

            self.address = None
            ray.shutdown()


CLUSTER = SharedCluster()


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


class BackgroundRun:
    """A ``python -m fluxprm ARGS`` run started now and awaited later: the single-process reference a test file
    compares its Ray runs with is made while the cluster starts and the first Ray run takes it."""

    def __init__(self, *args: str, output: Path):
        self.output = output
        self._stderr: str | None = None
        self._proc = subprocess.Popen([sys.executable, "-m", "fluxprm", *args, "-o", str(output)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ray_env())

    def result(self) -> Path:
        """The output file, once the run has finished (it must have succeeded, without a traceback)."""
        if self._stderr is None:
            self._stderr = self._proc.communicate(timeout=TIMEOUT)[1]
        assert self._proc.returncode == 0 and "Traceback" not in self._stderr, self._stderr[-3000:]
        return self.output

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "BackgroundRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()  # a failing test never leaves the run behind

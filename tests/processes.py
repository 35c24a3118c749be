"""Killing a real ``fluxprm`` process mid-run, for the resume tests (``test_faults``, ``test_distributed``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def kill_after_first_checkpoint(args: list[str], out: Path, *, env: dict[str, str], records: int,
                                timeout: float) -> int:
    """Start ``fluxprm ARGS -o OUT``, SIGKILL it as soon as its checkpoint counts a finished chunk; return that count.

    Asserts that the kill landed mid-run (some records done, not all), so a resume test cannot pass vacuously.
    """
    progress = out.with_name(out.name + ".progress.json")
    proc = subprocess.Popen([sys.executable, "-m", "fluxprm", *args, "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(progress.read_bytes())["done"] > 0:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    state = json.loads(progress.read_bytes())
    assert 0 < state["done"] < records and not state["complete"], f"the kill must land mid-run: {state}"
    return state["done"]

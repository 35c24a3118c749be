"""``fluxprm serve``: a thin entry over :func:`fluxprm.serve.app.create_app` run by uvicorn.

The server options are :class:`~fluxprm.serve.options.ServeOptions` fields and the scoring options
:class:`~fluxprm.engine.options.ScoreOptions` fields (both generated); declared here are only the model and
machine options, as in ``fluxprm score``. The socket is bound before the model loads (a port in use is a
one-line error, exit 2), ``--port 0`` picks a free port, and the line ``listening on http://HOST:PORT`` on
stderr says which. SIGTERM or Ctrl-C stops accepting connections, lets every accepted request finish, and
exits 0; a model that fails to load stops the server with exit 2 (bad name or checkpoint) or 1.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import signal
import socket
from dataclasses import replace
from typing import Annotated, Any

import typer

from fluxprm.cli.common import Model
from fluxprm.cli.model_options import Aggregate, Alpha, Device, Dtype, Format, MaxLength, Threads
from fluxprm.cli.options import Expand, generated_options
from fluxprm.cli.report import die, say, warn
from fluxprm.engine.options import ScoreOptions
from fluxprm.serve.options import ServeOptions

__all__ = ["serve"]

API_KEY_ENV = "FLUXPRM_API_KEY"


@generated_options
def serve(
    *,
    model: Model = None,
    server: ServeOptions,
    options: Annotated[ScoreOptions, Expand(exclude=("chunk_size", "on_error"))],
    dtype: Dtype = "auto",
    device: Device = "auto",
    threads: Threads = None,
    max_length: MaxLength = None,
    format: Format = None,
    aggregate: Aggregate = None,
    alpha: Alpha = None,
    explicit: dict[str, Any],
) -> None:
    """Serve a PRM over HTTP: POST /v1/score (trace records → score records), /get_reward (OpenRLHF remote
    reward model), /pooling (vLLM's process-reward-model API: [p_neg, p_pos] per step tag), GET /v1/models and
    /health. Requests from many clients are coalesced into model batches (dynamic batching).
    """
    for flag, value in (("--max-length", max_length), ("--threads", threads)):
        if value is not None and value < 1:
            die(f"{flag} must be >= 1, got {value}")
    if server.api_key is None and os.environ.get(API_KEY_ENV, "").strip():
        server = replace(server, api_key=os.environ[API_KEY_ENV].strip())
    if server.api_key is None and not _loopback(server.host):
        warn(f"serving on {server.host} without --api-key: anyone who can reach this port can use the model")
    if threads:
        import torch

        torch.set_num_threads(threads)
    sock = _bind(server.host, server.port)

    import uvicorn

    from fluxprm.serve.app import create_app

    fatal: list[BaseException] = []
    holder: dict[str, uvicorn.Server] = {}

    def load() -> Any:
        from fluxprm.engine.score import Scorer
        from fluxprm.models import load_prm
        from fluxprm.steps import step_config_for

        prm = load_prm(model, format=format and format.value, device=device, dtype=dtype, max_length=max_length,
                       aggregate=aggregate and aggregate.value, alpha=alpha)
        return Scorer(prm, replace(options, steps=step_config_for(prm.trained_steps, explicit)))

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        if "server" in holder:
            holder["server"].should_exit = True

    app = create_app(server, load, on_fatal=on_fatal)
    config = uvicorn.Config(app, log_level=server.log_level, access_log=server.access_log, lifespan="on",
                            timeout_graceful_shutdown=server.shutdown_timeout, log_config=_log_config(server),
                            server_header=False)
    holder["server"] = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    say(f"fluxprm serve: listening on http://{shown}:{port} (loading {model or 'fluxprm-mini'}; GET /health says "
        "when it is ready)")
    # uvicorn re-raises the stop signal once it has shut down; the graceful stop is done by then, so it must
    # not kill the process with that signal: a finished shutdown exits 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        holder["server"].run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if holder["server"].force_exit:
        die("forced exit: requests still in progress were dropped", code=1)
    if fatal:
        from fluxprm.models import ModelNotFound

        exc = fatal[0]
        die(f"the model failed to load: {exc}", code=2 if isinstance(exc, (ModelNotFound, ValueError)) else 1)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a busy port or a bad address is a usage error before anything loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        die(f"--host {host}: cannot resolve it ({exc.strerror})")
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = "; pick another --port (0 = any free one)" if exc.errno in (98, 48) else ""
        die(f"cannot listen on {host}:{port}: {exc.strerror}{hint}")
    sock.set_inheritable(True)
    return sock


def _log_config(server: ServeOptions) -> dict[str, Any]:
    """uvicorn's logging, plus the ``fluxprm.serve`` logger on the same stderr handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["fluxprm.serve"] = {"handlers": ["default"], "level": server.log_level.upper(),
                                          "propagate": False}
    return config

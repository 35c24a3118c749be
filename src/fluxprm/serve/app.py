"""The FastAPI application of ``fluxprm serve``: routes, auth, limits, and answering every request exactly once.

Routes: ``POST /v1/score`` (native), ``POST /get_reward`` (OpenRLHF), ``POST /pooling`` (vLLM, process reward
models), ``GET /v1/models``, ``GET /health``. Shapes are in :mod:`fluxprm.serve.protocols`; scoring goes through
one :class:`~fluxprm.serve.batcher.DynamicBatcher` over ``Scorer.score_batch``.

The model loads in a thread after the socket is bound: ``/health`` answers 503 ``loading`` until it is ready
(then 200 ``ready``), and scoring requests meanwhile get 503 with ``Retry-After``. Every error is a JSON body
``{"error": {"message", "type", "param", "code"}}`` (vLLM's and OpenAI's shape) with the matching status —
400 malformed JSON or fields, 401 missing/wrong key, 404 unknown route or model, 413 body or request too large,
503 queue full, loading or stopping (with ``Retry-After``), 500 an unexpected failure — and never a traceback
(that goes to the server log). A client that disconnects while its request waits has its job withdrawn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fluxprm.records import LONG_NUMBER, json_text
from fluxprm.serve.batcher import Closed, DynamicBatcher, Overloaded
from fluxprm.serve.options import DEFAULT_STEP_TAG, ServeOptions
from fluxprm.serve.protocols import (RequestError, parse_get_reward, parse_pooling, parse_score_request,
                                     pooling_response, reward_response, score_response, trace_tokens)

__all__ = ["create_app", "Engine", "engine_for", "coalescing", "JSONResponse"]

logger = logging.getLogger("fluxprm.serve")


class JSONResponse(Response):
    """JSON via orjson (fast; NaN and infinities become null, so a response is always valid JSON); what orjson
    refuses — a lone surrogate in an echoed id or error, an integer beyond 64 bits — as ``json`` writes it."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            return json_text(content, separators=(",", ":")).encode("utf-8")


def decode_body(body: bytes) -> Any:
    """A request body as ``fluxprm score`` would read the same record: orjson, except that an integer beyond 64
    bits stays exact (orjson makes it a float, so two ids could collide) and a lone surrogate (``"\\ud800"``,
    valid JSON orjson refuses) is read, so that only its own trace is rejected, not the whole request. NaN,
    Infinity and numbers beyond float range stay refused: no field of a request means them."""
    error: Exception | None = None
    if not LONG_NUMBER.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            error = exc
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON: not UTF-8 (byte 0x{body[exc.start]:02x} at "
                           f"position {exc.start})") from None

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal} is out of range")
        return value

    try:
        return json.loads(text, parse_constant=no_constant, parse_float=finite)
    except json.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"the request body is not valid JSON: {error or exc}") from None


@dataclass
class Engine:
    """What the routes need from a loaded model: the scorer, its names, context, step tag and tokenizer."""

    scorer: Any                      # fluxprm.engine.score.Scorer
    name: str                        # the name served in /v1/models and responses
    aliases: frozenset[str]          # names accepted in a request's "model" field
    max_length: int | None
    step_tag: str
    alpha: float | None              # the model's trajectory weight (normalising /get_reward's PRM reward)
    decode: Callable[[list[int]], str]


def engine_for(scorer: Any, options: ServeOptions) -> Engine:
    """The :class:`Engine` of a built ``Scorer``: names from the options, the model and its registry entry."""
    from fluxprm.models.registry import lookup

    prm = scorer.prm
    name = options.served_model_name or prm.name
    aliases = {name, prm.name}
    entry = lookup(prm.name)
    if entry is not None:
        aliases |= {entry.name, *([entry.hub_id] if entry.hub_id else [])}
    tag = options.step_tag or getattr(prm, "step_tag", None) or DEFAULT_STEP_TAG
    tokenizer = prm.tokenizer
    return Engine(scorer, name, frozenset(aliases), getattr(prm, "max_length", None), tag,
                  getattr(prm, "alpha", None), lambda ids: tokenizer.decode(ids, skip_special_tokens=False))


@dataclass
class _State:
    status: str = "loading"          # loading → ready | failed; stopping at shutdown
    error: str | None = None
    engine: Engine | None = None
    batcher: DynamicBatcher | None = None
    started: int = field(default_factory=lambda: int(time.time()))
    load_seconds: float | None = None
    batching: str = ""               # what dynamic batching does with this model (see ``coalescing``)
    answered: dict[int, int] = field(default_factory=dict)  # status code → count
    client_gone: int = 0


class _NotReady(Exception):
    def __init__(self, state: _State):
        super().__init__(state.status)
        self.state = state


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def _error(status: int, message: str, type_: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


def create_app(options: ServeOptions, load: Callable[[], Any], *,
               on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The application. ``load()`` builds the ``Scorer`` (in a thread, after startup); ``on_fatal`` is told
    when it fails (the CLI stops the server then). The model runs on the batcher's one worker thread."""
    state = _State()
    limit = options.max_body_bytes

    def load_in_background() -> None:
        start = time.monotonic()
        try:
            engine = engine_for(load(), options)
            coalesce, state.batching = coalescing(options, engine.scorer)
            batcher = DynamicBatcher(engine.scorer.score_batch, dynamic=coalesce,
                                     max_batch_tokens=options.max_batch_tokens, max_wait_ms=options.max_wait_ms,
                                     max_queue=options.max_queue)
        except BaseException as exc:  # noqa: BLE001 - reported on /health and to the CLI, never raised into uvicorn
            state.status, state.error = "failed", f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            logger.error("the model failed to load: %s", state.error)
            if on_fatal is not None:
                on_fatal(exc)
            return
        state.engine, state.batcher, state.load_seconds = engine, batcher, time.monotonic() - start
        if state.status == "loading":
            state.status = "ready"
        logger.info("model %s ready in %.1f s; dynamic batching %s", engine.name, state.load_seconds, state.batching)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load_in_background, name="fluxprm-load", daemon=True).start()
        yield
        state.status = "stopping" if state.status == "ready" else state.status
        if state.batcher is not None:  # accepted requests are answered: uvicorn waited for them already
            await asyncio.to_thread(state.batcher.close, True)
        logger.info("stopped: %s", _counts(state))

    app = FastAPI(title="fluxprm serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fluxprm = state

    # ------------------------------------------------------------------------------------------ plumbing

    def authorised(request: Request) -> bool:
        if options.api_key is None:
            return True
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), options.api_key.encode())

    def endpoint(func: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        """Auth, then the route; every outcome becomes exactly one JSON response (never a traceback)."""

        @functools.wraps(func)
        async def wrapped(request: Request) -> Response:
            response = await answer(request)
            state.answered[response.status_code] = state.answered.get(response.status_code, 0) + 1
            return response

        async def answer(request: Request) -> Response:
            if not authorised(request):
                return _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY' (or 'x-api-key: KEY')",
                              "AuthenticationError", headers={"WWW-Authenticate": "Bearer"})
            try:
                result = await func(request)
                return result if isinstance(result, Response) else JSONResponse(result)
            except RequestError as exc:
                return _error(exc.status, str(exc), exc.type, exc.param)
            except Overloaded as exc:
                return _error(503, str(exc), "ServiceUnavailable", headers={"Retry-After": str(exc.retry_after)})
            except _NotReady as exc:
                if exc.state.status == "loading":
                    return _error(503, "the model is still loading; retry shortly (GET /health says when it is "
                                       "ready)", "ServiceUnavailable", headers={"Retry-After": "2"})
                if exc.state.status == "failed":
                    return _error(503, f"the model failed to load: {exc.state.error}", "ServiceUnavailable")
                return _error(503, "the server is shutting down", "ServiceUnavailable", headers={"Retry-After": "5"})
            except Closed:
                return _error(503, "the server is shutting down", "ServiceUnavailable", headers={"Retry-After": "5"})
            except _ClientGone:
                state.client_gone += 1
                return _error(499, "client closed the request", "ClientClosedRequest")  # nobody reads it
            except Exception as exc:  # noqa: BLE001 - the client gets a message, the log gets the traceback
                logger.exception("unexpected error in %s %s", request.method, request.url.path)
                return _error(500, f"internal error ({type(exc).__name__}); the server log has the details",
                              "InternalServerError")

        return wrapped

    def ready() -> tuple[Engine, DynamicBatcher]:
        if state.status != "ready" or state.engine is None or state.batcher is None:
            raise _NotReady(state)
        return state.engine, state.batcher

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the body is {int(declared):,} bytes, more than this server's limit of {limit:,} "
                               "(--max-body-mb); split the request", status=413)
        size, chunks = 0, []
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(f"the body is over this server's limit of {limit:,} bytes (--max-body-mb); "
                                       "split the request", status=413)
                chunks.append(chunk)
        except ClientDisconnect:
            raise _ClientGone() from None
        body = b"".join(chunks)
        if not body.strip():
            raise RequestError("the request body is empty: send a JSON object")
        return decode_body(body)

    async def scored(request: Request, batcher: DynamicBatcher, items: list[Any]) -> list[Any]:
        """The results for ``items``, or :class:`_ClientGone` if the client leaves first (its job is withdrawn)."""
        if not items:
            return []
        if len(items) > options.max_queue:
            raise RequestError(f"the request holds {len(items)} traces, more than this server's queue holds "
                               f"({options.max_queue}, --max-queue); split it", status=413)
        future = batcher.submit(items, sum(trace_tokens(t) for t in items))
        waiter = asyncio.wrap_future(future)
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server is being torn down
            batcher.cancel(future)
            raise
        finally:
            watcher.cancel()
        if waiter in done:
            if waiter.cancelled():  # withdrawn by a forced shutdown
                raise Closed("the server is shutting down")
            return waiter.result()
        batcher.cancel(future)  # frees its room; if its batch already runs, the results are dropped
        waiter.add_done_callback(_retrieve)
        raise _ClientGone()

    def check_model(engine: Engine, model: Any) -> None:
        if model is not None and not isinstance(model, str):
            raise RequestError("'model' must be a string", param="model")
        if model and model not in engine.aliases:
            raise RequestError(f"The model `{model}` does not exist. This server serves {engine.name!r} "
                               "(GET /v1/models).", status=404, param="model")

    # ------------------------------------------------------------------------------------------ routes

    @app.get("/health")
    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"status": state.status}
        if state.engine is not None:
            body["model"] = state.engine.name
            body["dynamic_batching"] = state.batching
        if state.error:
            body["error"] = state.error
        if state.batcher is not None:
            body["queue"] = asdict(state.batcher.stats())
            body["answered"] = {str(k): v for k, v in sorted(state.answered.items())}
            body["client_gone"] = state.client_gone
        if state.status == "ready":
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "2"} if state.status == "loading" else None)

    @app.get("/v1/models")
    @endpoint
    async def models(request: Request) -> Any:
        engine, _ = ready()
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": state.started,
                                            "owned_by": "fluxprm", "root": engine.scorer.prm.name, "parent": None,
                                            "max_model_len": engine.max_length}]}

    @app.post("/v1/score")
    @endpoint
    async def score(request: Request) -> Any:
        body = await read_json(request)
        engine, batcher = ready()
        if isinstance(body, dict):
            check_model(engine, body.get("model"))
        items = parse_score_request(body, options.max_request_traces)
        return score_response(engine.name, await scored(request, batcher, items))

    @app.post("/get_reward")
    @endpoint
    async def get_reward(request: Request) -> Any:
        body = await read_json(request)
        engine, batcher = ready()
        batch = parse_get_reward(body, options.max_request_traces)
        results = await scored(request, batcher, batch.traces)
        prm, outcome, rewards = await asyncio.to_thread(_rewards, results, batch.completions, batch.golds,
                                                        options.beta, engine.alpha, options.grade_timeout)
        return reward_response(results, prm, outcome, rewards)

    @app.post("/pooling")
    @endpoint
    async def pooling(request: Request) -> Any:
        body = await read_json(request)
        engine, batcher = ready()
        model, items = parse_pooling(body, engine.step_tag, engine.decode, options.max_request_traces)
        check_model(engine, model)
        tagged = [i for i, item in enumerate(items) if item.tags]
        results = await scored(request, batcher, [items[i].trace(i) for i in tagged])
        data: list[list[list[float]]] = [[] for _ in items]
        tokens = 0
        for i, result in zip(tagged, results):
            data[i] = items[i].pairs(result, i, engine.max_length)
            tokens += getattr(result, "num_tokens", 0)
        return pooling_response(engine.name, data, tokens)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no route {request.url.path}: the server answers POST /v1/score, /get_reward, /pooling "
                        "and GET /v1/models, /health",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message, {404: "NotFoundError", 405: "MethodNotAllowed"}.get(
            exc.status_code, "HTTPError"), headers=getattr(exc, "headers", None))

    return app


def coalescing(options: ServeOptions, scorer: Any) -> tuple[bool, str]:
    """Whether to coalesce requests, and why: only where the engine pads.

    A coalesced batch pays when the engine runs it as padded forwards (always on a GPU; on a CPU where the
    engine measured padding to be faster). Where it measured one trace per forward to be faster (a CPU, for most
    models), a coalesced batch costs exactly what its requests cost one by one and only makes the first of them
    wait for the last, so requests are then scored one per call, in arrival order.
    """
    if not options.dynamic_batching:
        return False, "off (--no-dynamic-batching): one request per scoring call"
    engine_batcher = getattr(scorer, "batcher", None)
    mode, how = getattr(engine_batcher, "mode", "padded"), getattr(engine_batcher, "how", "")
    if mode == "padded":
        return True, f"on: requests coalesced into padded batches (engine: padded, {how})"
    return False, (f"on, not coalescing: the engine runs one trace per forward with this model and device ({how}), "
                   "where a coalesced batch costs what its requests cost one by one and only delays answers")


def _rewards(results: list[Any], completions: list[str], golds: list[Any], beta: float, alpha: float | None,
             timeout: float) -> tuple[list[float], list[float | None], list[float]]:
    """``(prm, outcome, reward)`` per sample: the ReasonFlux-PRM GRPO mix (runs in a thread: grading blocks)."""
    from fluxprm.rl.rewards import mix, outcome_reward, prm_reward

    prm = [prm_reward(r, alpha) for r in results]
    outcome = [outcome_reward(c, g, timeout) for c, g in zip(completions, golds)]
    return prm, outcome, [mix(p, o, beta) for p, o in zip(prm, outcome)]


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already: the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # mark a late failure as seen: its client left, nobody else wants it


def _counts(state: _State) -> str:
    answered = ", ".join(f"{v} × {k}" for k, v in sorted(state.answered.items())) or "no requests"
    return f"answered {answered}; {state.client_gone} clients left early"

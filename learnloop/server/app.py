"""The HTTP side: a Starlette app serving JSON-RPC 2.0 at ``POST /rpc`` (extra ``server``).

Routes:

* ``POST /rpc``: one call or a batch (a JSON array). Every call needs
  ``Authorization: Bearer <token>`` (compared in constant time); a missing or wrong
  token is answered with HTTP 401 and a JSON-RPC error ``-32001``. Bodies above
  ``max_body_bytes`` get HTTP 413, bad JSON HTTP 400 (``-32700``); every other
  problem is a JSON-RPC error object in an HTTP 200 answer, with a message that
  names the field. Nothing a client sends crashes the server.
* ``GET /export.jsonl?job_id=...`` (authenticated): every episode of a job (or of
  ``agent_id``/``kind``/``status`` filters), streamed as JSONL page by page.
* ``GET /healthz`` and ``GET /openrpc.json``: unauthenticated (no data).
* ``GET /metrics``: Prometheus text; unauthenticated by default (the server binds
  127.0.0.1 by default), ``metrics_require_auth=True`` to require the token.

The worker pool starts and stops with the app (its lifespan).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    JobError,
    LearnloopError,
    NotFoundError,
    StoreError,
)
from learnloop.jobs.model import JobStore
from learnloop.jobs.runners import Runners, default_runners
from learnloop.jobs.service import JobService
from learnloop.jobs.worker import PoolConfig, ProcessLauncher, ThreadLauncher, WorkerPool
from learnloop.store.base import Store

__all__ = ["ServerConfig", "create_app"]

logger = logging.getLogger(__name__)


def _require_starlette() -> None:
    try:
        import starlette  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            f"the server needs the 'server' extra: pip install 'learnloop[server]' ({exc})"
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """How the JSON-RPC server listens, authenticates, limits input and runs jobs."""

    host: str = "127.0.0.1"
    """Interface to bind (loopback by default; bind 0.0.0.0 only behind TLS)."""
    port: int = 8765
    """TCP port (0: any free port)."""
    token: str | None = None
    """Bearer token every method requires (default: $LEARNLOOP_SERVER_TOKEN)."""
    store: str | None = None
    """Store URL (default: $LEARNLOOP_STORE, else sqlite:///learnloop.db)."""
    jobs_dir: str = "jobs"
    """Folder under which each job gets its output folder."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body accepted (HTTP 413 beyond)."""
    max_batch: int = 1000
    """Most calls in one JSON-RPC batch."""
    metrics_require_auth: bool = False
    """Require the bearer token on GET /metrics too."""
    launcher: Literal["process", "thread", "ray"] = "process"
    """Run each job (and each evaluation) in its own process, in a thread here, or in a
    Ray actor (extra ``ray``; jobs then run anywhere in the Ray cluster)."""
    ray_address: str | None = None
    """Ray cluster to join with launcher "ray" ("auto": the local `ray start`); none:
    start Ray in this process."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """Worker pool limits and timings (max_workers 0: this server runs no jobs)."""

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must lie in [0, 65535], got {self.port}")
        if self.launcher not in ("process", "thread", "ray"):
            raise ConfigError(
                f"launcher must be 'process', 'thread' or 'ray', got {self.launcher!r}"
            )


def _check_token(token: str | None) -> str:
    if not token:
        raise ConfigError(
            "the server needs a bearer token: set LEARNLOOP_SERVER_TOKEN or pass --token "
            "(e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token


def _error(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": error}


def create_app(
    config: ServerConfig,
    *,
    store: Store | None = None,
    runners: Runners | None = None,
) -> Any:
    """The Starlette app; opens ``config.store`` unless a ``store`` is passed (then the
    caller closes it).

    Raises:
        ConfigError: no token.
        ImportError: the ``server`` extra is missing.
    """
    _require_starlette()
    import anyio.to_thread
    import orjson
    from pydantic import ValidationError
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    from learnloop import __version__
    from learnloop.server.client import resolve_token
    from learnloop.server.methods import ERROR_CODES, RpcError, RpcMethods, evaluation_argv
    from learnloop.server.metrics import ServerMetrics
    from learnloop.server.openrpc import build_openrpc
    from learnloop.server.schemas import RpcRequest, describe_validation_error
    from learnloop.store import open_store

    token = _check_token(resolve_token(config.token)).encode()
    owned = store is None
    the_store: Store = store if store is not None else open_store(config.store)
    runners = runners or default_runners()
    jobs = JobStore(the_store)
    budgets = config.pool.budgets
    launcher: Any
    if config.launcher == "process":
        launcher = ProcessLauncher(the_store.url, budgets=budgets,
                                   heartbeat_s=config.pool.heartbeat_s)
    elif config.launcher == "ray":
        from learnloop.jobs.ray_launcher import RayConnection, RayLauncher

        launcher = RayLauncher(the_store.url, connection=RayConnection(address=config.ray_address),
                               budgets=budgets, heartbeat_s=config.pool.heartbeat_s)
    else:
        launcher = ThreadLauncher(the_store, runners, budgets=budgets,
                                  heartbeat_s=config.pool.heartbeat_s)
    pool = WorkerPool(jobs, launcher, config.pool)
    Path(config.jobs_dir).mkdir(parents=True, exist_ok=True)
    service = JobService(jobs, runners, jobs_dir=config.jobs_dir, budgets=budgets,
                         on_submit=pool.wake)
    metrics = ServerMetrics(jobs)
    document: dict[str, Any] = {}
    methods = RpcMethods(
        the_store, service, metrics,
        evaluate_command=evaluation_argv(the_store.url) if config.launcher == "process" else None,
        openrpc=lambda: document,
    )
    document.update(build_openrpc(methods.table, version=__version__))
    table = methods.table
    json_type = "application/json"

    def respond(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Any:
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                        media_type=json_type, headers=dict(headers or {}))

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), token)

    def unauthorized() -> Any:
        metrics.rejected.labels("unauthorized").inc()
        return respond(
            _error(None, ERROR_CODES["unauthorized"],
                   "missing or wrong bearer token; send 'Authorization: Bearer <token>' with the "
                   "server's token (--token / LEARNLOOP_SERVER_TOKEN)"),
            401, {"WWW-Authenticate": "Bearer"},
        )

    async def read_body(request: Request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > config.max_body_bytes:
                    return None
            except ValueError:
                return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def error_of(exc: Exception) -> tuple[int, str, Any]:
        if isinstance(exc, RpcError):
            return exc.code, exc.message, exc.data
        if isinstance(exc, ValidationError):
            where, message = describe_validation_error(exc)
            return ERROR_CODES["invalid_params"], message, {"field": where}
        if isinstance(exc, NotFoundError):
            return ERROR_CODES["not_found"], str(exc), None
        if isinstance(exc, (ConfigError, InvalidInputError)):
            return ERROR_CODES["invalid_params"], str(exc), None
        if isinstance(exc, JobError):
            from learnloop.server.methods import job_error_code

            return job_error_code(exc), str(exc), None
        if isinstance(exc, (ConflictError, ClosedError)):
            return ERROR_CODES["conflict"], str(exc), None
        if isinstance(exc, StoreError):
            return ERROR_CODES["store_error"], str(exc), None
        if isinstance(exc, LearnloopError):
            return ERROR_CODES["internal_error"], str(exc), None
        logger.error("internal error", exc_info=exc)
        return ERROR_CODES["internal_error"], f"internal error ({type(exc).__name__}); see the " \
            "server log", None

    def positional(model: Any, params: list[Any]) -> dict[str, Any]:
        names = list(model.model_fields)
        if len(params) > len(names):
            raise RpcError(ERROR_CODES["invalid_params"],
                           f"params: {len(params)} positional values given but the method takes "
                           f"at most {len(names)} ({names})")
        return dict(zip(names, params, strict=False))

    async def call(payload: Any) -> dict[str, Any] | None:
        started = time.perf_counter()
        if not isinstance(payload, dict):
            return _error(None, ERROR_CODES["invalid_request"],
                          "request: each call must be a JSON object with jsonrpc, method, "
                          f"params and id, got {type(payload).__name__}")
        raw_id = payload.get("id")
        id_ = raw_id if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
        try:
            request = RpcRequest.model_validate(payload)
        except ValidationError as exc:
            where, message = describe_validation_error(exc, prefix="request")
            return _error(id_, ERROR_CODES["invalid_request"], message, {"field": where})
        notification = "id" not in payload
        method = table.get(request.method)
        label = request.method if method is not None else "unknown"
        outcome = "ok"
        try:
            if method is None:
                raise RpcError(ERROR_CODES["method_not_found"],
                               f"method: unknown method {request.method!r:.80}; call rpc.discover "
                               "or GET /openrpc.json for the list")
            raw = request.params if request.params is not None else {}
            if isinstance(raw, list):
                raw = positional(method.params, raw)
            params = method.params.model_validate(raw)
            if method.is_async:
                result = await method.handler(params)
            elif method.inline:
                result = method.handler(params)
            else:
                result = await anyio.to_thread.run_sync(method.handler, params)
        except Exception as exc:  # every failure becomes an error object, never a crash
            code, message, data = error_of(exc)
            outcome = str(code)
            answer = _error(request.id, code, message, data)
        else:
            answer = {"jsonrpc": "2.0", "id": request.id, "result": result}
        metrics.observe(label, outcome, time.perf_counter() - started)
        return None if notification else answer

    async def rpc(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        try:
            body = await read_body(request)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            metrics.rejected.labels("too_large").inc()
            return respond(_error(None, ERROR_CODES["invalid_request"],
                                  f"request body is larger than {config.max_body_bytes} bytes; "
                                  "send smaller batches"), 413)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            metrics.rejected.labels("bad_json").inc()
            return respond(_error(None, ERROR_CODES["parse_error"],
                                  f"body is not valid JSON: {exc}"), 400)
        if isinstance(payload, list):
            if not payload:
                return respond(_error(None, ERROR_CODES["invalid_request"],
                                      "request: the batch is empty; send at least one call"))
            if len(payload) > config.max_batch:
                return respond(_error(None, ERROR_CODES["invalid_request"],
                                      f"request: the batch has {len(payload)} calls, more than "
                                      f"{config.max_batch}; split it"))
            answers = [a for a in [await call(p) for p in payload] if a is not None]
            return respond(answers) if answers else Response(status_code=204)
        answer = await call(payload)
        return respond(answer) if answer is not None else Response(status_code=204)

    async def export(request: Request) -> Any:
        from learnloop.server.methods import export_query
        from learnloop.server.schemas import ExportFilter

        if not authorized(request):
            return unauthorized()
        args = request.query_params
        try:
            job_id = args.get("job_id")
            filter_ = None
            if job_id is None and any(k in args for k in ("agent_id", "kind", "status")):
                filter_ = ExportFilter.model_validate({
                    "agent_id": args.get("agent_id"), "kind": args.get("kind"),
                    "statuses": args.getlist("status") or None,
                })
            query = await anyio.to_thread.run_sync(export_query, jobs, job_id, filter_)
        except Exception as exc:
            code, message, data = error_of(exc)
            status = 404 if code == ERROR_CODES["not_found"] else 400
            return respond(_error(None, code, message, data), status)

        async def lines() -> AsyncIterator[bytes]:
            offset, page = 0, 500
            while True:
                batch = await anyio.to_thread.run_sync(
                    the_store.query_episodes, dataclasses.replace(query, limit=page,
                                                                  offset=offset))
                if not batch:
                    return
                yield b"".join(orjson.dumps(e.to_dict()) + b"\n" for e in batch)
                offset += len(batch)
                if len(batch) < page:
                    return

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def healthz(request: Request) -> Any:
        return respond({"status": "ok", "version": __version__,
                        "workers": len(pool.running), "max_workers": config.pool.max_workers})

    async def openrpc_json(request: Request) -> Any:
        return respond(document)

    async def metrics_route(request: Request) -> Any:
        if config.metrics_require_auth and not authorized(request):
            return unauthorized()
        body, content_type = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=content_type.split(";")[0],
                        headers={"Content-Type": content_type})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if config.pool.max_workers > 0:
            pool.start()
        logger.info("learnloop server ready (pool %s, %d workers)", pool.pool_id,
                    config.pool.max_workers)
        try:
            yield
        finally:
            if config.pool.max_workers > 0:
                await anyio.to_thread.run_sync(pool.stop)
            if owned:
                the_store.close()

    async def crashed(request: Request, exc: Exception) -> Any:
        logger.error("unhandled error on %s", request.url.path, exc_info=exc)
        return respond(_error(None, ERROR_CODES["internal_error"],
                              f"internal error ({type(exc).__name__}); see the server log"), 500)

    app = Starlette(
        exception_handlers={Exception: crashed},
        routes=[
            Route("/rpc", rpc, methods=["POST"]),
            Route("/export.jsonl", export, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openrpc.json", openrpc_json, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.store = the_store
    app.state.jobs = jobs
    app.state.pool = pool
    app.state.service = service
    app.state.methods = methods
    return app

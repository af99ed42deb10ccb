"""Training jobs behind a JSON-RPC 2.0 server (extra ``server``: starlette, uvicorn,
prometheus-client).

* :mod:`~learnloop.server.app`: :class:`ServerConfig` and :func:`create_app` (routes,
  auth, limits, dispatch).
* :mod:`~learnloop.server.methods`: the methods (``training.*``, ``episodes.record``,
  ``registry.*``, ``experiments.*``, ``rpc.discover``) and their error codes.
* :mod:`~learnloop.server.schemas`: the pydantic request models.
* :mod:`~learnloop.server.metrics`: Prometheus metrics.
* :mod:`~learnloop.server.openrpc`: the OpenRPC document.
* :mod:`~learnloop.server.client`: :class:`RpcClient`, a standard-library client
  (what ``learnloop jobs`` uses).

Environment variables: ``LEARNLOOP_SERVER_TOKEN`` (the bearer token, for server and
client) and ``LEARNLOOP_SERVER_URL`` (where the client connects; default
``http://127.0.0.1:8765``). An explicit ``--token``/``--server`` beats them.
"""

from __future__ import annotations

from learnloop.server.app import ServerConfig, create_app
from learnloop.server.client import (
    DEFAULT_SERVER_URL,
    TOKEN_ENV_VAR,
    URL_ENV_VAR,
    RpcClient,
    RpcFailure,
)

__all__ = [
    "DEFAULT_SERVER_URL",
    "TOKEN_ENV_VAR",
    "URL_ENV_VAR",
    "RpcClient",
    "RpcFailure",
    "ServerConfig",
    "create_app",
]

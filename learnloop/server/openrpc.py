"""The OpenRPC document of the server, generated from the method table.

Each method's params come from its pydantic model's JSON schema, so the
document can never drift from what the server validates. Served at
``GET /openrpc.json`` and by the ``rpc.discover`` method.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from learnloop.server.methods import ERROR_CODES, Method

__all__ = ["OPENRPC_VERSION", "build_openrpc"]

OPENRPC_VERSION = "1.3.2"

_ERROR_TEXT = {
    "parse_error": "The body is not valid JSON.",
    "invalid_request": "Not a JSON-RPC 2.0 request (or an empty or oversized batch/body).",
    "method_not_found": "No such method.",
    "invalid_params": "A parameter is missing, of the wrong type or out of range; the message "
    "names it.",
    "internal_error": "The server failed; see its log.",
    "unauthorized": "Missing or wrong bearer token (HTTP 401).",
    "not_found": "No such job, episode, version or experiment.",
    "conflict": "The job or record is in a state that does not allow this (e.g. resuming a "
    "completed job).",
    "not_available": "The job type exists but is not available in this build (a missing "
    "extra).",
    "budget_refused": "The pre-flight estimate breaks the job's or the owner's budget.",
    "store_error": "The store could not carry out the operation.",
}


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _rewrite_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def build_openrpc(methods: Mapping[str, Method], *, version: str) -> dict[str, Any]:
    """The OpenRPC document describing ``methods`` (by-name params)."""
    schemas: dict[str, Any] = {}
    described = []
    for name in sorted(methods):
        method = methods[name]
        schema = method.params.model_json_schema()
        schemas.update(_rewrite_refs(schema.pop("$defs", {})))
        required = set(schema.get("required", ()))
        params = [
            {"name": field, "required": field in required, "schema": _rewrite_refs(prop)}
            for field, prop in schema.get("properties", {}).items()
        ]
        described.append({
            "name": name,
            "summary": method.summary,
            "paramStructure": "either",
            "params": params,
            "result": {"name": "result", "schema": {"type": "object"}},
            "errors": [{"$ref": f"#/components/errors/{key}"} for key in ERROR_CODES],
        })
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "learnloop training server",
            "version": version,
            "description": "Training jobs (queue, pause/resume, budgets, checkpoints), episode "
            "ingestion, registry and experiments over JSON-RPC 2.0 (POST /rpc, batches "
            "allowed). Every method needs 'Authorization: Bearer <token>'.",
        },
        "servers": [{"name": "this server", "url": "/rpc"}],
        "methods": described,
        "components": {
            "schemas": schemas,
            "errors": {
                key: {"code": code, "message": _ERROR_TEXT[key]}
                for key, code in ERROR_CODES.items()
            },
        },
    }


def dump_openrpc(methods: Mapping[str, Method], *, version: str) -> str:
    """The document as indented JSON text."""
    return json.dumps(build_openrpc(methods, version=version), indent=1, sort_keys=False)

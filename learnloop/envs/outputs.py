"""What the suite's tools return, and the quality check of each tool's output.

A tool call that succeeds returns a JSON value plausible for the tool
(``{"matches": [...]}`` for ``code_grep``, ``{"status": 200, "body": ...}`` for
``http_get``) that passes the tool's quality check; a failed call returns the
tool's empty or error-shaped output (no matches, status 503, exit code 1), which
fails the check, together with an error string.

:data:`QUALITY_CHECKS` maps each tool to a predicate ``output -> bool``; hand it to
the tool reward as its per-tool quality checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["ERRORS", "QUALITY_CHECKS", "tool_output"]

OutputFn = Callable[[Mapping[str, str], str, np.random.Generator], Any]


def _slot(slots: Mapping[str, str], name: str, default: str) -> str:
    return slots.get(name, default)


def _web_search(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    topic = _slot(slots, "topic", text)
    count = int(rng.integers(3, 6))
    return {
        "results": [
            {
                "title": f"{topic.capitalize()}: result {i + 1}",
                "url": f"https://search.example.org/r/{int(rng.integers(10_000, 99_999))}",
                "snippet": f"An overview of {topic} ...",
            }
            for i in range(count)
        ]
    }


def _doc_search(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    subject = _slot(slots, "howto", _slot(slots, "topic", text))
    return {
        "pages": [
            {
                "title": f"How to {subject}",
                "path": f"/wiki/runbooks/{int(rng.integers(100, 999))}",
                "excerpt": f"Steps to {subject}: 1. ...",
            }
        ]
    }


def _code_grep(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    pattern = _slot(slots, "symbol", "ERROR")
    where = _slot(slots, "log_file", "src/module.py")
    count = int(rng.integers(1, 5))
    return {
        "pattern": pattern,
        "matches": [
            {"path": where, "line": int(rng.integers(1, 2000)), "text": f"... {pattern} ..."}
            for _ in range(count)
        ],
    }


def _file_find(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    name = _slot(slots, "file", _slot(slots, "symbol", "match"))
    return {"paths": [f"/home/user/projects/app/{name}"]}


def _file_read(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    path = _slot(slots, "file", _slot(slots, "json_file", "input.txt"))
    content = f"# {path}\nline 1\nline 2\n"
    return {"path": path, "content": content, "bytes": len(content)}


def _file_write(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    return {
        "path": _slot(slots, "out_file", "output.txt"),
        "bytes_written": int(rng.integers(64, 8192)),
    }


def _shell_exec(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    target = _slot(slots, "dir", _slot(slots, "file", "."))
    return {"exit_code": 0, "stdout": f"ok: {target}\n{int(rng.integers(1, 500))}", "stderr": ""}


def _python_eval(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    if "a" in slots and "b" in slots:
        return {"value": float(slots["a"]) * float(slots["b"])}
    return {"value": int(rng.integers(0, 10_000))}


def _http_get(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    url = _slot(slots, "url", "https://example.com/")
    return {
        "status": 200,
        "headers": {"content-type": "text/html; charset=utf-8"},
        "body": f"<html><body><a href='{url}/a'>a</a><a href='{url}/b'>b</a></body></html>",
        "url": url,
    }


def _http_post(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    service = _slot(slots, "service", "api")
    return {"status": 201, "body": {"id": f"{service.lower()}-{int(rng.integers(1, 99_999))}"}}


def _json_parse(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    key = _slot(slots, "key", "value")
    return {"key": key, "value": f"{key}-{int(rng.integers(1, 100))}"}


def _html_extract(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    url = _slot(slots, "url", "https://example.com")
    count = int(rng.integers(2, 9))
    return {"links": [f"{url.rstrip('/')}/page/{i}" for i in range(count)]}


def _csv_transform(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    column = _slot(slots, "column", "id")
    rows = int(rng.integers(5, 5000))
    return {"rows": rows, "columns": ["id", column, "value"], "preview": [[1, column, 0.5]]}


def _sql_query(slots: Mapping[str, str], text: str, rng: np.random.Generator) -> Any:
    column = _slot(slots, "column", "value")
    count = int(rng.integers(1, 20))
    return {
        "columns": ["id", column],
        "rows": [[i + 1, round(float(rng.random()) * 100, 2)] for i in range(count)],
        "row_count": count,
    }


_SUCCESS: Mapping[str, OutputFn] = MappingProxyType(
    {
        "web_search": _web_search,
        "doc_search": _doc_search,
        "code_grep": _code_grep,
        "file_find": _file_find,
        "file_read": _file_read,
        "file_write": _file_write,
        "shell_exec": _shell_exec,
        "python_eval": _python_eval,
        "http_get": _http_get,
        "http_post": _http_post,
        "json_parse": _json_parse,
        "html_extract": _html_extract,
        "csv_transform": _csv_transform,
        "sql_query": _sql_query,
    }
)

#: The output of a failed call (fails the quality check) per tool; a function, so
#: that every call gets its own copy to mutate.
_FAILED: Mapping[str, Callable[[], Any]] = MappingProxyType(
    {
        "web_search": lambda: {"results": []},
        "doc_search": lambda: {"pages": []},
        "code_grep": lambda: {"matches": []},
        "file_find": lambda: {"paths": []},
        "file_read": lambda: {"content": "", "bytes": 0},
        "file_write": lambda: {"bytes_written": 0},
        "shell_exec": lambda: {"exit_code": 1, "stdout": "", "stderr": "command failed"},
        "python_eval": lambda: {"value": None},
        "http_get": lambda: {"status": 503, "body": ""},
        "http_post": lambda: {"status": 500, "body": {}},
        "json_parse": lambda: {"value": None},
        "html_extract": lambda: {"links": []},
        "csv_transform": lambda: {"rows": 0, "columns": []},
        "sql_query": lambda: {"columns": [], "rows": [], "row_count": 0},
    }
)

#: The error string of a failed call per tool.
ERRORS: Mapping[str, str] = MappingProxyType(
    {
        "web_search": "no relevant results",
        "doc_search": "no matching page in the documentation",
        "code_grep": "pattern not found",
        "file_find": "no file matched",
        "file_read": "FileNotFoundError: no such file",
        "file_write": "PermissionError: cannot write here",
        "shell_exec": "command exited with status 1",
        "python_eval": "SyntaxError: could not evaluate the expression",
        "http_get": "HTTP 503 Service Unavailable",
        "http_post": "HTTP 500 Internal Server Error",
        "json_parse": "JSONDecodeError: expecting value",
        "html_extract": "no elements matched",
        "csv_transform": "ParserError: could not read the CSV",
        "sql_query": "OperationalError: no such column",
    }
)


def _nonempty(field: str) -> Callable[[Any], bool]:
    def check(output: Any) -> bool:
        return isinstance(output, Mapping) and bool(output.get(field))

    check.__name__ = f"has_{field}"
    return check


def _status_ok(output: Any) -> bool:
    status = output.get("status") if isinstance(output, Mapping) else None
    return isinstance(status, int) and 200 <= status < 300 and bool(output.get("body"))


def _exit_zero(output: Any) -> bool:
    return isinstance(output, Mapping) and output.get("exit_code") == 0


def _has_value(output: Any) -> bool:
    return isinstance(output, Mapping) and output.get("value") is not None


def _positive(field: str) -> Callable[[Any], bool]:
    def check(output: Any) -> bool:
        value = output.get(field) if isinstance(output, Mapping) else None
        return isinstance(value, int) and value > 0

    check.__name__ = f"positive_{field}"
    return check


#: tool -> predicate on its output: True when the output is usable.
QUALITY_CHECKS: Mapping[str, Callable[[Any], bool]] = MappingProxyType(
    {
        "web_search": _nonempty("results"),
        "doc_search": _nonempty("pages"),
        "code_grep": _nonempty("matches"),
        "file_find": _nonempty("paths"),
        "file_read": _nonempty("content"),
        "file_write": _positive("bytes_written"),
        "shell_exec": _exit_zero,
        "python_eval": _has_value,
        "http_get": _status_ok,
        "http_post": _status_ok,
        "json_parse": _has_value,
        "html_extract": _nonempty("links"),
        "csv_transform": _positive("rows"),
        "sql_query": _nonempty("columns"),
    }
)


def tool_output(
    tool: str, slots: Mapping[str, str], text: str, success: bool, rng: np.random.Generator
) -> tuple[Any, str | None]:
    """The output and error string of one call of ``tool``.

    Args:
        tool: A tool of the suite.
        slots: The sub-task's slot values (file names, URLs, ...), used to make
            the output plausible.
        text: The sub-task's text.
        success: Whether the call succeeded.
        rng: Randomness for sizes and ids in the output.

    Returns:
        ``(output, None)`` on success, ``(failed_output, error)`` otherwise.
    """
    if success:
        return _SUCCESS[tool](slots, text, rng), None
    return _FAILED[tool](), ERRORS[tool]

"""What the built-in tool-use suite is made of: tools, task types, phrasings, vocabularies.

This module is data. :mod:`learnloop.envs.suite` turns it into tasks from a seed.

* :data:`TOOLS`: the 14 tools, each with a one-line description (usable in an
  agent's prompt) and its expected duration in seconds.
* :data:`TASK_TYPES`: 19 task types. Each names its best tool and a plausible
  second-best one, and has six or seven phrasings (templates) whose ``{slot}`` s are
  filled from :data:`VOCABULARIES`. Several types share a keyword category but need
  different tools (``find papers about X`` → ``web_search``, ``find the function X
  in the code base`` → ``code_grep``, ``find the file named X`` → ``file_find``), and
  some phrasings carry words of another category, so a keyword rule misfires.
* :data:`CHAINS`: sequences of task types that make up multi-step tasks
  (find → read → transform → write).

A template ending in ``?`` is a question: it is used for single-step tasks only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "CHAINS",
    "CHAIN_CONNECTORS",
    "SLOT_VOCABULARY",
    "TASK_TYPES",
    "TOOLS",
    "VOCABULARIES",
    "TaskTypeSpec",
    "ToolSpec",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool of the suite."""

    name: str
    """The tool's name, as an agent calls it."""
    description: str
    """One line saying what the tool does."""
    expected_duration_s: float
    """Mean latency of a call in seconds."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskTypeSpec:
    """A kind of task, its phrasings and the tools that fit it."""

    name: str
    """Identifier of the task type."""
    best_tool: str
    """The tool that usually succeeds (success probability 0.85-0.95)."""
    second_tool: str
    """A plausible alternative (success probability 0.4-0.6)."""
    templates: tuple[str, ...]
    """Phrasings with ``{slot}`` placeholders; a trailing ``?`` marks a question."""


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(name="web_search", description="search the public web", expected_duration_s=1.2),
    ToolSpec(
        name="doc_search",
        description="search the internal wiki and documentation",
        expected_duration_s=0.6,
    ),
    ToolSpec(
        name="code_grep",
        description="grep source code and text files for a pattern",
        expected_duration_s=0.3,
    ),
    ToolSpec(name="file_find", description="find files by name on disk", expected_duration_s=0.2),
    ToolSpec(name="file_read", description="read a file's contents", expected_duration_s=0.05),
    ToolSpec(name="file_write", description="write text to a file", expected_duration_s=0.08),
    ToolSpec(name="shell_exec", description="run a shell command", expected_duration_s=0.8),
    ToolSpec(
        name="python_eval",
        description="evaluate a Python expression (arithmetic, dates)",
        expected_duration_s=0.4,
    ),
    ToolSpec(name="http_get", description="send an HTTP GET request", expected_duration_s=0.9),
    ToolSpec(
        name="http_post",
        description="send an HTTP POST request to an API",
        expected_duration_s=1.1,
    ),
    ToolSpec(
        name="json_parse",
        description="parse a JSON document and select a field",
        expected_duration_s=0.03,
    ),
    ToolSpec(
        name="html_extract",
        description="extract links, tables or text from HTML",
        expected_duration_s=0.15,
    ),
    ToolSpec(
        name="csv_transform",
        description="convert, filter, sort or pivot CSV data",
        expected_duration_s=0.25,
    ),
    ToolSpec(
        name="sql_query", description="run a SQL query on the database", expected_duration_s=0.5
    ),
)

TASK_TYPES: tuple[TaskTypeSpec, ...] = (
    TaskTypeSpec(
        name="find_papers",
        best_tool="web_search",
        second_tool="doc_search",
        templates=(
            "find papers about {topic}",
            "search the literature for recent work on {topic}",
            "look up research articles on {topic} published after {year}",
            "find academic publications that discuss {topic}",
            "which papers on {topic} are the most cited?",
            "gather a reading list of studies on {topic}",
            "search arxiv for a survey of {topic} and read the abstract",
        ),
    ),
    TaskTypeSpec(
        name="find_symbol",
        best_tool="code_grep",
        second_tool="file_find",
        templates=(
            "find the function {symbol} in the code base",
            "grep the repository for calls to {symbol}",
            "where is {symbol} defined in the source tree?",
            "search the code for every usage of {symbol}",
            "locate the definition of the class {symbol} in our repo",
            "find which module imports {symbol} and read its signature",
            "look for references to {symbol} across the project sources",
        ),
    ),
    TaskTypeSpec(
        name="find_file",
        best_tool="file_find",
        second_tool="shell_exec",
        templates=(
            "find the file named {file}",
            "locate {file} somewhere on disk",
            "search the workspace for a file called {file}",
            "which directory contains {file}?",
            "find where {file} was saved",
            "look up the path of {file} on the file system",
        ),
    ),
    TaskTypeSpec(
        name="lookup_wiki",
        best_tool="doc_search",
        second_tool="web_search",
        templates=(
            "look up in the internal wiki how to {howto}",
            "search our documentation for the page on how to {howto}",
            "find the runbook that explains how to {howto}",
            "query the knowledge base about how to {howto}",
            "check the team handbook for how to {howto}",
            "what does the onboarding guide say about how to {howto}?",
        ),
    ),
    TaskTypeSpec(
        name="query_table",
        best_tool="sql_query",
        second_tool="python_eval",
        templates=(
            "query the {table} table for rows where {column} is above {number}",
            "select all {table} records with {column} greater than {number}",
            "count the rows in the {table} table grouped by {column}",
            "find every entry in the {table} database table whose {column} exceeds {number}",
            "run a SQL query that sums {column} over the {table} table",
            "look up the average {column} in the {table} table",
        ),
    ),
    TaskTypeSpec(
        name="read_file",
        best_tool="file_read",
        second_tool="shell_exec",
        templates=(
            "read the contents of {file}",
            "open {file} and show me what it says",
            "print the first lines of {file}",
            "read {file} and report its header",
            "what is written in {file}?",
            "load the text of {file} so I can review it",
        ),
    ),
    TaskTypeSpec(
        name="write_file",
        best_tool="file_write",
        second_tool="shell_exec",
        templates=(
            "write the summary to {out_file}",
            "save the report as {out_file}",
            "create a file {out_file} containing the results",
            "store these notes in {out_file}",
            "write the final numbers into {out_file} and overwrite the old copy",
            "put the output in a new document called {out_file}",
        ),
    ),
    TaskTypeSpec(
        name="create_directory",
        best_tool="shell_exec",
        second_tool="file_write",
        templates=(
            "create a new directory {dir}",
            "make a folder named {dir} for the build artifacts",
            "create the directory tree {dir} with parent folders",
            "set up an empty folder at {dir}",
            "mkdir {dir} before the next step",
            "add a directory {dir} to the workspace",
        ),
    ),
    TaskTypeSpec(
        name="run_tests",
        best_tool="shell_exec",
        second_tool="python_eval",
        templates=(
            "run the test suite in {dir}",
            "execute the unit tests under {dir}",
            "run pytest on {dir} and report failures",
            "check whether the tests in {dir} pass",
            "kick off the integration tests for {dir}",
            "launch the test runner for the {dir} package",
        ),
    ),
    TaskTypeSpec(
        name="compute",
        best_tool="python_eval",
        second_tool="shell_exec",
        templates=(
            "calculate {a} times {b}",
            "compute the sum of {a} and {b}",
            "what is {a} multiplied by {b}?",
            "work out {a} divided by {b} to three decimals",
            "evaluate the expression {a} ** 2 + {b}",
            "run the numbers on {a} minus {b} squared",
        ),
    ),
    TaskTypeSpec(
        name="fetch_page",
        best_tool="http_get",
        second_tool="html_extract",
        templates=(
            "fetch the page at {url}",
            "download {url}",
            "send an http GET request to {url}",
            "retrieve the content of {url}",
            "get the raw response from {url}",
            "grab the web page {url} and keep the body",
        ),
    ),
    TaskTypeSpec(
        name="call_api",
        best_tool="http_post",
        second_tool="http_get",
        templates=(
            "send a POST request to the {service} API with the new record",
            "submit the form data to {service} through its api",
            "create a ticket in {service} via the REST endpoint",
            "post the payload to the {service} webhook",
            "call the {service} API to register a new user",
            "push the update to {service} with an authenticated request",
        ),
    ),
    TaskTypeSpec(
        name="parse_json",
        best_tool="json_parse",
        second_tool="python_eval",
        templates=(
            "parse the JSON in {json_file} and get the field {key}",
            "extract the value of {key} from the JSON document {json_file}",
            "decode {json_file} and return {key}",
            "read the {key} entry out of {json_file}",
            "validate that {json_file} is well formed json",
            "pull {key} from the json payload in {json_file}",
        ),
    ),
    TaskTypeSpec(
        name="extract_links",
        best_tool="html_extract",
        second_tool="http_get",
        templates=(
            "extract all links from the HTML page {url}",
            "list the hyperlinks on {url}",
            "scrape the page {url} for anchor tags",
            "collect every href from the markup of {url}",
            "parse the html of {url} and return the table rows",
            "get the titles and links out of {url}",
        ),
    ),
    TaskTypeSpec(
        name="convert_csv",
        best_tool="csv_transform",
        second_tool="python_eval",
        templates=(
            "convert {csv_file} to JSON",
            "transform {csv_file} by pivoting on {column}",
            "sort the rows of {csv_file} by {column}",
            "convert the spreadsheet {csv_file} into a tab separated file",
            "filter {csv_file} to rows where {column} is empty",
            "merge the columns of {csv_file} and drop duplicates",
        ),
    ),
    TaskTypeSpec(
        name="extract_errors",
        best_tool="code_grep",
        second_tool="shell_exec",
        templates=(
            "extract all error lines from {log_file}",
            "pull the stack traces out of {log_file}",
            "find every line in {log_file} that mentions {symbol}",
            "extract the email addresses from {log_file}",
            "list the warnings logged in {log_file}",
            "show the lines of {log_file} matching timeout",
        ),
    ),
    TaskTypeSpec(
        name="current_events",
        best_tool="web_search",
        second_tool="doc_search",
        templates=(
            "what is the latest news about {topic}?",
            "who announced new results on {topic} this week?",
            "tell me what happened today with {topic}",
            "get the current headlines on {topic}",
            "summarize recent developments in {topic}",
            "is there any breaking news about {topic}?",
        ),
    ),
    TaskTypeSpec(
        name="date_math",
        best_tool="python_eval",
        second_tool="web_search",
        templates=(
            "how many days are there between {date1} and {date2}?",
            "what weekday is {date1}?",
            "add {a} days to {date1}",
            "how many weeks separate {date1} from {date2}?",
            "convert {date1} to a unix timestamp",
            "which date is {b} days before {date2}?",
        ),
    ),
    TaskTypeSpec(
        name="count_lines",
        best_tool="shell_exec",
        second_tool="file_read",
        templates=(
            "count the lines in {file}",
            "how many lines does {file} have?",
            "report the word count of {file}",
            "get the size of {file} in bytes",
            "count how many files are in {dir}",
            "check the disk usage of {dir}",
        ),
    ),
)

#: Which vocabulary fills each slot (two slots may share one: ``{a}`` and ``{b}``).
SLOT_VOCABULARY: Mapping[str, str] = MappingProxyType(
    {
        "topic": "topic",
        "year": "year",
        "symbol": "symbol",
        "file": "file",
        "out_file": "out_file",
        "howto": "howto",
        "table": "table",
        "column": "column",
        "number": "number",
        "dir": "dir",
        "a": "integer",
        "b": "integer",
        "url": "url",
        "service": "service",
        "json_file": "json_file",
        "key": "key",
        "csv_file": "csv_file",
        "log_file": "log_file",
        "date1": "date",
        "date2": "date",
    }
)

VOCABULARIES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "topic": (
        "graph neural networks", "protein folding", "battery chemistry",
        "quantum error correction", "federated learning", "coral reef bleaching",
        "carbon capture", "sparse attention", "solid state batteries",
        "CRISPR off-target effects", "urban heat islands", "language model evaluation",
        "microplastics in rivers", "dark matter detection", "wind turbine wakes",
        "sleep and memory", "supply chain resilience", "soil microbiomes",
        "exoplanet atmospheres", "antibiotic resistance",
    ),
    "year": ("2014", "2015", "2016", "2017", "2018", "2019", "2020", "2021", "2022", "2023"),
    "symbol": (
        "parse_config", "UserSession", "retry_with_backoff", "load_checkpoint",
        "TokenBucket", "render_template", "compute_checksum", "HttpClient", "flush_buffers",
        "validate_schema", "merge_sorted", "EventLoopPolicy", "build_index", "normalize_path",
        "RateLimiter",
    ),
    "file": (
        "notes.txt", "report_2023.md", "README.md", "todo.txt", "changelog.md",
        "meeting_minutes.txt", "requirements.txt", "setup.cfg", "Dockerfile", "main.py",
        "schema.sql", "LICENSE", "index.html", "draft_v2.md", "roadmap.txt",
    ),
    "out_file": (
        "summary.md", "results.json", "report_final.txt", "output.csv", "digest.md",
        "weekly_update.txt", "metrics.json", "answers.txt", "export.tsv", "findings.md",
    ),
    "howto": (
        "rotate the API keys", "request a new laptop", "deploy to staging",
        "reset a user password", "add a new on-call engineer", "restore a database backup",
        "file an expense report", "enable a feature flag", "onboard a new customer",
        "renew the TLS certificate",
    ),
    "table": (
        "orders", "customers", "invoices", "shipments", "events", "sessions", "payments",
        "inventory", "employees", "tickets",
    ),
    "column": (
        "amount", "created_at", "price", "quantity", "latency_ms", "age", "score", "discount",
        "region", "status",
    ),
    "number": ("10", "42", "100", "250", "1000", "7", "3.5", "99", "500", "20"),
    "dir": (
        "build/", "tests/", "src/api/", "services/auth", "tmp/cache", "data/raw", "lib/core",
        "docs/", "scripts/", "pkg/storage",
    ),
    "integer": (
        "17", "342", "1289", "56", "73", "905", "12", "4410", "3", "88", "615", "27", "64",
        "1024", "39",
    ),
    "url": (
        "https://example.com/pricing", "https://news.example.org/today",
        "http://intranet.local/status", "https://docs.example.io/guide",
        "https://shop.example.net/item/42", "https://blog.example.com/post/7",
        "https://api.example.com/v1/health", "https://weather.example.org/berlin",
        "https://example.edu/courses", "https://status.example.cloud",
    ),
    "service": (
        "Jira", "Stripe", "Slack", "GitHub", "Salesforce", "Zendesk", "PagerDuty", "Shopify",
        "Twilio", "HubSpot",
    ),
    "json_file": (
        "config.json", "package.json", "response.json", "settings.json", "manifest.json",
        "events.json", "user_42.json", "payload.json", "tsconfig.json", "metadata.json",
    ),
    "key": (
        "version", "name", "timeout", "dependencies", "user.email", "items.0.id", "retries",
        "locale", "total", "author",
    ),
    "csv_file": (
        "sales.csv", "users.csv", "inventory.csv", "transactions.csv", "survey_results.csv",
        "grades.csv", "weather_2022.csv", "clicks.csv", "expenses.csv", "leads.csv",
    ),
    "log_file": (
        "server.log", "app.log", "nginx_access.log", "worker-3.log", "build.log", "syslog",
        "deploy.log", "cron.log", "auth.log", "db_slow.log",
    ),
    "date": (
        "2021-03-14", "2022-07-01", "2023-11-30", "2020-02-29", "2024-01-15", "2019-12-25",
        "2023-05-05", "2022-10-31", "2021-08-09", "2024-06-21",
    ),
})  # fmt: skip

#: Task-type sequences of the multi-step tasks (2 to 4 sub-tasks each).
CHAINS: tuple[tuple[str, ...], ...] = (
    ("find_file", "read_file", "write_file"),
    ("find_symbol", "read_file", "run_tests"),
    ("fetch_page", "extract_links", "write_file"),
    ("query_table", "compute", "write_file"),
    ("call_api", "parse_json", "write_file"),
    ("convert_csv", "write_file"),
    ("extract_errors", "write_file"),
    ("create_directory", "fetch_page", "write_file"),
    ("find_papers", "write_file"),
    ("lookup_wiki", "run_tests"),
    ("find_file", "read_file", "convert_csv", "write_file"),
    ("fetch_page", "extract_links", "convert_csv", "write_file"),
    ("query_table", "convert_csv", "write_file"),
    ("find_symbol", "run_tests"),
    ("current_events", "write_file"),
    ("parse_json", "date_math"),
)

#: How clauses of a multi-step task are joined; the last clause uses the last entry.
CHAIN_CONNECTORS: tuple[str, ...] = (", then ", "; after that, ", " and then ", ", and finally ")

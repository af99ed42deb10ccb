from __future__ import annotations

import doctest

import pytest

import learnloop.prompts.template
from learnloop.errors import ConfigError
from learnloop.prompts.template import PromptTemplate, WorkedExample

TOOLS = {"file_read": "read a file", "web_search": "search the web"}
EXAMPLES = (
    WorkedExample(task="open notes.txt", tool="file_read"),
    WorkedExample(task="news on rust", tool="web_search"),
)


def test_chat_placement_renders_examples_as_turns() -> None:
    template = PromptTemplate(instructions=("Pick a tool.",), examples=EXAMPLES)
    messages = template.render(TOOLS, "read a.cfg")
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "open notes.txt"),
        ("assistant", "file_read"),
        ("user", "news on rust"),
        ("assistant", "web_search"),
        ("user", "read a.cfg"),
    ]
    assert messages[0]["content"] == (
        "Pick a tool.\nTools: file_read, web_search.\nAnswer with the name of one tool."
    )


def test_system_placement_and_descriptions_render_in_the_system_prompt() -> None:
    template = PromptTemplate(
        instructions=("Pick a tool.",),
        show_tool_descriptions=True,
        examples=EXAMPLES[:1],
        example_placement="system",
        output_format="Tool name only.",
    )
    messages = template.render(TOOLS, "read a.cfg")
    assert len(messages) == 2
    assert messages[0]["content"] == (
        "Pick a tool.\nTools:\n- file_read: read a file\n- web_search: search the web\n"
        "Examples:\nTask: open notes.txt\nTool: file_read\nTool name only."
    )
    assert "open notes.txt" in template.render_text(TOOLS)


def test_round_trip_and_fingerprint() -> None:
    template = PromptTemplate(
        instructions=("a", "b"), examples=EXAMPLES, example_placement="system"
    )
    again = PromptTemplate.from_dict(template.to_dict())
    assert again == template and again.fingerprint() == template.fingerprint()
    reordered = PromptTemplate(
        instructions=("b", "a"), examples=EXAMPLES, example_placement="system"
    )
    assert reordered.fingerprint() != template.fingerprint()
    assert len(template.fingerprint()) == 12


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"instructions": ("two\nlines",)}, "one non-empty line"),
        ({"instructions": ("  ",)}, "one non-empty line"),
        ({"example_placement": "middle"}, "example_placement"),
    ],
)
def test_bad_templates_name_the_value(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        PromptTemplate(**fields)  # type: ignore[arg-type]


def test_empty_example_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a task and a tool"):
        WorkedExample(task="", tool="file_read")


def test_docstring_examples_run() -> None:
    assert doctest.testmod(learnloop.prompts.template).failed == 0

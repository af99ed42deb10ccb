"""A prompt as a structured object: instruction lines, tool block, worked examples, format.

Mutation operators edit the structure (so ``reorder_instructions``, ``simplify``,
``add_constraint``, ``add_emphasis`` and ``add_example`` are well defined) and
:meth:`PromptTemplate.render` turns it into chat messages for one task:

* the system message: the instruction lines, then the tools (names only, or one
  line per tool with its description), then the worked examples when they are
  placed in the system prompt, then the output-format line;
* the worked examples as chat turns (user task, assistant tool), when placed there;
* the task as the last user message.

    >>> template = PromptTemplate(
    ...     instructions=("You choose the tool for a task.",),
    ...     examples=(WorkedExample(task="open notes.txt", tool="file_read"),),
    ... )
    >>> tools = {"file_read": "read a file", "web_search": "search the web"}
    >>> [m["role"] for m in template.render(tools, "read setup.cfg")]
    ['system', 'user', 'assistant', 'user']
    >>> print(template.system_text(tools))
    You choose the tool for a task.
    Tools: file_read, web_search.
    Answer with the name of one tool.
    >>> PromptTemplate.from_dict(template.to_dict()) == template
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from learnloop.errors import ConfigError
from learnloop.prompts.llm import (
    assistant_message,
    canonical_json,
    system_message,
    user_message,
)

__all__ = ["ExamplePlacement", "PromptTemplate", "WorkedExample"]

#: Where worked examples go: inside the system prompt, or as user/assistant chat turns.
ExamplePlacement = Literal["system", "chat"]
_PLACEMENTS = ("system", "chat")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkedExample:
    """One solved task shown to the model: the task text and the tool that worked."""

    task: str
    """The task as the agent read it."""
    tool: str
    """The tool whose call succeeded."""

    def __post_init__(self) -> None:
        if not self.task.strip() or not self.tool.strip():
            raise ConfigError(f"a worked example needs a task and a tool, got {self!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptTemplate:
    """The prompt an LLM agent runs with, as editable parts (see the module docstring)."""

    instructions: tuple[str, ...] = ("You choose the tool for a task.",)
    """Instruction lines of the system prompt, in order."""
    show_tool_descriptions: bool = False
    """List each tool with its one-line description (else the names only)."""
    examples: tuple[WorkedExample, ...] = ()
    """Worked examples, in the order shown."""
    example_placement: ExamplePlacement = "chat"
    """Where the examples go: ``chat`` (user/assistant turns) or ``system`` (in the prompt)."""
    output_format: str = "Answer with the name of one tool."
    """The last line of the system prompt: how to answer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "instructions", tuple(self.instructions))
        object.__setattr__(self, "examples", tuple(self.examples))
        if self.example_placement not in _PLACEMENTS:
            raise ConfigError(
                f"example_placement must be 'system' or 'chat', got {self.example_placement!r}"
            )
        for line in self.instructions:
            if not isinstance(line, str) or not line.strip() or "\n" in line:
                raise ConfigError(
                    f"instruction line {line!r} must be one non-empty line of text; split "
                    "multi-line text into several instructions"
                )

    # ------------------------------------------------------------------ rendering

    def system_text(self, tools: Mapping[str, str]) -> str:
        """The system prompt for ``tools`` (name -> one-line description)."""
        lines = list(self.instructions)
        if self.show_tool_descriptions:
            lines.append("Tools:")
            lines += [f"- {name}: {description}" for name, description in tools.items()]
        else:
            lines.append("Tools: " + ", ".join(tools) + ".")
        if self.examples and self.example_placement == "system":
            lines.append("Examples:")
            for example in self.examples:
                lines += [f"Task: {example.task}", f"Tool: {example.tool}"]
        if self.output_format:
            lines.append(self.output_format)
        return "\n".join(lines)

    def render(self, tools: Mapping[str, str], task: str) -> list[Mapping[str, str]]:
        """The chat messages that ask the model which tool ``task`` needs."""
        messages = [system_message(self.system_text(tools))]
        if self.example_placement == "chat":
            for example in self.examples:
                messages += [user_message(example.task), assistant_message(example.tool)]
        messages.append(user_message(task))
        return messages

    def render_text(self, tools: Mapping[str, str]) -> str:
        """The prompt as a file (best_prompt.txt): the system prompt, then chat-turn examples."""
        text = self.system_text(tools)
        if self.examples and self.example_placement == "chat":
            turns = [f"user: {e.task}\nassistant: {e.tool}" for e in self.examples]
            text += "\n\n# worked examples, as chat turns before the task\n" + "\n".join(turns)
        return text + "\n"

    # ------------------------------------------------------------------ identity

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return {
            "instructions": list(self.instructions),
            "show_tool_descriptions": self.show_tool_descriptions,
            "examples": [{"task": e.task, "tool": e.tool} for e in self.examples],
            "example_placement": self.example_placement,
            "output_format": self.output_format,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        """Inverse of :meth:`to_dict`."""
        examples: Sequence[Mapping[str, str]] = data.get("examples", ())
        return cls(
            instructions=tuple(data.get("instructions", ())),
            show_tool_descriptions=bool(data.get("show_tool_descriptions", False)),
            examples=tuple(WorkedExample(task=e["task"], tool=e["tool"]) for e in examples),
            example_placement=data.get("example_placement", "chat"),
            output_format=str(data.get("output_format", "")),
        )

    def fingerprint(self) -> str:
        """First 12 hex digits of the SHA-256 of :meth:`to_dict`: equal prompts, equal ids."""
        digest = hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8"))
        return digest.hexdigest()[:12]

    def describe(self) -> str:
        """A one-line summary of the structure, for logs and tables."""
        tools = "descriptions" if self.show_tool_descriptions else "names"
        placement = f" in {self.example_placement}" if self.examples else ""
        return (
            f"{len(self.instructions)} instructions, tool {tools}, "
            f"{len(self.examples)} examples{placement}"
        )

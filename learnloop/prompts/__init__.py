"""Prompts: language-model clients, the embedded local model, and prompt optimization.

LLM calls go through one small protocol, :class:`LLMClient`
(``complete(ChatRequest) -> ChatResponse``). The ``openai`` SDK and ``xllamacpp``
are imported only when a client or server is built, so importing this package
is cheap.

Modules: :mod:`~learnloop.prompts.llm` (protocol, requests, prices, OpenAI client,
scripted fake), :mod:`~learnloop.prompts.replay`, :mod:`~learnloop.prompts.usage`
(meter, budget), :mod:`~learnloop.prompts.local_model` (SmolLM2 on loopback),
:mod:`~learnloop.prompts.template` (the structured prompt),
:mod:`~learnloop.prompts.agent` (the LLM agent of the suite),
:mod:`~learnloop.prompts.mutations`, :mod:`~learnloop.prompts.optimizer`
(``optimize_prompt``), :mod:`~learnloop.prompts.significance`, and
:mod:`~learnloop.prompts.simulator` (a prompt-sensitive simulator for testing the
search; not a model). The agent and optimizer modules load the suite, so they are
imported from their modules, not here.
"""

from __future__ import annotations

from learnloop.prompts.llm import (
    BudgetExceededError,
    ChatRequest,
    ChatResponse,
    LLMClient,
    LLMEndpointConfig,
    ModelPrice,
    OpenAICompatibleClient,
    PriceTable,
    ScriptedLLMClient,
    TokenUsage,
    assistant_message,
    system_message,
    user_message,
)
from learnloop.prompts.local_model import (
    SMOLLM2_MODEL_NAME,
    LocalModelConfig,
    LocalModelServer,
    find_smollm2_gguf,
    open_llm_client,
)
from learnloop.prompts.replay import RecordReplayClient
from learnloop.prompts.template import PromptTemplate, WorkedExample
from learnloop.prompts.usage import Budget, MeteredClient, UsageMeter, UsageTotals

__all__ = [
    "SMOLLM2_MODEL_NAME",
    "Budget",
    "BudgetExceededError",
    "ChatRequest",
    "ChatResponse",
    "LLMClient",
    "LLMEndpointConfig",
    "LocalModelConfig",
    "LocalModelServer",
    "MeteredClient",
    "ModelPrice",
    "OpenAICompatibleClient",
    "PriceTable",
    "PromptTemplate",
    "RecordReplayClient",
    "ScriptedLLMClient",
    "TokenUsage",
    "UsageMeter",
    "UsageTotals",
    "WorkedExample",
    "assistant_message",
    "find_smollm2_gguf",
    "open_llm_client",
    "system_message",
    "user_message",
]

"""Prompts: language-model clients, the embedded local model, and prompt optimization.

LLM calls go through one small protocol, :class:`LLMClient`
(``complete(ChatRequest) -> ChatResponse``). The ``openai`` SDK and ``xllamacpp``
are imported only when a client or server is built, so importing this package
is cheap.
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
from learnloop.prompts.replay import RecordReplayClient
from learnloop.prompts.usage import Budget, MeteredClient, UsageMeter, UsageTotals
from learnloop.prompts.local_model import (
    SMOLLM2_MODEL_NAME,
    LocalModelConfig,
    LocalModelServer,
    find_smollm2_gguf,
    open_llm_client,
)

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
    "RecordReplayClient",
    "ScriptedLLMClient",
    "TokenUsage",
    "UsageMeter",
    "UsageTotals",
    "assistant_message",
    "find_smollm2_gguf",
    "open_llm_client",
    "system_message",
    "user_message",
]

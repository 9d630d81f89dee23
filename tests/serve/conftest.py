# SPDX-License-Identifier: Apache-2.0
"""The serve tests' shared parts: the embedded tokenizer, and a real GenerationEngine whose executor is never
stepped (submit() only checks and queues), for tests of everything around the engine."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from logquant_trt.models.embedded import ensure_embedded_model
from logquant_trt.runtime import GenerationEngine
from logquant_trt.runtime.executor import Executor


class NeverStepped(Executor):
    """Enough of an Executor for GenerationEngine.submit; no test that uses it steps the engine."""

    max_batch, max_seq_len, device = 2, 64, torch.device("cpu")

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def prefill(self, row: int, pages: list[int], prompt: tuple[int, ...]) -> torch.Tensor:
        raise AssertionError("not stepped")

    def decode(self, rows: list[int], tokens: list[int], positions: list[int]) -> torch.Tensor:
        raise AssertionError("not stepped")

    def release(self, row: int) -> None:
        raise AssertionError("not stepped")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(ensure_embedded_model())


@pytest.fixture
def idle_engine(tokenizer: Any) -> GenerationEngine:
    return GenerationEngine(NeverStepped(len(tokenizer)), tokenizer)

# SPDX-License-Identifier: Apache-2.0
"""The Triton TensorRT model's generation (GenerationEngine over PagedGraphExecutor), run without TensorRT.

The engine is PagedCausalLM exported to ONNX and built; PagedCausalLM itself, eager on the CPU, has the same
inputs, outputs and cache contract, so it stands in for TensorRTStep here. Checked: continuous batching with
more requests than slots returns, for every request, what it gives alone; greedy output equals
paged_lm.greedy_generate; one-token prompts; capacity errors by value; stop() aborts what is pending.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.models.embedded import load_embedded_model
from logquant_trt.models.paged_lm import PagedCausalLM, greedy_generate
from logquant_trt.runtime import EngineError, FinishReason, GenerationEngine, RequestError, SamplingParams
from logquant_trt.ops.logquant_attention import CACHE_INPUTS
from logquant_trt.serve.paged_graph_executor import TENSOR_ALIGNMENT, PagedGraphExecutor, SlotCache, torch_step

SLOTS, MAX_SEQ_LEN, MAX_PROMPT = 2, 64, 48
CONFIG = LogQuantConfig(policy="logquant_ott", group_size=32, window=32, residual=32, dtype="float32")


@pytest.fixture(scope="module")
def lm_and_tokenizer() -> tuple[PagedCausalLM, Any]:
    model, tokenizer = load_embedded_model()
    return PagedCausalLM(model, CONFIG), tokenizer


def make_generator(lm: PagedCausalLM, tokenizer: Any) -> GenerationEngine:
    # The cache as trt_python_model builds it, from the engine's geometry.
    cache = SlotCache.empty(CONFIG, slots=SLOTS, layers=lm.num_layers, kv_heads=lm.num_kv_heads,
                            head_dim=lm.head_dim, max_seq_len=MAX_SEQ_LEN, device="cpu")
    executor = PagedGraphExecutor(torch_step(lm), cache, max_seq_len=MAX_SEQ_LEN, max_prompt=MAX_PROMPT,
                                  vocab_size=lm.model.config.vocab_size, device="cpu")
    return GenerationEngine(executor, tokenizer)


def run_all(generator: GenerationEngine, handles: list[Any]) -> list[tuple[int, ...]]:
    while generator.has_work:
        generator.step()
    return [h.result().token_ids for h in handles]


def test_batched_equals_alone_and_greedy_generate(lm_and_tokenizer: tuple[PagedCausalLM, Any]) -> None:
    lm, tokenizer = lm_and_tokenizer
    greedy = SamplingParams(max_tokens=6, ignore_eos=True)
    sampled = SamplingParams(max_tokens=5, temperature=0.9, top_k=50, seed=11, ignore_eos=True)
    requests = [(tokenizer.encode("The capital of France is"), greedy),
                (tokenizer.encode("def add(a, b):"), sampled),
                ([504], greedy),  # one token: starts as a decode step on an empty slot
                (tokenizer.encode("Once upon a time"), greedy)]
    generator = make_generator(lm, tokenizer)
    # 4 requests on 2 slots: later ones are admitted as earlier ones retire, into slots with a used cache.
    batched = run_all(generator, [generator.submit(p, params) for p, params in requests])
    for (prompt, params), got in zip(requests, batched):
        alone = run_all(generator, [generator.submit(prompt, params)])[0]
        assert got == alone, f"prompt {prompt}: batched {got} != alone {alone}"
        assert len(got) == params.max_tokens
    for (prompt, params), got in zip(requests, batched):
        if params.greedy and len(prompt) > 1:
            expected = greedy_generate(lm, torch.tensor([prompt]), params.max_tokens)[0, len(prompt):]
            assert list(got) == expected.tolist(), f"prompt {prompt}"


def test_capacity_errors_name_the_value(lm_and_tokenizer: tuple[PagedCausalLM, Any]) -> None:
    generator = make_generator(*lm_and_tokenizer)
    with pytest.raises(RequestError, match=f"prompt_token_ids='<{MAX_PROMPT + 1} tokens>'"):
        generator.submit([5] * (MAX_PROMPT + 1), SamplingParams(max_tokens=1))
    with pytest.raises(RequestError, match=f"max_tokens=60 .* exceeds max_seq_len={MAX_SEQ_LEN}"):
        generator.submit([5] * 10, SamplingParams(max_tokens=60))
    with pytest.raises(RequestError, match="prompt_token_ids=-3"):
        generator.submit([1, -3], SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="max_seq_len=65 exceeds the cache's 64 tokens per slot"):
        PagedGraphExecutor(torch_step(lm_and_tokenizer[0]), SlotCache(lm_and_tokenizer[0].empty_cache(1, MAX_SEQ_LEN)),
                           max_seq_len=MAX_SEQ_LEN + 1, max_prompt=8, vocab_size=10, device="cpu")


def test_thread_streams_and_stop_aborts(lm_and_tokenizer: tuple[PagedCausalLM, Any]) -> None:
    lm, tokenizer = lm_and_tokenizer
    generator = make_generator(lm, tokenizer)
    generator.start()
    try:
        handle = generator.submit(tokenizer.encode("Hello"), SamplingParams(max_tokens=3, ignore_eos=True))
        streamed = list(handle.stream(timeout=60))
        assert tuple(streamed) == handle.result().token_ids and len(streamed) == 3
        pending = [generator.submit([504, 28], SamplingParams(max_tokens=40, ignore_eos=True)) for _ in range(3)]
    finally:
        generator.stop()
    assert all(h.result(timeout=1).finish_reason in (FinishReason.ABORTED, FinishReason.LENGTH) for h in pending)
    assert any(h.result().finish_reason is FinishReason.ABORTED for h in pending)
    with pytest.raises(EngineError, match="stopped"):
        generator.submit([504, 28], SamplingParams(max_tokens=1))


def test_every_bound_tensor_starts_aligned_and_prefill_writes_its_slot() -> None:
    """TensorRT takes only 256-byte aligned addresses: no tensor a step binds may start inside its allocation at an
    unaligned offset (a view of slot s > 0 of seq_len would). The prefill's staged rows must land in the slot."""
    slots, layers, vocab = 3, 2, 11
    cache = SlotCache.empty(CONFIG, slots=slots, layers=layers, kv_heads=2, head_dim=64, max_seq_len=MAX_SEQ_LEN,
                            device="cpu")
    offsets: list[int] = []

    def step(ids: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor,
             tensors: list[torch.Tensor]) -> torch.Tensor:
        offsets.extend(t.storage_offset() * t.element_size() % TENSOR_ALIGNMENT for t in (ids, positions, lengths))
        offsets.extend(t.storage_offset() * t.element_size() % TENSOR_ALIGNMENT for t in tensors)
        seq_len = CACHE_INPUTS.index("seq_len")
        for layer in range(layers):  # what the plugin does to the cache, in place
            tensors[layer * len(CACHE_INPUTS) + seq_len] += ids.shape[1]
        return torch.zeros(ids.shape[0], ids.shape[1], vocab)

    executor = PagedGraphExecutor(step, cache, max_seq_len=MAX_SEQ_LEN, max_prompt=MAX_PROMPT, vocab_size=vocab,
                                  device="cpu")
    executor.prefill(2, [], (5, 6, 7))
    executor.decode([2], [8], [3])
    assert offsets and set(offsets) == {0}
    assert [int(layer["seq_len"][2]) for layer in cache.layers] == [4] * layers
    assert [int(layer["seq_len"][s]) for layer in cache.layers for s in (0, 1)] == [1] * (2 * layers)

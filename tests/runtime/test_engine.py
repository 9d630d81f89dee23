# SPDX-License-Identifier: Apache-2.0
"""GenerationEngine on the CPU (reference backend): semantics, batching, stops, errors, threading."""

import threading

import pytest
import torch

from logquant_trt.hf import LogQuantCache
from logquant_trt.runtime import EngineError, FinishReason, GenerationEngine, RequestError, SamplingParams
from logquant_trt.runtime.model import DecoderModel

GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)
SAMPLED = SamplingParams(max_tokens=12, temperature=0.9, top_k=40, top_p=0.9, seed=7, ignore_eos=True)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 80, (count,), generator=generator).tolist()
    return [torch.randint(0, 299, (n,), generator=generator).tolist() for n in lengths]


@pytest.fixture(scope="module")
def hf(tiny_hf):
    return tiny_hf("llama")


@pytest.fixture(scope="module")
def model(hf):
    return DecoderModel.from_hf(hf)


def engine(model, tokenizer, config, **kwargs) -> GenerationEngine:
    kwargs.setdefault("max_batch", 4)
    kwargs.setdefault("max_seq_len", 160)
    return GenerationEngine.from_model(model, tokenizer, config, **kwargs)


@pytest.mark.parametrize("policy", ["fp16", "kivi", "logquant_ott"])
def test_greedy_equals_hf_generate_with_the_reference_cache(hf, model, tokenizer, small_config, policy) -> None:
    config = small_config(policy)
    prompt = prompts(1, seed=3)[0] + prompts(1, seed=4)[0]  # long enough to seal blocks in the prefill
    ours = engine(model, tokenizer, config).generate([prompt], SamplingParams(max_tokens=40, ignore_eos=True))[0]
    ids = torch.tensor([prompt])
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), past_key_values=LogQuantCache(config),
                         max_new_tokens=40, min_new_tokens=40, do_sample=False)[0, len(prompt):]
    assert list(ours.token_ids) == theirs.tolist()
    assert ours.finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_outputs_do_not_depend_on_the_batch(model, tokenizer, small_config, params) -> None:
    eng = engine(model, tokenizer, small_config("logquant_ott"))
    batch = prompts(7)  # more than max_batch: some wait, rows are reused
    together = eng.generate(batch, params)
    assert eng.peak_batch == 4  # every row decoded at once
    alone = [eng.generate([p], params)[0] for p in batch]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert len({r.token_ids for r in together}) == len(batch)  # no row copied another
    assert eng.pages.num_free == eng.pages.num_pages and not eng.has_work


def test_seed_changes_the_sample_and_temperature_zero_is_greedy(model, tokenizer, small_config) -> None:
    eng = engine(model, tokenizer, small_config("kivi"))
    prompt = prompts(1)[0]
    a = eng.generate([prompt], SAMPLED)[0].token_ids
    b = eng.generate([prompt], SamplingParams(**{**SAMPLED.__dict__, "seed": 8}))[0].token_ids
    assert a != b
    greedy = eng.generate([prompt], GREEDY)[0].token_ids
    assert eng.generate([prompt], SamplingParams(max_tokens=12, top_k=5, ignore_eos=True))[0].token_ids == greedy


def test_stop_conditions(model, tokenizer, small_config) -> None:
    eng = engine(model, tokenizer, small_config("kivi"))
    prompt = prompts(1)[0]
    free = eng.generate([prompt], GREEDY)[0].token_ids
    stop_at = free[4]
    stopped = eng.generate([prompt], SamplingParams(max_tokens=12, stop_token_ids=(stop_at,), ignore_eos=True))[0]
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.token_ids == free[:free.index(stop_at) + 1]
    one = eng.generate([prompt], SamplingParams(max_tokens=1))[0]
    assert one.token_ids == free[:1] and one.finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize("prompt, params, field", [
    ([], GREEDY, "prompt_token_ids"),
    ([1, 2, 300], GREEDY, "prompt_token_ids"),
    ("hello", GREEDY, "prompt_token_ids"),
    ([1] * 150, SamplingParams(max_tokens=11), "max_tokens"),
    ([1] * 160, SamplingParams(max_tokens=1), "prompt_token_ids"),
])
def test_bad_requests_name_the_value(model, tokenizer, small_config, prompt, params, field) -> None:
    eng = engine(model, tokenizer, small_config("kivi"))
    with pytest.raises(RequestError, match=field) as error:
        eng.submit(prompt, params)
    assert error.value.field == field
    assert not eng.has_work


@pytest.mark.parametrize("kwargs, field", [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temperature"),
                                           ({"top_p": 0.0}, "top_p"), ({"top_k": -2}, "top_k"),
                                           ({"seed": "x"}, "seed"), ({"max_tokens": 2.5}, "max_tokens")])
def test_bad_sampling_params_name_the_field(kwargs, field) -> None:
    with pytest.raises(RequestError, match=rf"^{field}=") as error:
        SamplingParams(**kwargs)
    assert error.value.field == field


def test_a_request_larger_than_the_pool_is_refused(model, tokenizer, small_config) -> None:
    eng = engine(model, tokenizer, small_config("kivi"), num_pages=2)
    with pytest.raises(RequestError, match="need 3 pages; the pool has 2"):
        eng.submit([1] * 70, SamplingParams(max_tokens=20))


def test_requests_wait_for_pages(model, tokenizer, small_config) -> None:
    # Each request needs 3 pages; 4 pages admit one at a time although 4 rows are free.
    eng = engine(model, tokenizer, small_config("kivi"), num_pages=4)
    batch = prompts(3, seed=5)
    batch = [p + [7] * (70 - len(p)) for p in batch]
    results = eng.generate(batch, SamplingParams(max_tokens=20, ignore_eos=True))
    assert all(len(r.token_ids) == 20 for r in results)
    solo = [eng.generate([p], SamplingParams(max_tokens=20, ignore_eos=True))[0].token_ids for p in batch]
    assert [r.token_ids for r in results] == solo


def test_background_thread_streams_and_stops(model, tokenizer, small_config) -> None:
    eng = engine(model, tokenizer, small_config("logquant_ott"))
    batch = prompts(6, seed=9)
    expected = [r.token_ids for r in eng.generate(batch, GREEDY)]
    streamed: dict[int, list[int]] = {}
    with eng:
        def client(i: int) -> None:
            handle = eng.submit(batch[i], GREEDY)
            streamed[i] = list(handle.stream(timeout=60))
            assert tuple(streamed[i]) == handle.result().token_ids
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(batch))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert [tuple(streamed[i]) for i in range(len(batch))] == expected
    # After stop(), pending work is aborted and nothing is left behind.
    eng.start()
    handle = eng.submit(batch[0], SamplingParams(max_tokens=150 - len(batch[0]), ignore_eos=True))
    eng.stop()
    assert handle.result(timeout=10).finish_reason in (FinishReason.ABORTED, FinishReason.LENGTH)
    assert not eng.has_work and eng.pages.num_free == eng.pages.num_pages
    with pytest.raises(EngineError, match="stopped"):  # nothing would ever run it
        eng.submit(batch[0], GREEDY)
    eng.start()
    assert eng.submit(batch[0], GREEDY).result(timeout=60).token_ids == expected[0]
    eng.stop()


def test_a_failed_loop_fails_its_requests_and_refuses_new_ones(model, tokenizer, small_config) -> None:
    eng = engine(model, tokenizer, small_config("kivi"))

    def broken_step() -> None:
        raise RuntimeError("device lost")

    eng.step = broken_step
    eng.start()
    handle = eng.submit(prompts(1)[0], GREEDY)
    with pytest.raises(EngineError, match="device lost"):
        handle.result(timeout=10)
    with pytest.raises(EngineError, match="device lost"):
        eng.submit(prompts(1)[0], GREEDY)


def test_cancel(model, tokenizer, small_config) -> None:
    eng = engine(model, tokenizer, small_config("kivi"))
    handle = eng.submit(prompts(1)[0], SamplingParams(max_tokens=50, ignore_eos=True))
    eng.step()  # prefill (token 1) and a decode step (token 2)
    eng.step()  # token 3
    handle.cancel()
    eng.step()
    result = handle.result(timeout=1)
    assert result.finish_reason is FinishReason.ABORTED and len(result.token_ids) == 3
    assert not eng.has_work


def test_engine_arguments_are_checked(model, tokenizer, small_config) -> None:
    with pytest.raises(ValueError, match="max_batch must be an int >= 1, got 0"):
        engine(model, tokenizer, small_config("kivi"), max_batch=0)
    with pytest.raises(ValueError, match="max_seq_len=1000 exceeds the model's 512 positions"):
        engine(model, tokenizer, small_config("kivi"), max_seq_len=1000)
    with pytest.raises(ValueError, match="cache_config.dtype='float16'"):
        engine(model, tokenizer, small_config("kivi", dtype="float16"))
    with pytest.raises(ValueError, match="cache backend 'pagd' is unknown"):
        engine(model, tokenizer, small_config("kivi"), backend="pagd")


@pytest.mark.parametrize("rows, heads, sms, expected", [
    (15, 8, 132, ((0, 15),)),  # 120 blocks: FlashAttention splits these itself
    (60, 8, 132, ((0, 15), (15, 30), (30, 45), (45, 60))),  # <= 16 rows (one block per SM), equal sizes
    (27, 8, 132, ((0, 14), (14, 27))),
    (300, 3, 132, tuple((i, min(i + 43, 300)) for i in range(0, 300, 43))),
    (5, 64, 16, tuple((i, i + 1) for i in range(5))),  # more KV heads than SMs: a row per chunk
])
def test_fp16_cache_decode_chunks_keep_flash_attention_on_its_split_kernel(rows, heads, sms, expected) -> None:
    from logquant_trt.runtime.cache.dense import DecodeChunks

    chunks = DecodeChunks.plan(rows, heads, sms)
    assert chunks.bounds == expected
    assert chunks.bounds[0][0] == 0 and chunks.bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(chunks.bounds, chunks.bounds[1:]))

# SPDX-License-Identifier: Apache-2.0
"""The runtime on the GPU: kernel and FlashAttention backends against the reference backend, CUDA graphs,
batch invariance, and SmolLM2's perplexity against the CPU reference."""

import pytest
import torch

from logquant_trt.runtime import GenerationEngine, SamplingParams
from logquant_trt.runtime.model import DecoderModel
from logquant_trt.runtime.scoring import teacher_forced_logits

pytestmark = pytest.mark.gpu
QUANTIZED = ["kivi", "logquant", "ott", "logquant_ott"]


@pytest.fixture(scope="module")
def hf(tiny_hf):
    return tiny_hf("llama")


@pytest.fixture(scope="module")
def model(hf):
    return DecoderModel.from_hf(hf, dtype=torch.float16, device="cuda")


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 299, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("policy", [*QUANTIZED, "fp16"])
@pytest.mark.parametrize("key_axis", ["channel", "token"])
def test_backend_logits_match_the_reference_backend(model, small_config, policy, key_axis) -> None:
    if policy == "fp16" and key_axis == "token":
        pytest.skip("the fp16 cache has no key axis")
    config = small_config(policy, dtype="float16").replace(key_axis=key_axis)
    ids = tokens(3, 230)  # prefill 70 (2 sealed blocks), then 159 decode steps through seals and shifts
    ours = teacher_forced_logits(model, config, ids, 70)
    reference = teacher_forced_logits(model, config, ids, 70, backend="reference")
    torch.testing.assert_close(ours, reference, atol=3e-2, rtol=3e-2)
    assert (ours.argmax(-1) == reference.argmax(-1)).float().mean() > 0.97


@pytest.mark.parametrize("policy", ["logquant_ott", "fp16"])
def test_cuda_graph_replay_equals_eager(model, tokenizer, small_config, policy) -> None:
    config = small_config(policy, dtype="float16")
    prompts = tokens(5, 60, seed=1).tolist()
    params = SamplingParams(max_tokens=50, ignore_eos=True)
    graphed = GenerationEngine.from_model(model, tokenizer, config, max_batch=4, max_seq_len=128)
    eager = GenerationEngine.from_model(model, tokenizer, config, max_batch=4, max_seq_len=128, cuda_graphs=False)
    assert [r.token_ids for r in graphed.generate(prompts, params)] == \
        [r.token_ids for r in eager.generate(prompts, params)]


def test_outputs_do_not_depend_on_the_batch(model, tokenizer, small_config) -> None:
    engine = GenerationEngine.from_model(model, tokenizer, small_config("logquant_ott", dtype="float16"),
                                         max_batch=4, max_seq_len=160)
    prompts = [p[:n] for p, n in zip(tokens(6, 90, seed=2).tolist(), (5, 90, 33, 64, 17, 71))]
    for params in (SamplingParams(max_tokens=40, ignore_eos=True),
                   SamplingParams(max_tokens=40, temperature=1.0, top_p=0.95, seed=4, ignore_eos=True)):
        together = engine.generate(prompts, params)
        alone = [engine.generate([p], params)[0] for p in prompts]
        assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert engine.pages.num_free == engine.pages.num_pages


def test_smollm2_perplexity_matches_the_cpu_reference() -> None:
    from logquant_trt.config import LogQuantConfig
    from logquant_trt.data.corpus import corpus_token_ids
    from logquant_trt.eval.runtime_check import check_policies
    from logquant_trt.models.embedded import load_embedded_model

    hf_model, tokenizer = load_embedded_model()
    checks = check_policies(hf_model, corpus_token_ids(tokenizer, 768), 256,
                            LogQuantConfig(group_size=32, window=32, residual=64))
    # fp16 runtime vs fp32 reference: the fp16 cache agrees closely; a 2-bit code flips wherever fp16
    # rounding crosses a quantization boundary, so quantized policies agree in perplexity, not token by token.
    for check in checks:
        if check.policy == "fp16":
            assert abs(check.relative_diff) < 1e-3 and check.top1_agreement > 0.99, check
        else:
            assert abs(check.relative_diff) < 0.02 and check.top1_agreement > 0.85, check


@pytest.mark.parametrize("rows", [20, 150])  # 150 x 2 KV heads is attended in row chunks on side streams
@pytest.mark.parametrize("use_graph", [False, True])
def test_dense_flash_decode_matches_masked_sdpa(small_config, rows, use_graph) -> None:
    from logquant_trt.runtime.cache.dense import DenseKVCache
    from logquant_trt.runtime.model import DecoderShape

    shape = DecoderShape(num_layers=1, hidden_size=512, num_q_heads=8, num_kv_heads=2, head_dim=128,
                         intermediate_size=512, vocab_size=10, max_positions=512)
    cache = DenseKVCache(small_config("fp16", dtype="float16"), shape, rows, 300, 0, torch.device("cuda"))
    assert len(cache.chunks.bounds) == (1 if rows == 20 else 3)
    generator = torch.Generator(device="cuda").manual_seed(0)
    cache.k.normal_(generator=generator)
    cache.v.normal_(generator=generator)
    lengths = torch.randint(1, 299, (rows,), device="cuda", generator=generator, dtype=torch.int32)
    cache.lengths.copy_(lengths)
    active = torch.ones(rows, dtype=torch.int32, device="cuda")
    q = torch.randn(rows, 8, 1, 128, dtype=torch.float16, device="cuda", generator=generator)
    k_new = torch.randn(rows, 2, 1, 128, dtype=torch.float16, device="cuda", generator=generator)

    def step() -> torch.Tensor:
        cache.begin_decode(active, list(range(rows)))
        return cache.decode(0, q, k_new, k_new)

    if use_graph:
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            out = step()
        cache.lengths.copy_(lengths)  # capture ran nothing, but be explicit: replay from the same state
        graph.replay()
        torch.cuda.synchronize()
    else:
        out = step()
    keys, values = cache.k[0].float(), cache.v[0].float()
    visible = torch.arange(300, device="cuda") < (lengths + 1)[:, None]
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.float(), keys, values, attn_mask=visible[:, None, None, :], enable_gqa=True)
    torch.testing.assert_close(out.float(), expected, atol=2e-3, rtol=2e-3)

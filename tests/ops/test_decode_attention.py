# SPDX-License-Identifier: Apache-2.0
"""logquant::decode_attention against the oracle, logquant_trt.reference.paged.paged_attention.

States are built with the reference (random prefill + decode steps), laid out with to_paged (pages in random
order, sequences of different lengths in one batch), moved to the GPU, and attended by the kernel.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import PagedLayer, paged_attention, to_paged

pytestmark = pytest.mark.gpu

# Tolerances vs the fp32 reference. The kernel folds the key scale into the query (q * scale rounded once to the
# cache dtype) and the value scale into the probabilities (p * scale rounded once), and rounds the output once;
# each is a relative error of one unit in the last place (2^-11 fp16, 2^-8 bf16) on |v| <~ 4 before averaging.
# atol/rtol of ~4 such units bound the worst element; the relative Frobenius error bounds the average far tighter.
TOLERANCE = {"float16": dict(atol=5e-3, rtol=5e-3, frob=2e-3), "bfloat16": dict(atol=4e-2, rtol=4e-2, frob=1.6e-2)}
POLICIES = ("kivi", "logquant", "ott", "logquant_ott")


@dataclasses.dataclass(frozen=True)
class Params:
    policy: str
    head_dim: int
    ratio: int  # query heads per KV head
    group_size: int
    key_axis: str
    dtype: str
    lengths: tuple[int, ...]
    num_queries: int = 1
    heads: int = 2

    @property
    def tag(self) -> str:
        return "-".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items()).replace(" ", "")

    def config(self) -> LogQuantConfig:
        g = self.group_size
        return LogQuantConfig(policy=self.policy, group_size=g, residual=g, window=g, key_axis=self.key_axis,
                              dtype=self.dtype, pool_size=3, extra_pool_size=6, pool_skip_layers=0,
                              sink_tokens=1 if self.policy == "kivi" else 0)


def _lengths(g: int, n: int, long: int) -> tuple[int, ...]:
    """max(1, n) tokens, fewer than W (= G), a length that is no multiple of G, and a long one."""
    return (max(1, n), max(n, g - 3), 5 * g + 7, long)


def _grid() -> list[Params]:
    """Every (policy, G, key axis, dtype); head dim, GQA ratio and n rotate so that every kernel instantiation
    (dtype, D, G, axis) runs twice and each value of each axis meets each value of the others."""
    cases = []
    combos = itertools.product(POLICIES, (32, 64, 128), ("channel", "token"), ("float16", "bfloat16"))
    for k, (policy, g, axis, dtype) in enumerate(combos):
        d = (64, 128)[(k // 2 + k // 12) % 2]
        ratio = (1, 3, 4, 8)[(k + k // 4) % 4]
        n = (1, 4)[(k // 3 + k // 8) % 2]
        cases.append(Params(policy, d, ratio, g, axis, dtype, _lengths(g, n, 700 + 97 * (k % 5)), n))
    return cases


CASES = _grid() + [
    # The benchmark's fast path, longer sequences, more heads.
    Params("logquant_ott", 128, 4, 64, "channel", "float16", (3001, 64, 1999, 4096), heads=4),
    Params("kivi", 128, 4, 64, "channel", "bfloat16", (2500, 129), heads=4),
    # Eight query tokens of eight heads: 64 query rows, eight query tiles.
    Params("ott", 128, 8, 64, "channel", "float16", (300, 8), num_queries=8),
    Params("logquant", 64, 1, 128, "token", "float16", (1, 2, 3)),
]


def build_states(params: Params, gen: torch.Generator) -> list[LayerKVState]:
    """One state per length: a random prefill, then the last two tokens as decode steps."""
    dtype = getattr(torch, params.dtype)
    states = []
    # A few loud channels make the per-channel key scales differ, as post-RoPE keys do.
    channel_gain = 1 + 4 * (torch.rand(params.head_dim, generator=gen) < 0.1)
    for length in params.lengths:
        state = LayerKVState(params.config(), layer_idx=2)
        prefill = max(length - 2, 1)
        for start, count in ((0, prefill), *((t, 1) for t in range(prefill, length))):
            shape = (1, params.heads, count, params.head_dim)
            k = (torch.randn(shape, generator=gen) * channel_gain).to(dtype)
            v = torch.randn(shape, generator=gen).to(dtype)
            state.append(k, v)
        states.append(state)
    return states


def to_device(paged: PagedLayer, device: torch.device) -> PagedLayer:
    fields = {f.name: getattr(paged, f.name) for f in dataclasses.fields(paged)}
    return PagedLayer(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in fields.items()})


def make_inputs(params: Params) -> tuple[PagedLayer, torch.Tensor]:
    gen = torch.Generator().manual_seed(zlib.crc32(params.tag.encode()))
    states = build_states(params, gen)
    spare = 3  # unused pages: the kernel must follow the block table, not the page order
    paged = to_paged(states, num_pages=sum(s.num_sealed for s in states) + spare, generator=gen)
    q = torch.randn(len(params.lengths), params.heads * params.ratio, params.num_queries, params.head_dim,
                    generator=gen).to(getattr(torch, params.dtype))
    return paged, q


def assert_matches(out: torch.Tensor, ref: torch.Tensor, params: Params) -> None:
    tol = TOLERANCE[params.dtype]
    out = out.float().cpu()
    assert torch.isfinite(out).all(), f"{params.tag}: non-finite output"
    frob = ((out - ref).norm() / ref.norm()).item()
    assert frob < tol["frob"], f"{params.tag}: relative Frobenius error {frob:.2e} >= {tol['frob']}"
    torch.testing.assert_close(out, ref, atol=tol["atol"], rtol=tol["rtol"], msg=lambda m: f"{params.tag}: {m}")


@pytest.mark.parametrize("params", CASES, ids=lambda p: p.tag)
def test_matches_reference(params: Params) -> None:
    from logquant_trt.ops.decode_attention import decode_attention

    paged, q = make_inputs(params)
    ref = paged_attention(q.float(), paged)
    out = decode_attention(q.cuda(), to_device(paged, torch.device("cuda")))
    assert out.dtype == q.dtype and out.shape == q.shape, params.tag
    assert_matches(out, ref, params)


@pytest.mark.parametrize("batch,length", [(4, 131072), (64, 16384)])
def test_long_sequences_match_reference(batch: int, length: int) -> None:
    """Shapes where one warp streams more than 32 units, so its page-id window rolls over (on the H100: B=4 with
    12 splits, 43 units a warp; B=64 with one split per (b, h), 64 units a warp): the bench's synthetic
    LogQuant+OTT cache, the oracle evaluated on the GPU."""
    from logquant_trt.bench.kernels import policy_config, synthesize
    from logquant_trt.ops.decode_attention import decode_attention

    gen = torch.Generator().manual_seed(batch * length)
    cache, _ = synthesize(policy_config("logquant_ott"), batch, length, 8, 128, gen)
    q = torch.randn(batch, 32, 1, 128, generator=gen).half().cuda()
    ref = paged_attention(q.float(), cache).cpu()
    out = decode_attention(q, cache)
    assert_matches(out, ref, Params("logquant_ott", 128, 4, cache.config.group_size, "channel", "float16",
                                    (length,) * batch))


@pytest.mark.parametrize("batch", [1, 8, 16, 32])
def test_wide_split_merges_match_reference(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wide shape's split-K merge, forced, over 2 KV heads of 16k tokens. On the H100 the splits of (b, h) are
    10 (B=1: the workspace merge), 8, 4 and 2 (B=8, 16, 32: one thread-block cluster each, merged through
    distributed shared memory where the clusters fit in one wave, else the workspace)."""
    from logquant_trt.bench.kernels import policy_config, synthesize
    from logquant_trt.ops.decode_attention import decode_attention

    monkeypatch.setenv("LOGQUANT_DECODE_CTA_SHAPE", "wide")
    gen = torch.Generator().manual_seed(batch)
    cache, _ = synthesize(policy_config("logquant_ott"), batch, 16384, 2, 128, gen)
    q = torch.randn(batch, 8, 1, 128, generator=gen).half().cuda()
    ref = paged_attention(q.float(), cache).cpu()
    out = decode_attention(q, cache)
    assert_matches(out, ref, Params("logquant_ott", 128, 4, cache.config.group_size, "channel", "float16",
                                    (16384,) * batch))


@pytest.mark.parametrize("policy,head_dim", [("kivi", 128), ("logquant_ott", 64)])
def test_more_slots_than_one_wave_match_reference(policy: str, head_dim: int) -> None:
    """More (b, h) slots than one wave of three CTAs per SM holds: one split each, run with the shallow CTA shape
    (four CTAs per SM, two stages; cpp/include/logquant/attention/decodeKernelParams.cuh), which the planner picks
    itself there."""
    from logquant_trt.bench.kernels import policy_config, synthesize
    from logquant_trt.ops.decode_attention import decode_attention

    heads = 8
    batch = 3 * torch.cuda.get_device_properties(0).multi_processor_count // heads + 2
    gen = torch.Generator().manual_seed(batch * head_dim)
    cache, _ = synthesize(policy_config(policy), batch, 1500, heads, head_dim, gen)
    q = torch.randn(batch, 4 * heads, 1, head_dim, generator=gen).half().cuda()
    ref = paged_attention(q.float(), cache).cpu()
    out = decode_attention(q, cache)
    assert_matches(out, ref, Params(policy, head_dim, 4, cache.config.group_size, "channel", "float16",
                                    (1500,) * batch))


# Split grids of several units a warp, lengths that leave the warps of a split with unequal unit counts (the wide
# shape's barriers stop at the common count), two blocks a unit (G = 32), and one CTA per slot.
SHAPE_CASES = [
    Params("logquant_ott", 128, 4, 64, "channel", "float16", (3001, 64, 1999, 4096), heads=4),
    Params("kivi", 64, 3, 128, "token", "bfloat16", (2900, 1300, 7)),
    Params("ott", 128, 4, 32, "channel", "float16", (2400, 517)),
    # Two blocks a unit with two splits a slot in the wide shape: its largest shared memory, plus the cluster inbox.
    Params("ott", 128, 4, 32, "channel", "float16", (4100, 2999)),
    Params("logquant", 64, 8, 64, "channel", "bfloat16", (333,) * 20, heads=8),  # 160 slots: more than one wave
]


@pytest.mark.parametrize("shape", ["deep", "shallow", "wide"])
@pytest.mark.parametrize("params", SHAPE_CASES, ids=lambda p: p.tag)
def test_every_cta_shape_matches_reference(shape: str, params: Params, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CTA shape (cpp/include/logquant/attention/decodeKernelParams.cuh) forced on the same inputs; the shallow
    shape is not built for G = 32 and says so."""
    from logquant_trt.ops.decode_attention import decode_attention

    monkeypatch.setenv("LOGQUANT_DECODE_CTA_SHAPE", shape)
    paged, q = make_inputs(params)
    device_paged = to_device(paged, torch.device("cuda"))
    if shape == "shallow" and params.group_size == 32:
        with pytest.raises(RuntimeError, match="LOGQUANT_DECODE_CTA_SHAPE=shallow.*not built"):
            decode_attention(q.cuda(), device_paged)
        return
    assert_matches(decode_attention(q.cuda(), device_paged), paged_attention(q.float(), paged), params)


def test_unknown_cta_shape_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from logquant_trt.ops.decode_attention import decode_attention

    monkeypatch.setenv("LOGQUANT_DECODE_CTA_SHAPE", "huge")
    paged, q = make_inputs(CASES[-1])
    with pytest.raises(RuntimeError, match="LOGQUANT_DECODE_CTA_SHAPE must be deep, shallow or wide, got 'huge'"):
        decode_attention(q.cuda(), to_device(paged, torch.device("cuda")))


def test_shadowed_slots_and_arbitrary_masks_follow_the_layout() -> None:
    """Whatever retained_pos and dup_mask say is what counts: flip a third of the readable retained slots to
    shadowed (-p - 2) and set random dup_mask bits; the oracle reads the same layout."""
    from logquant_trt.ops.decode_attention import decode_attention

    for params in (Params("logquant_ott", 128, 4, 64, "channel", "float16", (900, 333)),
                   Params("logquant_ott", 64, 3, 32, "token", "bfloat16", (700, 64))):
        paged, q = make_inputs(params)
        gen = torch.Generator().manual_seed(7)
        readable = paged.retained_pos >= 0
        flip = readable & (torch.rand(paged.retained_pos.shape, generator=gen) < 0.33)
        paged.retained_pos = torch.where(flip, -paged.retained_pos - 2, paged.retained_pos)
        noise = torch.randint(-2**31, 2**31 - 1, paged.dup_mask.shape, generator=gen, dtype=torch.int64)
        noise &= torch.randint(-2**31, 2**31 - 1, paged.dup_mask.shape, generator=gen, dtype=torch.int64)
        paged.dup_mask = paged.dup_mask | noise.to(torch.int32)  # about a quarter of the slots masked
        assert flip.any() and (paged.retained_pos <= -2).any(), params.tag
        ref = paged_attention(q.float(), paged)
        out = decode_attention(q.cuda(), to_device(paged, torch.device("cuda")))
        assert_matches(out, ref, params)


def test_runner_writes_every_element_and_replays_in_a_cuda_graph() -> None:
    from logquant_trt.ops.decode_attention import DecodeAttentionRunner

    params = Params("logquant_ott", 128, 4, 64, "channel", "float16", (1200, 77, 5))
    paged, q = make_inputs(params)
    ref = paged_attention(q.float(), paged)
    device_paged = to_device(paged, torch.device("cuda"))
    runner = DecodeAttentionRunner(device_paged, q.shape[1], q.shape[2])
    q_dev = q.cuda()
    out = torch.full_like(q_dev, float("nan"))
    runner.run(q_dev, out)
    assert_matches(out, ref, params)
    # Captured once; replays read the lengths on the device, and reuse (and re-zero) the split-K counters.
    out.fill_(float("nan"))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            runner.run(q_dev, out)
    for _ in range(3):
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert_matches(out, ref, params)


def test_arguments_are_checked() -> None:
    from logquant_trt.ops.decode_attention import decode_attention

    params = Params("kivi", 64, 2, 32, "channel", "float16", (70, 9))
    paged, q = make_inputs(params)
    device_paged = to_device(paged, torch.device("cuda"))
    q = q.cuda()
    with pytest.raises(TypeError, match="q"):
        decode_attention(q.float(), device_paged)
    with pytest.raises(ValueError, match="query heads"):
        decode_attention(q[:, :3].contiguous(), device_paged)
    with pytest.raises(ValueError, match="n=9"):
        decode_attention(q[:, :, :1].expand(-1, -1, 9, -1).contiguous(), device_paged)
    with pytest.raises(ValueError, match="scale"):
        decode_attention(q, device_paged, scale=-1.0)
    broken = dataclasses.replace(device_paged, k_codes=device_paged.k_codes[..., :-1].contiguous())
    with pytest.raises(ValueError, match="k_codes"):
        decode_attention(q, broken)
    broken = dataclasses.replace(device_paged, seq_len=device_paged.seq_len.long())
    with pytest.raises(TypeError, match="seq_len"):
        decode_attention(q, broken)

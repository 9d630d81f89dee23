# SPDX-License-Identifier: Apache-2.0
"""logquant::quantize_prefill and logquant::append_decode against the reference, byte for byte.

The oracle is LayerKVState (one per sequence) laid out by to_paged, run on the CPU: its fp32 division
by 3 is IEEE there, as docs/kv_format.md §3 requires. Pages are compared through each side's own
block table, so the kernels must honour a randomly ordered page pool.
"""

from __future__ import annotations

import ctypes
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.format import MASK_WORD_BITS
from logquant_trt.ops import _cache_view, kv_write
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import PagedLayer, to_paged

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Case:
    policy: str
    key_axis: str = "channel"
    head_dim: int = 64
    group_size: int = 32
    lengths: tuple[int, ...] = (1, 45, 100)  # prefill length of each sequence of the batch
    steps: int = 0  # decode steps after the prefill, every sequence at once
    dtype: str = "float16"
    heads: int = 2
    window_blocks: int = 1  # W = window_blocks * G
    residual: int = 40
    sink_tokens: int = 0
    pool_size: int = 3
    extra_pool_size: int = 6
    layer_idx: int = 3  # pool_skip_layers = 2
    # "grid": multiples of 2^-8 in [-15, 15], so every fp32 L1 norm is exact and OTT's choice cannot
    # depend on the summation order (the spec fixes none); "ties": values in {-0.5, ..., 0.5}, for
    # equal scores and constant groups; "randn": plain normals, for the policies that score nothing.
    data: str = "grid"

    @property
    def tag(self) -> str:
        return "-".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())

    def config(self) -> LogQuantConfig:
        return LogQuantConfig(policy=self.policy, key_axis=self.key_axis, group_size=self.group_size,
                              residual=self.residual, window=self.window_blocks * self.group_size,
                              sink_tokens=self.sink_tokens, pool_size=self.pool_size,
                              extra_pool_size=self.extra_pool_size, pool_skip_layers=2, dtype=self.dtype)


POLICIES = ("kivi", "logquant", "ott", "logquant_ott")
CASES = [
    # Prefill only: lengths of 1, below W / R, not a multiple of G, several LogQuant thinning rounds.
    *[Case(p, axis, lengths=(1, 45, 100, 333)) for p in POLICIES for axis in ("channel", "token")],
    Case("fp16", lengths=(1, 17, 90), steps=5),
    # Hundreds of decode steps: seals, LogQuant rebalances, pool traces, extra overflow.
    *[Case(p, axis, steps=300) for p in POLICIES for axis in ("channel", "token")],
    Case("logquant_ott", head_dim=128, group_size=64, lengths=(3, 200, 129), steps=260, data="ties"),
    Case("ott", head_dim=128, group_size=128, lengths=(130, 257), steps=200, residual=100, key_axis="token"),
    Case("logquant", head_dim=64, group_size=128, lengths=(20, 500), steps=300, data="randn"),
    Case("kivi", head_dim=128, group_size=64, lengths=(64, 1, 129), steps=150, dtype="bfloat16",
         data="randn", sink_tokens=1),
    Case("logquant_ott", dtype="bfloat16", lengths=(2, 70, 400), steps=250, window_blocks=2, sink_tokens=3),
    Case("ott", lengths=(31, 96), steps=400, extra_pool_size=1, pool_size=2, sink_tokens=5, data="ties"),
    Case("ott", lengths=(50, 150), steps=100, layer_idx=0),  # below pool_skip_layers: regions stay empty
    Case("kivi", head_dim=128, group_size=128, lengths=(300, 129), steps=150, sink_tokens=2),
    Case("logquant", group_size=64, lengths=(64, 193), steps=200, dtype="bfloat16"),
    Case("logquant_ott", lengths=(700,), steps=130, residual=0, sink_tokens=40, key_axis="token"),
    Case("kivi", lengths=(5, 33), steps=120, residual=0),  # R = 0: the new token is sealed at once
]


def make_tokens(case: Case, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, length, D] keys and values in the cache dtype, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    shape = (len(case.lengths), case.heads, length, case.head_dim)
    dtype = getattr(torch, case.dtype)
    out = []
    for _ in range(2):
        x = torch.randn(shape, generator=gen)
        if case.data == "grid":
            x = (x * 4 * 256).round().div(256).clamp(-15, 15)
        elif case.data == "ties":
            x = torch.randint(-2, 3, shape, generator=gen) / 4
        out.append(x.to(dtype))
    return out[0], out[1]


def reference_states(case: Case, k: torch.Tensor, v: torch.Tensor) -> list[LayerKVState]:
    states = []
    for b, length in enumerate(case.lengths):
        state = LayerKVState(case.config(), case.layer_idx)
        state.append(k[b:b + 1, :, :length], v[b:b + 1, :, :length])
        states.append(state)
    return states


def reference_paged(states: list[LayerKVState], gen: torch.Generator | None = None) -> PagedLayer:
    if not states[0].config.quantized:
        # NOTE(kv-write): to_paged reads state.retained[(0, h)], which only compaction creates, and the fp16
        # policy never compacts; give it the empty dicts it expects (reported to the lead).
        for state in states:
            for h in range(state.tail_k.shape[1]):
                state.retained.setdefault((0, h), {})
    return to_paged(states, generator=gen)


def empty_cache(case: Case, max_blocks: int, device: torch.device, gen: torch.Generator) -> PagedLayer:
    """A cache in the §4 layout filled with garbage, and a shuffled block table covering max_blocks per sequence."""
    config = case.config()
    batch, h, d, g = len(case.lengths), case.heads, case.head_dim, case.group_size
    c, dtype = config.channel_group(d), getattr(torch, case.dtype)
    pages = batch * max_blocks
    channel = case.key_axis == "channel"

    def noise(*shape: int, dtype: torch.dtype) -> torch.Tensor:
        if dtype.is_floating_point:
            return torch.full(shape, float("nan"), dtype=dtype, device=device)
        return torch.randint(0, 100, shape, generator=gen).to(dtype).to(device)

    slots = config.retained_slots()
    return PagedLayer(
        config,
        k_codes=noise(*((pages, h, d, g // 4) if channel else (pages, h, g, d // 4)), dtype=torch.uint8),
        k_params=noise(*((pages, h, d, 2) if channel else (pages, h, g, d // c, 2)), dtype=dtype),
        v_codes=noise(pages, h, g, d // 4, dtype=torch.uint8),
        v_params=noise(pages, h, g, d // c, 2, dtype=dtype),
        dup_mask=noise(pages, h, g // MASK_WORD_BITS, dtype=torch.int32),
        block_table=torch.randperm(pages, generator=gen).to(torch.int32).reshape(batch, max_blocks).to(device),
        num_sealed=noise(batch, dtype=torch.int32), seq_len=noise(batch, dtype=torch.int32),
        tail_k=noise(batch, h, config.tail_capacity(), d, dtype=dtype),
        tail_v=noise(batch, h, config.tail_capacity(), d, dtype=dtype),
        retained_pos=noise(batch, h, slots, dtype=torch.int32) - 200,
        retained_k=noise(batch, h, slots, d, dtype=dtype), retained_v=noise(batch, h, slots, d, dtype=dtype))


def assert_same_state(case: Case, got: PagedLayer, want: PagedLayer, when: str) -> None:
    tag = f"{case.tag} after {when}"
    got_cpu = {f.name: getattr(got, f.name).cpu() for f in dataclasses.fields(got) if f.name != "config"}
    assert torch.equal(got_cpu["seq_len"], want.seq_len), tag
    assert torch.equal(got_cpu["num_sealed"], want.num_sealed), tag
    for b in range(len(case.lengths)):
        for n in range(int(want.num_sealed[b])):
            mine, theirs = int(got_cpu["block_table"][b, n]), int(want.block_table[b, n])
            for name in ("k_codes", "k_params", "v_codes", "v_params", "dup_mask"):
                assert torch.equal(got_cpu[name][mine], getattr(want, name)[theirs]), \
                    f"{tag}: {name} of block {n}, seq {b}"
        slots = torch.arange(int(want.num_sealed[b]) * case.group_size, int(want.seq_len[b])) % want.tail_k.shape[2]
        for name in ("tail_k", "tail_v"):
            assert torch.equal(got_cpu[name][b][:, slots], getattr(want, name)[b][:, slots]), f"{tag}: {name}, seq {b}"
    assert torch.equal(got_cpu["retained_pos"], want.retained_pos), tag
    readable = want.retained_pos >= 0
    for name in ("retained_k", "retained_v"):
        assert torch.equal(got_cpu[name][readable], getattr(want, name)[readable]), f"{tag}: {name}"


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.tag)
def test_matches_reference(case: Case) -> None:
    device = torch.device("cuda")
    config = case.config()
    max_len = max(case.lengths)
    k, v = make_tokens(case, max_len, seed=1)
    k_steps, v_steps = make_tokens(case, case.steps, seed=2)
    states = reference_states(case, k, v)
    g = case.group_size
    max_blocks = (max_len + case.steps) // g + config.window // g + 1
    gen = torch.Generator().manual_seed(7)
    cache = empty_cache(case, max_blocks, device, gen)
    lengths = torch.tensor(case.lengths, dtype=torch.int32, device=device)
    kv_write.quantize_prefill(cache, k.to(device), v.to(device), lengths, case.layer_idx)
    assert_same_state(case, cache, reference_paged(states, gen), "prefill")
    k_steps, v_steps = k_steps.to(device), v_steps.to(device)
    checkpoints = {case.steps // 2, case.steps}
    for t in range(case.steps):
        k_t, v_t = k_steps[:, :, t:t + 1].contiguous(), v_steps[:, :, t:t + 1].contiguous()
        kv_write.append_decode(cache, k_t, v_t, case.layer_idx)
        for b, state in enumerate(states):
            state.append(k_steps[b:b + 1, :, t:t + 1].cpu(), v_steps[b:b + 1, :, t:t + 1].cpu())
        if t + 1 in checkpoints:
            assert_same_state(case, cache, reference_paged(states, gen), f"{t + 1} decode steps")


@pytest.mark.gpu
def test_decode_step_is_graph_capturable() -> None:
    case = Case("logquant_ott", lengths=(40, 90), steps=70)
    device = torch.device("cuda")
    k, v = make_tokens(case, max(case.lengths), seed=1)
    k_steps, v_steps = make_tokens(case, case.steps, seed=2)
    states = reference_states(case, k, v)
    cache = empty_cache(case, 12, device, torch.Generator().manual_seed(0))
    kv_write.quantize_prefill(cache, k.to(device), v.to(device),
                              torch.tensor(case.lengths, dtype=torch.int32, device=device), case.layer_idx)
    k_in = torch.empty_like(k_steps[:, :, :1], device=device)
    v_in = torch.empty_like(k_in)
    graph = torch.cuda.CUDAGraph()
    for t in range(case.steps):
        k_in.copy_(k_steps[:, :, t:t + 1])
        v_in.copy_(v_steps[:, :, t:t + 1])
        if t == 0:
            # One eager step first (loads the kernels), then capture: the captured step is not run, and every
            # replay reads seq_len / num_sealed on the device.
            kv_write.append_decode(cache, k_in, v_in, case.layer_idx)
            with torch.cuda.graph(graph):
                kv_write.append_decode(cache, k_in, v_in, case.layer_idx)
        else:
            graph.replay()
        for b, state in enumerate(states):
            state.append(k_steps[b:b + 1, :, t:t + 1], v_steps[b:b + 1, :, t:t + 1])
    torch.cuda.synchronize()
    assert_same_state(case, cache, reference_paged(states), "graph replays")


# -- bad input: rejected with the argument's name before any kernel runs -----------------------------------------


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise AssertionError("reached the kernel library")
    monkeypatch.setattr(kv_write, "_functions", fail)


def small_cache(device: str, dtype: str = "float16") -> tuple[Case, PagedLayer]:
    case = Case("ott", lengths=(5, 9), dtype=dtype)
    states = reference_states(case, *make_tokens(case, 9, seed=0))
    paged = to_paged(states, num_pages=4)
    return case, dataclasses.replace(paged, **{f.name: getattr(paged, f.name).to(device)
                                                for f in dataclasses.fields(paged) if f.name != "config"})


def test_rejects_cpu_tensors(no_kernel: None) -> None:
    case, cache = small_cache("cpu")
    k = torch.zeros(2, 2, 9, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="tail_k must be a CUDA tensor"):
        kv_write.quantize_prefill(cache, k, k, torch.tensor([5, 9], dtype=torch.int32), 3)
    with pytest.raises(ValueError, match="tail_k must be a CUDA tensor"):
        kv_write.append_decode(cache, k[:, :, :1], k[:, :, :1], 3)


def test_rejects_a_cache_of_another_dtype_than_the_config(no_kernel: None) -> None:
    case, cache = small_cache("cpu")
    cache = dataclasses.replace(cache, config=cache.config.replace(dtype="bfloat16"))
    with pytest.raises(TypeError, match="tail_k"):
        kv_write.append_decode(cache, cache.tail_k[:, :, :1], cache.tail_v[:, :, :1], 3)


def bad_calls(cache: PagedLayer) -> list[tuple[str, type, str, dict]]:
    """(what is wrong, exception, message pattern, overrides of the prefill arguments)."""
    k = torch.zeros(2, 2, 9, 64, dtype=torch.float16, device="cuda")
    lengths = torch.tensor([5, 9], dtype=torch.int32, device="cuda")
    return [
        ("k dtype", TypeError, "k must have dtype torch.float16", {"k": k.float()}),
        ("k shape", ValueError, r"k must have shape \(2, 2, max_length, 64\)", {"k": k[:1]}),
        ("v shape", ValueError, "v must have shape", {"v": k[:, :, :5]}),
        ("v layout", ValueError, "v must be contiguous", {"v": k.transpose(2, 3).contiguous().transpose(2, 3)}),
        ("lengths dtype", TypeError, "lengths must have dtype torch.int32", {"lengths": lengths.long()}),
        ("lengths device", ValueError, "lengths must be a CUDA tensor", {"lengths": lengths.cpu()}),
        ("k_codes shape", ValueError, "k_codes must have shape",
         {"cache": dataclasses.replace(cache, k_codes=cache.k_codes[..., :1].contiguous())}),
        ("block_table dtype", TypeError, "block_table must have dtype torch.int32",
         {"cache": dataclasses.replace(cache, block_table=cache.block_table.long())}),
        ("retained_k shape", ValueError, "retained_k must have shape",
         {"cache": dataclasses.replace(cache, retained_k=cache.retained_k[:, :, :1].contiguous())}),
    ]


@pytest.mark.gpu
def test_rejects_bad_arguments(no_kernel: None) -> None:
    _, cache = small_cache("cuda")
    for _, error, pattern, overrides in bad_calls(cache):
        args = {"cache": cache, "k": torch.zeros(2, 2, 9, 64, dtype=torch.float16, device="cuda"),
                "lengths": torch.tensor([5, 9], dtype=torch.int32, device="cuda")}
        args["v"] = args["k"]
        args.update(overrides)
        with pytest.raises(error, match=pattern):
            kv_write.quantize_prefill(args["cache"], args["k"], args["v"], args["lengths"], 3)
    with pytest.raises(ValueError, match="k_new must have shape"):
        kv_write.append_decode(cache, cache.tail_k[:, :, :2].contiguous(), cache.tail_v[:, :, :1].contiguous(), 3)


@pytest.mark.gpu
def test_library_reports_errors_with_their_message() -> None:
    # A policy that does not fit the geometry gets past the Python checks; the C++ check names the problem.
    _, cache = small_cache("cuda")
    tensors, policy, group_size, axis = kv_write._op_args(cache, 3)
    policy[2] = 7  # window: only read by LogQuant policies ...
    policy[0] = 2  # ... so switch to LogQuant: W = 7 is not a multiple of G
    k = torch.zeros(2, 2, 1, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(RuntimeError, match="window must be a multiple of group size 32"):
        torch.ops.logquant.append_decode(*tensors, k, k, policy, group_size, axis)


# -- the ctypes mirrors match the C++ structs -------------------------------------------------------------------


def struct_fields(header: str, struct: str) -> list[str]:
    body = re.search(rf"struct {struct}\s*\{{(.*?)\n\}};", (REPO / header).read_text(), re.S).group(1)
    return re.findall(r"^\s*[\w:<>]+\*?\s*(?:const\*\s*)?(\w+)\{", body, re.M)


@pytest.mark.parametrize("header,struct,mirror", [
    ("cpp/include/logquant/kvCacheView.h", "KvGeometry", _cache_view.KvGeometry),
    ("cpp/include/logquant/kvCacheView.h", "KvCacheView", _cache_view.KvCacheView),
    ("cpp/include/logquant/policyParams.h", "PolicyParams", _cache_view.PolicyParams),
])
def test_ctypes_mirrors_match_the_headers(header: str, struct: str, mirror: type[ctypes.Structure]) -> None:
    cpp = struct_fields(header, struct)
    if struct == "KvCacheView":
        cpp = ["geometry"] + cpp  # `KvGeometry geometry;` has no initializer
    assert [name for name, _ in mirror._fields_] == cpp
    # All int32 / enum : int32_t fields, then 8-byte pointers: no padding anywhere.
    assert ctypes.sizeof(mirror) == {"KvGeometry": 40, "KvCacheView": 40 + 13 * 8, "PolicyParams": 28}[struct]


def test_dtype_ids_match_the_header() -> None:
    text = (REPO / "cpp/include/logquant/kvCacheView.h").read_text()
    ids = {name: int(value) for name, value in re.findall(r"k(FLOAT16|BFLOAT16) = (\d+)", text)}
    assert ids == {"FLOAT16": _cache_view.DTYPE_IDS[torch.float16], "BFLOAT16": _cache_view.DTYPE_IDS[torch.bfloat16]}

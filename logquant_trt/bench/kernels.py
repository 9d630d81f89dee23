# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt bench kernels`: the fused decode-attention kernel vs torch SDPA fp16, and vs copy bandwidth.

For each shape the same run measures (CUDA events, warm-up, L2 flushed before every timed call, median and std
of N calls): our kernel on a synthesized paged cache (the layout is all the kernel sees, so codes, scales, masks
and retained entries are drawn at random with the policy's geometry and densities), torch SDPA on contiguous fp16
K/V of the same length (q of length 1, enable_gqa), and a device-to-device copy. Bytes are the bytes our kernel
reads (docs/kv_format.md §7 plus the tail, retained slots, block table, q and out); bandwidth is reported as a
fraction of the copy's (bytes read + bytes written per second).

The copy rate is that of a 1 GiB copy. Each shape also times a copy that moves as many bytes as our kernel reads
(half read, half written), flushed the same way: it pays the same launch and drain, so our time against it shows
what our kernel adds beyond moving its bytes.

The L2 is flushed by *reading* a buffer larger than it: a write flush (memset) would leave tens of MB of dirty
lines whose write-back lands inside the next timed call. Each call is also timed back to back (20 launches between
two events, no flush), which shows how much of a small shape's time is launch overhead.

JSON goes to stdout; --output_path also writes it to a file and draws a PNG beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from logquant_trt.config import LogQuantConfig
from logquant_trt.format import PAGE_TENSOR_NAMES
from logquant_trt.reference.paged import pack_mask_bits

MODELS = {  # name: (query heads, KV heads, head_dim)
    "llama3-8b": (32, 8, 128),
    "smollm2-135m": (9, 3, 64),
}
# (batch, tokens): 1k..128k tokens, batch 1..64, at most 1M cached tokens per layer.
GRID = {
    "llama3-8b": [(1, 1024), (1, 32768), (1, 131072), (8, 1024), (8, 4096), (8, 32768), (8, 131072),
                  (64, 1024), (64, 4096), (64, 16384)],
    "smollm2-135m": [(1, 32768), (8, 4096), (8, 32768), (64, 4096), (64, 16384)],
}
QUICK_GRID = {"llama3-8b": [(8, 32768)], "smollm2-135m": [(8, 4096)]}
POLICIES = ("kivi", "logquant_ott")
GROUP_SIZE = 64
FLUSH_BYTES = 256 << 20  # > the H100's 50 MB L2


@dataclasses.dataclass
class Result:
    model: str
    policy: str
    batch: int
    seq_len: int
    ours_us: float
    ours_std_us: float
    ours_back_to_back_us: float
    sdpa_us: float
    sdpa_std_us: float
    speedup: float
    bytes_read: int
    bandwidth_tbps: float
    fraction_of_copy: float
    same_bytes_copy_us: float  #: a copy moving bytes_read bytes (half read, half written)
    fraction_of_same_bytes_copy: float  #: same_bytes_copy_us / ours_us


def time_us(fn: Callable[[], Any], iters: int, warmup: int, flush: torch.Tensor) -> tuple[float, float]:
    """Median and std (microseconds) of `iters` calls, each timed alone with the L2 flushed first.

    The flush is still running on the GPU while the host enqueues the call, so launch overhead below the
    flush's ~80 us is not timed.
    """
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        flush.sum()  # read-only: evicts without leaving dirty lines
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times), statistics.pstdev(times)


def back_to_back_us(fn: Callable[[], Any], calls: int = 20) -> float:
    """Mean time of `calls` launches enqueued back to back (no flush, no sync in between)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / calls


def copy_us(nbytes: int, iters: int, warmup: int, flush: torch.Tensor) -> float:
    """Median time of a device-to-device copy of nbytes."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    return time_us(lambda: dst.copy_(src), iters, warmup, flush)[0]


def copy_bandwidth(iters: int, warmup: int, flush: torch.Tensor) -> float:
    """Device-to-device copy of 1 GiB, in TB/s of bytes read + written."""
    return 2 * (1 << 30) / (copy_us(1 << 30, iters, warmup, flush) * 1e-6) / 1e12


def paged_layer_read_bytes(layer: Any) -> int:
    """Bytes one decode launch reads from a PagedLayer-shaped layer at its current state (docs/kv_format.md §7):
    sealed pages' codes, params and masks with their block-table entries, tail tokens, retained positions,
    valid retained entries, and the two lengths of each row."""
    g = layer.config.group_size
    page = sum(t[0].numel() * t.element_size() for t in (getattr(layer, name) for name in PAGE_TENSOR_NAMES))
    rows, heads, slots = layer.retained_pos.shape
    d, e = layer.tail_k.shape[3], layer.tail_k.element_size()
    sealed = int(layer.num_sealed.long().sum())
    tail = int((layer.seq_len.long() - layer.num_sealed.long() * g).sum())
    valid = int((layer.retained_pos >= 0).sum())
    return (sealed * (page + 4) + tail * heads * 2 * d * e + rows * heads * slots * 4 + valid * 2 * d * e
            + rows * 8)


def policy_config(policy: str) -> LogQuantConfig:
    return LogQuantConfig(policy=policy, group_size=GROUP_SIZE, residual=64, window=64, pool_size=3,
                          extra_pool_size=32, pool_skip_layers=0, key_axis="channel", dtype="float16")


def synthesize(config: LogQuantConfig, batch: int, length: int, heads: int, head_dim: int,
               gen: torch.Generator) -> tuple[SimpleNamespace, int]:
    """A PagedLayer-shaped cache of `batch` sequences of `length` tokens, and the bytes our kernel reads.

    Geometry follows the policy's steady state: KIVI keeps R..R+G-1 tail tokens; LogQuant+OTT keeps W..W+G-1
    in the tail and W sparse positions (some shadowed by the pool), a pool of 3 and a half-full extra pool.
    """
    g, d, dev = config.group_size, head_dim, "cuda"
    window = config.window if config.uses_log_window else config.residual
    sealed = max(0, (length - window) // g)
    num_pages = max(1, batch * sealed)
    c = config.channel_group(d)

    def params(*shape: int) -> torch.Tensor:
        scale = torch.rand(*shape, generator=gen) * 0.4 + 0.05
        low = -1.5 * scale - torch.rand(*shape, generator=gen) * 0.1
        return torch.stack([scale, low], -1).half().to(dev)

    device_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(1 << 30, (1,), generator=gen)))

    def codes(*shape: int) -> torch.Tensor:  # the bulk of the cache: drawn on the GPU
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=device_gen, device=dev)

    block_table = torch.full((batch, max(1, sealed)), -1, dtype=torch.int32)
    block_table[:, :sealed] = torch.randperm(num_pages, generator=gen)[:batch * sealed].view(batch, sealed)
    slots = config.retained_slots()
    retained_pos = torch.full((batch, heads, slots), -1, dtype=torch.int32)
    dup = torch.zeros(num_pages, heads, g, dtype=torch.bool)
    if config.retained_capacity() and sealed:
        regions = config.retained_regions()
        quantized = sealed * g
        for b in range(batch):
            for h in range(heads):
                picks = torch.randperm(quantized, generator=gen)
                sparse = picks[:min(regions["sparse"], quantized)].sort().values
                pool = picks[len(sparse):len(sparse) + min(regions["pool"], quantized - len(sparse))].sort().values
                extra_n = min(regions["extra"] // 2, quantized - len(sparse) - len(pool))
                extra = picks[len(sparse) + len(pool):len(sparse) + len(pool) + extra_n].sort().values
                # Shadow a third of the sparse set: those positions are read from the pool region instead.
                shadowed = sparse[::3]
                entries = [(regions["sinks"], sparse, set(shadowed.tolist())),
                           (regions["sinks"] + regions["sparse"], torch.cat([pool, shadowed]).sort().values, set()),
                           (regions["sinks"] + regions["sparse"] + regions["pool"], extra, set())]
                for offset, positions, hidden in entries:
                    for i, p in enumerate(positions.tolist()):
                        if offset + i >= slots:
                            break
                        retained_pos[b, h, offset + i] = -p - 2 if p in hidden else p
                        if p not in hidden:
                            dup[block_table[b, p // g], h, p % g] = True
    dup_mask = pack_mask_bits(dup)

    t_cap = config.tail_capacity()
    cache = SimpleNamespace(
        config=config,
        k_codes=codes(num_pages, heads, d, g // 4), k_params=params(num_pages, heads, d),
        v_codes=codes(num_pages, heads, g, d // 4), v_params=params(num_pages, heads, g, d // c),
        dup_mask=dup_mask.to(dev), block_table=block_table.to(dev),
        num_sealed=torch.full((batch,), sealed, dtype=torch.int32, device=dev),
        seq_len=torch.full((batch,), length, dtype=torch.int32, device=dev),
        tail_k=torch.randn(batch, heads, t_cap, d, generator=gen).half().to(dev),
        tail_v=torch.randn(batch, heads, t_cap, d, generator=gen).half().to(dev),
        retained_pos=retained_pos.to(dev),
        retained_k=torch.randn(batch, heads, slots, d, generator=gen).half().to(dev),
        retained_v=torch.randn(batch, heads, slots, d, generator=gen).half().to(dev),
    )
    return cache, paged_layer_read_bytes(cache)


def bench_shape(model: str, batch: int, length: int, args: argparse.Namespace, flush: torch.Tensor,
                copy_tbps: float) -> list[Result]:
    from logquant_trt.ops.decode_attention import DecodeAttentionRunner

    hq, heads, d = MODELS[model]
    gen = torch.Generator().manual_seed(batch * 1_000_003 + length)
    q = torch.randn(batch, hq, 1, d, generator=gen).half().cuda()
    qo_bytes = 2 * q.numel() * q.element_size()
    k = torch.randn(batch, heads, length, d, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # noqa: E731
    sdpa_us, sdpa_std = time_us(sdpa, args.iters, args.warmup, flush)
    del k, v
    results = []
    for policy in args.policies:
        cache, nbytes = synthesize(policy_config(policy), batch, length, heads, d, gen)
        nbytes += qo_bytes
        runner = DecodeAttentionRunner(cache, hq, 1)
        out = torch.empty_like(q)
        ours_us, ours_std = time_us(lambda: runner.run(q, out), args.iters, args.warmup, flush)
        ours_b2b = back_to_back_us(lambda: runner.run(q, out))
        tbps = nbytes / (ours_us * 1e-6) / 1e12
        del cache, runner
        same_copy_us = copy_us(nbytes // 2, args.iters, args.warmup, flush)
        results.append(Result(model, policy, batch, length, ours_us, ours_std, ours_b2b, sdpa_us, sdpa_std,
                              sdpa_us / ours_us, nbytes, tbps, tbps / copy_tbps, same_copy_us,
                              same_copy_us / ours_us))
    torch.cuda.empty_cache()
    return results


def plot(results: list[Result], copy_tbps: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_bw) = plt.subplots(1, 2, figsize=(13, 5))
    keys = sorted({(r.model, r.policy, r.batch) for r in results})
    for model, policy, batch in keys:
        rows = sorted((r for r in results if (r.model, r.policy, r.batch) == (model, policy, batch)),
                      key=lambda r: r.seq_len)
        label = f"{model} {policy} B={batch}"
        style = "-o" if policy == "kivi" else "--s"
        ax_speed.plot([r.seq_len for r in rows], [r.speedup for r in rows], style, label=label)
        ax_bw.plot([r.seq_len for r in rows], [r.fraction_of_copy for r in rows], style, label=label)
    for ax in (ax_speed, ax_bw):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cached tokens per sequence")
        ax.grid(True, alpha=0.3)
    ax_speed.axhline(5, color="k", lw=0.8, ls=":")
    ax_speed.set_ylabel("speedup vs torch SDPA fp16")
    ax_bw.axhline(0.85, color="k", lw=0.8, ls=":")
    ax_bw.set_ylabel(f"bytes read / time, fraction of copy ({copy_tbps:.2f} TB/s)")
    ax_bw.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logquant-trt bench kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--quick", action="store_true", help="one shape per model (B=8, L=32k / 4k)")
    parser.add_argument("--iters", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--output_path", type=Path, default=None,
                        help="also write the JSON here and a PNG plot beside it (same name, .png)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench kernels needs a CUDA GPU", file=sys.stderr)
        return 1
    flush = torch.zeros(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    copy_tbps = copy_bandwidth(args.iters, args.warmup, flush)
    grid = QUICK_GRID if args.quick else GRID
    results = []
    for model in args.models:
        for batch, length in grid[model]:
            for r in bench_shape(model, batch, length, args, flush, copy_tbps):
                results.append(r)
                print(f"{model} B={batch} L={length} {r.policy}: ours {r.ours_us:.1f} us "
                      f"(back to back {r.ours_back_to_back_us:.1f}), sdpa {r.sdpa_us:.1f} us, "
                      f"x{r.speedup:.2f}, {r.fraction_of_copy:.0%} of copy "
                      f"(a copy of the same bytes: {r.same_bytes_copy_us:.1f} us)", file=sys.stderr)
    report = {
        "device": torch.cuda.get_device_name(),
        "copy_bandwidth_tbps": copy_tbps,
        "group_size": GROUP_SIZE,
        "key_axis": "channel",
        "dtype": "float16",
        "timing": f"median of {args.iters} calls after {args.warmup} warm-up calls, L2 flushed (read) before each",
        "results": [dataclasses.asdict(r) for r in results],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output_path is not None:
        args.output_path.parent.mkdir(parents=True, exist_ok=True)
        args.output_path.write_text(text + "\n")
        plot(results, copy_tbps, args.output_path.with_suffix(".png"),
             f"decode attention on {report['device']} (G={GROUP_SIZE}, fp16, channel-axis keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt bench e2e`: concurrent sequences and decode tokens/s of a Llama-3.1-8B-shaped model in one
GPU memory budget, fp16 cache vs every 2-bit policy, with HF transformers' eager StaticCache decode beside them.

One run, one device:
1. copy bandwidth (bench.kernels.copy_bandwidth), then the runtime's DecoderModel with random fp16 weights;
2. budget = total device memory - bytes allocated after the weights - a stated reserve (CUDA context,
   cuBLAS workspaces, CUDA-graph pools, decode workspaces, activations);
3. per context and policy: rows = floor(budget / (bytes_per_row + pages_for(max_seq_len) * bytes_per_page))
   from the cache class's own sizing methods (max_seq_len = context + every decode step the phase runs), a
   cache of that many rows is allocated (so it provably fits), filled synthetically as if every row held
   `context` tokens (runtime.cache.synthetic: prefilling ~90 x 32k tokens would take minutes), and decode
   steps are replayed through the runtime's DecodeStep (one CUDA graph per step) and timed with CUDA events;
   should the planned rows not fit after all (a reserve smaller than the step's working set), the phase retries
   with ~3% fewer rows and reports planned_rows and oom_rows beside rows;
4. bandwidth model per phase = (weight bytes read + KV bytes read per step) / copy bandwidth; achieved
   fraction = model time / measured step time;
5. HF LlamaForCausalLM (eager attention, StaticCache) at the largest context, with the fp16 phase's batch
   (smaller on OOM), after the runtime's model and caches are freed.

A decode step here is the graph replay plus a device-side position increment: no sampling and no host
bookkeeping (the engine adds those). JSON goes to stdout (and --output-path, rewritten after every phase so
that a cut-off run leaves what it measured) with a PNG beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from logquant_trt.bench.hf_baseline import sync
from logquant_trt.bench.kernels import paged_layer_read_bytes
from logquant_trt.bench.oom import empty_cache, retry_with_fewer_rows
from logquant_trt.config import LogQuantConfig, Policy

POLICIES = tuple(p.value for p in Policy)
CONTEXTS = (8192, 32768)
GIB = 1 << 30

# Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json), built in code: no hub access.
LLAMA31_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
    tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
)


def llama31_8b_config(**overrides: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**{**LLAMA31_8B, **overrides})


def cache_config(policy: str) -> LogQuantConfig:
    """G = 64, R = W = 64, pool 3 + extra 32 (layers 0-1 without pool): LogQuantConfig's defaults."""
    return LogQuantConfig(policy=policy, group_size=64, residual=64, window=64, dtype="float16")


# -- capacity ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    policy: str
    context: int
    max_seq_len: int
    backend: str
    bytes_per_row: int
    bytes_per_page: int
    pages_per_row: int
    rows: int

    @property
    def bytes_per_sequence(self) -> int:
        return self.bytes_per_row + self.pages_per_row * self.bytes_per_page

    @property
    def num_pages(self) -> int:
        return self.rows * self.pages_per_row

    @property
    def cache_bytes(self) -> int:
        return self.rows * self.bytes_per_sequence


def plan_capacity(policy: str, shape: Any, context: int, max_seq_len: int, budget: int) -> tuple[Plan, type]:
    from logquant_trt.runtime.cache import default_backend

    config = cache_config(policy)
    # The GPU backends whatever the device (the reference backend has no fixed footprint to plan with).
    backend = default_backend(config, torch.device("cuda"))
    cls = backend.load()
    plan = Plan(policy, context, max_seq_len, backend.name.lower(), cls.bytes_per_row(config, shape, max_seq_len),
                cls.bytes_per_page(config, shape), cls.pages_for(config, max_seq_len), rows=0)
    plan.rows = max(budget, 0) // plan.bytes_per_sequence
    return plan, cls


# -- bytes a decode step reads ---------------------------------------------------------------------------------


def kv_read_bytes(cache: Any) -> int:
    """KV bytes one decode step reads at the cache's current state (docs/kv_format.md §7 for the paged layout:
    sealed pages' codes, params and masks, block-table entries, tail tokens, retained positions and valid
    retained entries; every cached token's K and V for the fp16 cache)."""
    if hasattr(cache, "layers"):
        return sum(paged_layer_read_bytes(layer) for layer in cache.layers)
    layers, _, heads, _, d = cache.k.shape  # head-major [layers, rows, H, L, D]
    return int(cache.lengths.long().sum()) * layers * heads * d * 2 * cache.k.element_size()


def weight_read_bytes(model: Any, rows: int) -> int:
    """Weight bytes one decode step reads: every matrix, but only `rows` rows of an untied embedding."""
    total = model.weight_bytes()
    embed = model.embed
    if model.lm_head.data_ptr() != embed.data_ptr():
        total += (rows * embed.shape[1] - embed.numel()) * embed.element_size()
    return total


# -- one phase ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    policy: str
    context: int
    backend: str
    rows: int
    max_seq_len: int
    cache_bytes: int
    cache_gib: float
    bytes_per_sequence: int
    steps: int
    step_ms_median: float
    step_ms_mean: float
    step_ms_std: float
    tokens_per_s: float
    weight_bytes_read: int
    kv_bytes_read: int
    model_ms: float
    fraction_of_model: float
    first_step_s: float
    peak_reserved_gib: float
    working_set_gib: float
    logits_finite: bool
    planned_rows: int = 0
    oom_rows: list[int] = dataclasses.field(default_factory=list)
    rows_vs_fp16: float | None = None
    tokens_per_s_vs_fp16: float | None = None
    error: str | None = None
    error_note: str | None = None


def advance(step: Any) -> None:
    """One genuine decode step: the next position of every row, then the replay."""
    step.positions.add_(1)
    step.run()


def time_decode(step: Any, steps: int) -> list[float]:
    """Milliseconds of each of `steps` consecutive decode steps."""
    device = step.tokens.device
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            advance(step)
            times.append((time.perf_counter() - start) * 1e3)
        return times
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for i in range(steps):
        advance(step)
        events[i + 1].record()
    events[-1].synchronize()
    return [events[i].elapsed_time(events[i + 1]) for i in range(steps)]


def run_phase(model: Any, plan: Plan, cache_cls: type, steps: int, warmup: int, copy_tbps: float,
              seed: int) -> Result:
    """Allocate `plan.rows` rows, synthesize `plan.context` tokens in each, time decode steps."""
    from logquant_trt.runtime.cache.synthetic import synthesize
    from logquant_trt.runtime.decode_step import DecodeStep

    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    cache = cache_cls(cache_config(plan.policy), model.shape, plan.rows, plan.max_seq_len, plan.num_pages, device)
    synthesize(cache, plan.context, torch.Generator().manual_seed(seed))
    step = DecodeStep(model, cache, use_cuda_graph=True)
    generator = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(model.shape.vocab_size, (plan.rows,), generator=generator).tolist()
    step.set_inputs(list(range(plan.rows)), tokens, [plan.context] * plan.rows)
    start = time.perf_counter()
    step.run()  # eager warm-up step, then capture
    sync(device)
    first_step_s = time.perf_counter() - start
    for _ in range(warmup):
        advance(step)
    kv_before = kv_read_bytes(cache)
    times = time_decode(step, steps)
    kv_after = kv_read_bytes(cache)
    logits = step.run()  # one more step (max_seq_len leaves room for it), for a finiteness check
    finite = bool(torch.isfinite(logits).all())
    kv = (kv_before + kv_after) // 2
    weights = weight_read_bytes(model, plan.rows)
    median = statistics.median(times)
    model_ms = (weights + kv) / (copy_tbps * 1e12) * 1e3 if copy_tbps > 0 else float("nan")
    nbytes = cache.nbytes()
    peak, working_set = 0.0, 0.0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_reserved(device) / GIB
        working_set = (torch.cuda.max_memory_allocated(device) - before - nbytes) / GIB
    del step, cache, logits
    return Result(plan.policy, plan.context, plan.backend, plan.rows, plan.max_seq_len, nbytes, nbytes / GIB,
                  plan.bytes_per_sequence, steps, median, statistics.fmean(times), statistics.pstdev(times),
                  plan.rows / (median * 1e-3), weights, kv, model_ms, model_ms / median, first_step_s, peak,
                  working_set, finite)


def run_fitting(model: Any, plan: Plan, cache_cls: type, args: argparse.Namespace, copy_tbps: float) -> Result:
    """run_phase at the planned rows; if that runs out of device memory (the reserve was too small for the step's
    working set), retry with ~3% fewer rows, and record every batch that did not fit."""

    def attempt(rows: int) -> Result:
        return run_phase(model, dataclasses.replace(plan, rows=rows), cache_cls, args.steps, args.warmup_steps,
                         copy_tbps, args.seed)

    fitted = retry_with_fewer_rows(attempt, plan.rows, lambda rows: max(1, -(-rows * 3 // 100)), model.device,
                                   args.max_oom_retries)
    if fitted.result is None:
        return failed(plan, f"out of memory at rows {fitted.oom_rows}: {fitted.first_error}", fitted.oom_rows)
    result = fitted.result
    result.planned_rows, result.oom_rows = plan.rows, fitted.oom_rows
    if fitted.oom_rows:
        result.error_note = f"planned rows did not fit: {fitted.first_error}"
    return result


def failed(plan: Plan, error: str, oom_rows: list[int] | None = None) -> Result:
    nan = float("nan")
    return Result(plan.policy, plan.context, plan.backend, plan.rows, plan.max_seq_len, plan.cache_bytes,
                  plan.cache_bytes / GIB, plan.bytes_per_sequence, steps=0, step_ms_median=nan, step_ms_mean=nan,
                  step_ms_std=nan, tokens_per_s=nan, weight_bytes_read=0, kv_bytes_read=0, model_ms=nan,
                  fraction_of_model=nan, first_step_s=nan, peak_reserved_gib=nan, working_set_gib=nan,
                  logits_finite=False, planned_rows=plan.rows, oom_rows=oom_rows or [], error=error)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, so that the output is strict JSON."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def add_ratios(results: list[Result]) -> None:
    base = {r.context: r for r in results if r.policy == "fp16" and r.error is None}
    for r in results:
        b = base.get(r.context)
        if b is not None and r.error is None and b.rows and b.tokens_per_s:
            r.rows_vs_fp16 = r.rows / b.rows
            r.tokens_per_s_vs_fp16 = r.tokens_per_s / b.tokens_per_s


def check_targets(results: list[Result], hf: dict | None) -> dict[str, Any]:
    """The issue's targets: fp16 >= 80% of its bandwidth model; at 32k, >= 4x rows and >= 3x tokens/s."""
    ok = [r for r in results if r.error is None]
    largest = max((r.context for r in ok), default=None)
    targets: dict[str, Any] = {
        "fp16_fraction_of_model_ge_0.8": {str(r.context): {"value": r.fraction_of_model,
                                                           "met": r.fraction_of_model >= 0.8}
                                          for r in ok if r.policy == "fp16"},
    }
    if largest is not None:
        quant = [r for r in ok if r.context == largest and r.policy != "fp16" and r.rows_vs_fp16 is not None]
        targets["context"] = largest
        targets["rows_ge_4x_fp16"] = {r.policy: {"value": r.rows_vs_fp16, "met": r.rows_vs_fp16 >= 4}
                                      for r in quant}
        targets["tokens_per_s_ge_3x_fp16"] = {r.policy: {"value": r.tokens_per_s_vs_fp16,
                                                         "met": r.tokens_per_s_vs_fp16 >= 3} for r in quant}
        fp16 = next((r for r in ok if r.context == largest and r.policy == "fp16"), None)
        if hf and hf.get("tokens_per_s") and fp16 is not None:
            targets["fp16_runtime_vs_hf_eager_tokens_per_s"] = fp16.tokens_per_s / hf["tokens_per_s"]
    return targets


# -- plot -----------------------------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in report["results"] if r["error"] is None]
    contexts = sorted({r["context"] for r in results})
    policies = [p for p in POLICIES if any(r["policy"] == p for r in results)]
    hf = report.get("hf_baseline")
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / (len(policies) + (1 if hf and hf.get("rows") else 0))
    for ax, key, ratio, label in ((axes[0], "rows", "rows_vs_fp16", "concurrent sequences"),
                                  (axes[1], "tokens_per_s", "tokens_per_s_vs_fp16", "decode tokens/s")):
        for i, policy in enumerate(policies):
            xs, ys, notes = [], [], []
            for j, context in enumerate(contexts):
                r = next((r for r in results if r["policy"] == policy and r["context"] == context), None)
                if r is not None:
                    xs.append(j + (i - (len(policies) - 1) / 2) * width)
                    ys.append(r[key])
                    notes.append(f"{r[key]:.0f}" + (f"\n{r[ratio]:.1f}x" if r[ratio] and policy != "fp16" else ""))
            bars = ax.bar(xs, ys, width, label=policy)
            for bar, note in zip(bars, notes):
                ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                            fontsize=7)
        if hf and hf.get("rows") and hf["context"] in contexts:
            j = contexts.index(hf["context"])
            x = j + (len(policies) - (len(policies) - 1) / 2) * width
            value = hf["rows"] if key == "rows" else hf["tokens_per_s"]
            bar = ax.bar([x], [value], width, color="grey", hatch="//", label="HF eager StaticCache")[0]
            ax.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(contexts)), [f"{c // 1024}k context" if c % 1024 == 0 else f"{c} context"
                                             for c in contexts])
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Llama-3.1-8B shape, random fp16 weights, {report['device']}: cache budget "
                 f"{report['budget_gib']:.1f} GiB, copy {report['copy_bandwidth_tbps']:.2f} TB/s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- driver ---------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, model_config: Any, device: torch.device) -> dict[str, Any]:
    from logquant_trt.runtime.model import DecoderModel, DecoderShape

    shape = DecoderShape.from_hf_config(model_config)
    if device.type == "cuda":
        from logquant_trt.bench.kernels import FLUSH_BYTES, copy_bandwidth

        flush = torch.zeros(FLUSH_BYTES // 4, dtype=torch.int32, device=device)
        copy_tbps = copy_bandwidth(20, 5, flush)
        del flush
        empty_cache(device)
        total = torch.cuda.get_device_properties(device).total_memory
        device_name = torch.cuda.get_device_name(device)
    else:
        copy_tbps, total, device_name = args.cpu_copy_tbps, args.cpu_total_bytes, "cpu"
    max_seq_lens = {c: c + 1 + args.warmup_steps + args.steps + 1 for c in args.contexts}
    max_positions = max(max_seq_lens.values())
    if max_positions > shape.max_positions:
        raise ValueError(f"context + steps = {max_positions} exceeds the model's {shape.max_positions} positions")
    model = DecoderModel.random(model_config, torch.float16, device, seed=args.seed, max_positions=max_positions)
    weight_bytes = model.weight_bytes()
    allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else weight_bytes
    reserve = int(args.reserve_gib * GIB)
    budget = total - allocated - reserve
    report: dict[str, Any] = {
        "device": device_name,
        "torch": torch.__version__,
        "copy_bandwidth_tbps": copy_tbps,
        "total_memory_bytes": total,
        "weights_and_tables_bytes": allocated,
        "weight_bytes": weight_bytes,
        "reserve_bytes": reserve,
        "budget_bytes": budget,
        "budget_gib": budget / GIB,
        "model": {**dataclasses.asdict(shape), "rope": model_config.rope_parameters, "dtype": str(model.dtype)},
        "cache_configs": {p: cache_config(p).to_dict() for p in args.policies},
        "fill": ("synthetic (runtime.cache.synthetic): every row holds `context` tokens of random codes/K/V in the "
                 "policy's steady-state layout; no prefill was run"),
        "timing": (f"median of {args.steps} decode steps (CUDA-graph replays + position increment, CUDA events), "
                   f"after 1 eager step + capture and {args.warmup_steps} warm-up replays; no sampling"),
        "bandwidth_model": "(weight bytes read + KV bytes read per step) / copy bandwidth",
        "results": [],
        "hf_baseline": None,
    }
    results: list[Result] = []

    def emit() -> None:
        add_ratios(results)
        report["results"] = [_json_safe(dataclasses.asdict(r)) for r in results]
        report["targets"] = _json_safe(check_targets(results, report["hf_baseline"]))
        report["hf_baseline"] = _json_safe(report["hf_baseline"])
        if args.output_path is not None:
            args.output_path.parent.mkdir(parents=True, exist_ok=True)
            args.output_path.write_text(json.dumps(report, indent=2) + "\n")

    for context in args.contexts:
        for policy in args.policies:
            plan, cls = plan_capacity(policy, shape, context, max_seq_lens[context], budget)
            try:
                if plan.rows < 1:
                    raise ValueError(f"not one row fits: {plan.bytes_per_sequence} bytes per sequence, "
                                     f"budget {budget}")
                result = run_fitting(model, plan, cls, args, copy_tbps)
            except Exception as error:  # noqa: BLE001 - record the failure, free memory, go on
                result = failed(plan, f"{type(error).__name__}: {error}")
            finally:
                empty_cache(device)
            results.append(result)
            print(f"{context:>6} {policy:<13} rows {result.rows:>4} (planned {plan.rows}) cache "
                  f"{result.cache_gib:5.1f} GiB  step {result.step_ms_median:7.2f} ms  "
                  f"{result.tokens_per_s:8.1f} tok/s  "
                  f"{result.fraction_of_model:.0%} of model" + (f"  ERROR {result.error}" if result.error else ""),
                  file=sys.stderr)
            emit()
    del model
    empty_cache(device)
    if not args.skip_hf:
        from logquant_trt.bench.hf_baseline import run_hf_baseline

        context = max(args.contexts)
        # parse_args always runs fp16, whose phase (or its failure) reports the planned rows.
        rows = args.hf_rows or next(r.rows for r in results if r.policy == "fp16" and r.context == context)
        try:
            hf = dataclasses.asdict(run_hf_baseline(model_config, rows, context, args.hf_steps, args.seed,
                                                    torch.float16, device))
        except Exception as error:  # noqa: BLE001
            hf = {"context": context, "requested_rows": rows, "rows": 0, "error": f"{type(error).__name__}: {error}"}
        report["hf_baseline"] = hf
        error = f"  ERROR {hf['error']}" if hf.get("error") else ""
        print(f"{context:>6} HF eager      rows {hf.get('rows')} (asked {rows}) "
              f"{hf.get('tokens_per_s') or float('nan'):.1f} tok/s{error}", file=sys.stderr)
    emit()
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="logquant-trt bench e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=None, help=f"default {' '.join(map(str, CONTEXTS))}")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=None, help="default: all")
    parser.add_argument("--steps", type=int, default=None, help="timed decode steps per phase (default 16)")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--reserve-gib", type=float, default=4.0,
                        help="device memory kept out of the cache budget (context, workspaces, graphs, activations)")
    parser.add_argument("--max-oom-retries", type=int, default=6,
                        help="phases that run out of memory retry with ~3%% fewer rows this many times")
    parser.add_argument("--skip-hf", action="store_true", help="skip the HF transformers baseline")
    parser.add_argument("--hf-steps", type=int, default=None, help="timed HF decode steps (default 3)")
    parser.add_argument("--hf-rows", type=int, default=None, help="HF batch (default: the fp16 phase's rows)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: context 4096, fp16 and logquant_ott, 4 steps, HF at batch 8 for 1 step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-path", "--output_path", dest="output_path", type=Path, default=None,
                        help="also write the JSON here and a PNG beside it (same name, .png)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.contexts = args.contexts or ([4096] if quick else list(CONTEXTS))
    args.policies = args.policies or (["fp16", "logquant_ott"] if quick else list(POLICIES))
    args.steps = args.steps or (4 if quick else 16)
    args.hf_steps = args.hf_steps or (1 if quick else 3)
    args.hf_rows = args.hf_rows or (8 if quick else None)
    if "fp16" not in args.policies:
        args.policies = ["fp16", *args.policies]  # every ratio is against it
    args.cpu_copy_tbps, args.cpu_total_bytes = 0.0, 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench e2e needs a CUDA GPU", file=sys.stderr)
        return 1
    report = run(args, llama31_8b_config(), torch.device("cuda"))
    print(json.dumps(report, indent=2))
    if args.output_path is not None:
        plot(report, args.output_path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt check-runtime`: the GPU runtime's perplexity against the CPU reference, per policy.

The reference is the eval's exact decode simulation (fp32, CPU, logquant_trt.reference); the runtime
prefills and then decodes token by token through its own cache backend (2-bit kernels or FlashAttention
for fp16) in the cache dtype, teacher-forced, so the figure is what serving computes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import torch

from logquant_trt.config import ConfigError, LogQuantConfig, Policy
from logquant_trt.eval.metrics import perplexity_of, target_logprobs
from logquant_trt.eval.simulate import simulate_policy
from logquant_trt.runtime.model import DecoderModel
from logquant_trt.runtime.scoring import teacher_forced_logits

POLICIES = tuple(p.value for p in Policy)


@dataclasses.dataclass
class RuntimeCheck:
    policy: str
    backend: str
    reference_ppl: float
    runtime_ppl: float
    relative_diff: float
    top1_agreement: float  # runtime argmax == reference argmax
    max_abs_logprob_diff: float
    runtime_seconds: float


def check_policies(hf_model: torch.nn.Module, token_ids: torch.Tensor, prefill: int, base: LogQuantConfig,
                   device: str = "cuda", dtype: torch.dtype = torch.float16,
                   policies: tuple[str, ...] = POLICIES) -> list[RuntimeCheck]:
    """hf_model: fp32 on the CPU (the reference); token_ids [1, N]."""
    from logquant_trt.runtime.cache import default_backend

    runtime_model = DecoderModel.from_hf(hf_model, dtype=dtype, device=device)
    targets = token_ids[:, prefill:]
    dtype_name = str(dtype).removeprefix("torch.")
    checks = []
    for policy in policies:
        reference_config = base.replace(policy=policy, dtype="float32")
        with torch.no_grad(), simulate_policy(hf_model, reference_config, prefill):
            reference = hf_model(token_ids).logits[:, prefill - 1:-1].float()
        config = reference_config.replace(dtype=dtype_name)
        start = time.perf_counter()
        ours = teacher_forced_logits(runtime_model, config, token_ids, prefill)
        seconds = time.perf_counter() - start
        ref_targets = target_logprobs(reference.log_softmax(-1), targets)
        our_targets = target_logprobs(ours.log_softmax(-1), targets)
        ref_ppl, our_ppl = perplexity_of(ref_targets), perplexity_of(our_targets)
        checks.append(RuntimeCheck(
            policy, default_backend(config, runtime_model.device).name.lower(), ref_ppl, our_ppl,
            our_ppl / ref_ppl - 1, (ours.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            (our_targets - ref_targets).abs().max().item(), seconds))
    return checks


def main(argv: list[str] | None = None) -> int:
    import argparse

    from logquant_trt.data.corpus import corpus_token_ids
    from logquant_trt.models.embedded import load_embedded_model

    parser = argparse.ArgumentParser(prog="logquant-trt check-runtime", description=__doc__)
    parser.add_argument("--num-tokens", type=int, default=2048)
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--residual", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--output-path", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.prefill < args.num_tokens:
        parser.error(f"--prefill {args.prefill} must be in [1, --num-tokens {args.num_tokens})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    try:
        base = LogQuantConfig(group_size=args.group_size, window=args.window, residual=args.residual)
    except ConfigError as error:
        parser.error(str(error))
    model, tokenizer = load_embedded_model()
    checks = check_policies(model, corpus_token_ids(tokenizer, args.num_tokens), args.prefill, base, args.device,
                            policies=tuple(args.policies))
    report = {"model": "SmolLM2-135M-Instruct", "num_tokens": args.num_tokens, "prefill": args.prefill,
              "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "config": base.to_dict(), "checks": [dataclasses.asdict(c) for c in checks]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output_path:
        with open(args.output_path, "w") as f:
            f.write(text + "\n")
    worst = max(abs(c.relative_diff) for c in checks)
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    raise SystemExit(main())

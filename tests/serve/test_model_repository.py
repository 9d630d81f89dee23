# SPDX-License-Identifier: Apache-2.0
"""`logquant-trt triton-repo`: the model repository for the TensorRT engine.

No TensorRT here, so the engine directory is what build_scripts/build_engine.py writes for a tiny Llama
when TensorRT is absent, with `engine` then pointed at a placeholder file, as a TensorRT build would
record it. What is checked: config.pbtxt parses as Triton's ModelConfig and matches protocol.py and the
engine's profile; 1/model.py is trt_python_model.py and compiles; bad settings are refused by value.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import py_compile
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from logquant_trt.cli import main as cli_main
from logquant_trt.serve import trt_python_model
from logquant_trt.serve.model_repository import PBTXT_TYPES, RepositorySettings, config_pbtxt, engine_limits
from logquant_trt.serve.protocol import INPUTS, OUTPUTS, TRT_MODEL_NAME

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "build_scripts" / "build_engine.py"
TINY = dict(hidden_size=128, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=64, vocab_size=100)
PROFILE = dict(max_batch=4, max_seq_len=256, max_prompt=128)


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(root / "model")
    spec = importlib.util.spec_from_file_location("build_engine", BUILD_SCRIPT)
    build_engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_engine)
    out = root / "out"
    code = build_engine.main(["--model", str(root / "model"), "--out", str(out), "--validate", "0",
                              "--group-size", "32", "--window", "32",
                              *(f"--{k.replace('_', '-')}={v}" for k, v in PROFILE.items())])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["engine"] is None  # no TensorRT here; record an engine as a TensorRT build does
    (out / "engine.plan").write_bytes(b"placeholder: not a TensorRT engine")
    config.update(engine="engine.plan", tensorrt_version="10.14.1")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _parse(path: Path):  # noqa: ANN202
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_config_parses_and_matches_protocol(engine_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert cli_main(["triton-repo", "--engine-dir", str(engine_dir), "--out", str(repo),
                     "--tokenizer", str(engine_dir)]) == 0
    config = _parse(repo / TRT_MODEL_NAME / "config.pbtxt")
    assert (config.name, config.backend, config.max_batch_size) == (TRT_MODEL_NAME, "python", 0)
    assert config.model_transaction_policy.decoupled
    type_name = model_config_pb2.DataType.Name
    assert [(t.name, type_name(t.data_type), tuple(t.dims), t.optional) for t in config.input] == \
        [(s.name, PBTXT_TYPES[s.triton_dtype], s.shape, s.optional) for s in INPUTS]
    assert [(t.name, type_name(t.data_type), tuple(t.dims)) for t in config.output] == \
        [(s.name, PBTXT_TYPES[s.triton_dtype], s.shape) for s in OUTPUTS]
    (group,) = config.instance_group
    assert (model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind), group.count, list(group.gpus)) == \
        ("KIND_GPU", 1, [0])
    params = {key: value.string_value for key, value in config.parameters.items()}
    engine_config = json.loads((engine_dir / "config.json").read_text())
    assert Path(params["engine_path"]) == (engine_dir / "engine.plan").resolve()
    assert Path(params["engine_config"]) == (engine_dir / "config.json").resolve()
    assert params["plugin_library"] == str(Path(engine_config["plugin_library"]).resolve())
    assert json.loads(params["cache_config"]) == engine_config["logquant_config"]
    assert {k: int(params[k]) for k in PROFILE} == PROFILE


def test_model_py_is_the_backend_model_and_compiles(engine_dir: Path, tmp_path: Path) -> None:
    settings = RepositorySettings.from_engine_dir(engine_dir, tokenizer_dir=engine_dir)
    from logquant_trt.serve.model_repository import write_model_repository

    model_dir = write_model_repository(settings, tmp_path / "repo")
    model_py = model_dir / "1" / "model.py"
    assert model_py.read_text() == Path(trt_python_model.__file__).read_text()
    py_compile.compile(str(model_py), cfile=str(tmp_path / "model.pyc"), doraise=True)
    classes = {node.name: {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
               for node in ast.parse(model_py.read_text()).body if isinstance(node, ast.ClassDef)}
    assert {"initialize", "execute", "finalize"} <= classes["TritonPythonModel"]


def test_parameters_with_quotes_and_backslashes_round_trip(engine_dir: Path) -> None:
    settings = RepositorySettings.from_engine_dir(engine_dir, tokenizer_dir=Path('/odd "dir"\\x/é'))
    config = text_format.Parse(config_pbtxt(settings), model_config_pb2.ModelConfig())
    assert config.parameters["tokenizer_dir"].string_value == str(Path('/odd "dir"\\x/é'))


def test_limits_come_from_the_profile(engine_dir: Path) -> None:
    limits = engine_limits(json.loads((engine_dir / "config.json").read_text()))
    assert limits == PROFILE


@pytest.mark.parametrize("flag, value, expected", [
    ("--max-batch", "5", "max_batch=5 is invalid: the engine's profile allows 1 .. 4"),
    ("--max-seq-len", "257", "max_seq_len=257 is invalid: the engine's profile allows 1 .. 256"),
    ("--max-batch", "0", "max_batch=0 is invalid"),
    ("--gpu", "-1", "gpu=-1 is invalid"),
    ("--plugin", "/nonexistent/liblogquant_trt_plugin.so", "/nonexistent/liblogquant_trt_plugin.so not found"),
])
def test_settings_beyond_the_profile_are_refused(engine_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 flag: str, value: str, expected: str) -> None:
    code = cli_main(["triton-repo", "--engine-dir", str(engine_dir), "--out", str(tmp_path / "repo"),
                     "--tokenizer", str(engine_dir), flag, value])
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_engine_dir_without_engine_is_refused(engine_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    config = json.loads((engine_dir / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**config, "engine": None}))
    assert cli_main(["triton-repo", "--engine-dir", str(bare), "--out", str(tmp_path / "repo")]) == 2
    assert "records no engine" in capsys.readouterr().err
    assert cli_main(["triton-repo", "--engine-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "config.json not found" in capsys.readouterr().err


def test_existing_model_dir_needs_force(engine_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["triton-repo", "--engine-dir", str(engine_dir), "--out", str(tmp_path / "repo"),
            "--tokenizer", str(engine_dir)]
    assert cli_main(args) == 0
    assert cli_main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main([*args, "--force"]) == 0

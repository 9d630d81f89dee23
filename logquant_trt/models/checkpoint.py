# SPDX-License-Identifier: Apache-2.0
"""Loading a user's own Llama-family checkpoint, with checks before any long work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Model families whose attention is Llama's (GQA, RoPE applied before the cache).
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


def check_model_type(hf_config: Any, source: str = "") -> str:
    """hf_config.model_type; ValueError naming it (and `source`, e.g. a path) if it is not supported."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        where = f" in {source}" if source else ""
        raise ValueError(f"model_type={model_type!r}{where} is not supported; "
                         f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return model_type


def head_dim_of(hf_config: Any) -> int:
    """Width of one attention head. Configs may leave head_dim unset or None (older Llama, Qwen2), which means
    hidden_size // num_attention_heads."""
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


def check_checkpoint(path: Path) -> None:
    """Raise ValueError naming the problem if `path` is not a supported HF checkpoint."""
    from transformers import AutoConfig

    if not path.is_dir():
        raise ValueError(f"model path {str(path)!r} is not a directory")
    if not (path / "config.json").is_file():
        raise ValueError(f"model path {str(path)!r} holds no config.json: not an HF checkpoint")
    check_model_type(AutoConfig.from_pretrained(path, local_files_only=True), str(path))
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ValueError(f"no weights (*.safetensors or *.bin) in {path}")


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
               ) -> "tuple[PreTrainedModel, PreTrainedTokenizerBase]":
    """A local Llama/Qwen2/Mistral checkpoint and its tokenizer, eval mode, SDPA attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    check_checkpoint(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa",
                                                 local_files_only=True)
    return model.to(device).eval(), AutoTokenizer.from_pretrained(path, local_files_only=True)

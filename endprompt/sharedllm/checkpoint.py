"""Saving and loading a SharedLLM: a directory that stock ``AutoModelForCausalLM`` cannot load (it is an
architecture, not a Llama with new weights), read back with `load_sharedllm`.

Layout of ``<dir>``:
- ``sharedllm.json``: ``{"architecture": "SharedLLM", "format": 1, "config": <SharedLLMConfig>}`` (the marker that
  `is_sharedllm_dir` and ``endprompt eval --model <dir>`` look for);
- ``base/``: the base Llama, ``save_pretrained`` (its trained top layers included; stock transformers loads *this*);
- ``cross_attention.safetensors``: the injected cross-attention modules;
- the tokenizer's files when one is given, so ``load_tokenizer(None, dir)`` finds it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from endprompt.sharedllm.model import FORMAT, MARKER, SharedLLM, SharedLLMConfig

__all__ = ["MARKER", "save_sharedllm", "load_sharedllm", "is_sharedllm_dir"]


def is_sharedllm_dir(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def save_sharedllm(model: SharedLLM, path: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (`SharedLLM.save_pretrained`) and ``tokenizer`` under ``path``; returns the directory."""
    out = Path(path)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def load_sharedllm(path: str | Path, dtype: torch.dtype | str = "auto", attn_implementation: str = "sdpa",
                   device: str | torch.device | None = None) -> SharedLLM:
    """The SharedLLM saved by `save_sharedllm` under ``path`` (local files only)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root = Path(path)
    if not is_sharedllm_dir(root):
        raise FileNotFoundError(f"{str(root)!r} holds no {MARKER}: not a saved SharedLLM (a plain checkpoint loads "
                                "with endprompt.modeling.load_causal_lm)")
    meta = json.loads((root / MARKER).read_text())
    if meta.get("architecture") != "SharedLLM" or meta.get("format") != FORMAT:
        raise ValueError(f"{root / MARKER}: architecture {meta.get('architecture')!r}, format {meta.get('format')!r}; "
                         f"this version reads SharedLLM format {FORMAT}")
    base = AutoModelForCausalLM.from_pretrained(root / "base", dtype=dtype, attn_implementation=attn_implementation,
                                                local_files_only=True)
    config = SharedLLMConfig(**{**meta["config"], "init": "none"})
    model = SharedLLM(base, config)
    model.cross.load_state_dict(load_file(str(root / "cross_attention.safetensors")))
    model.sharedllm_config = dataclasses.replace(model.sharedllm_config, init=meta["config"]["init"])
    model.eval()
    return model.to(device) if device is not None else model

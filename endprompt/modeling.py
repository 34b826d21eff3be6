"""The transformers glue: build a tiny Llama, load a local RoPE checkpoint, probe its queries and keys.

Everything that touches a model class lives here; the rest of endprompt hands the model ``position_ids`` and masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from endprompt import rope as R

__all__ = ["tiny_llama_config", "build_tiny_llama", "load_causal_lm", "query_key_states", "rope_of"]


def tiny_llama_config(vocab_size: int = 260, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                      num_kv_heads: int | None = None, intermediate_size: int | None = None,
                      rope: R.RopeScaling | None = None, max_position_embeddings: int = 256,
                      attn_implementation: str = "sdpa", **kwargs):
    """A ``LlamaConfig`` for a small model whose RoPE comes from an `endprompt.rope.RopeScaling`.

    ``max_position_embeddings`` is the context the model is meant for (the target length after an extension).
    """
    from transformers import LlamaConfig

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    rope = rope or R.RopeScaling()
    head_dim = hidden_size // num_heads
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                       num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads,
                       intermediate_size=intermediate_size or 4 * hidden_size, attn_implementation=attn_implementation,
                       **R.transformers_config_kwargs(rope, max_position_embeddings, head_dim), **kwargs)


def build_tiny_llama(seed: int = 0, **config_kwargs):
    """A randomly initialised ``LlamaForCausalLM`` from `tiny_llama_config` (float32, eval mode)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(**config_kwargs)).eval()


def load_causal_lm(path: str | Path, dtype: torch.dtype | str = "auto", attn_implementation: str = "sdpa",
                   local_files_only: bool = True):
    """``AutoModelForCausalLM.from_pretrained`` on a local directory (a hub id needs ``local_files_only=False``).

    Raises a clear error for a missing path and for a model without RoPE.
    """
    from transformers import AutoModelForCausalLM

    if local_files_only and not Path(path).is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {str(path)!r}; give the path of a saved model "
                                "(a folder with config.json), or pass local_files_only=False for a hub id")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation,
                                                 local_files_only=local_files_only)
    rope_of(model)  # raises for models without RoPE
    return model


def rope_of(model) -> R.RopeScaling:
    """The `RopeScaling` a transformers model was configured with."""
    return R.from_transformers_config(model.config)


def query_key_states(model, input_ids: torch.Tensor, layer: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Queries and keys of one attention layer *before* RoPE, for ``input_ids`` of shape ``(1, T)``.

    Returns float64 arrays ``q`` ``(num_heads, T, head_dim)`` and ``k`` ``(num_kv_heads, T, head_dim)``
    (half-split pairing, as transformers rotates them), read with forward hooks on ``q_proj`` and ``k_proj``.
    """
    attn = model.model.layers[layer].self_attn
    captured = {}
    hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o.detach())),
             attn.k_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o.detach()))]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    head_dim = model.config.head_dim if getattr(model.config, "head_dim", None) else (
        model.config.hidden_size // model.config.num_attention_heads)
    T = input_ids.shape[1]
    q = captured["q"][0].reshape(T, -1, head_dim).transpose(0, 1)  # (H, T, D)
    k = captured["k"][0].reshape(T, -1, head_dim).transpose(0, 1)  # (H_kv, T, D)
    return q.double().numpy(), k.double().numpy()

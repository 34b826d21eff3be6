"""Dynamic NTK at a fixed length, so that an evaluation does not depend on the order of its lengths.

transformers' dynamic rotary embedding (``dynamic_rope_update``) keeps the frequencies of the longest forward pass it
has seen and only returns to the original ones for a pass shorter than the original length. After a 3,000-token pass a
1,000-token pass therefore uses the 3,000-token base, not the 1,000-token one (`endprompt.rope.compute_inv_freq` with
``seq_len=1000``); during generation the frequencies also change token by token while the KV cache keeps keys rotated
with the earlier ones. An evaluation at several lengths would depend on their order.

`pin_dynamic_rope` sets every dynamic rotary embedding of a model to the frequencies of one length (the NTK base for
``max(length, original)`` tokens, as a fresh module computes for a pass of that length) and marks that length as seen,
so no pass of at most ``length`` tokens changes them: prompt and generated tokens of a sample evaluated at length L
share one set of frequencies. `endprompt.evaluate.evaluate` pins each length before its prompts and restores the fresh
state at the end. Models without a dynamic rotary embedding are left untouched.
"""

from __future__ import annotations

import torch

__all__ = ["pin_dynamic_rope"]


def _dynamic_layers(module) -> list[str | None]:
    """The layer types of ``module`` whose rotary type is dynamic (``[None]`` for a single-type module)."""
    rope_type = getattr(module, "rope_type", None)
    if isinstance(rope_type, str) and hasattr(module, "original_inv_freq"):
        return [None] if "dynamic" in rope_type else []
    if isinstance(rope_type, dict) and hasattr(module, "original_max_seq_len"):
        return [layer for layer, kind in rope_type.items() if "dynamic" in kind]
    return []


@torch.no_grad()
def pin_dynamic_rope(model, length: int | None) -> int:
    """Give every dynamic rotary embedding of ``model`` the frequencies for ``length`` tokens (``None``: the fresh,
    original state). Returns the number of rotary embeddings changed (0 for a model without dynamic RoPE)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if length is not None and length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    changed = 0
    for module in model.modules():
        for layer in _dynamic_layers(module):
            prefix = f"{layer}_" if layer else ""
            kind = module.rope_type[layer] if layer else module.rope_type
            current = getattr(module, f"{prefix}inv_freq")
            original = getattr(module, f"{prefix}original_inv_freq")
            if length is None or length <= module.original_max_seq_len:
                inv_freq, seen = original.to(current.device).clone(), module.original_max_seq_len
            else:
                kw = {"layer_type": layer} if layer else {}
                inv_freq, scaling = ROPE_INIT_FUNCTIONS[kind](module.config, current.device, seq_len=length, **kw)
                module.attention_scaling, seen = scaling, length
            module.register_buffer(f"{prefix}inv_freq", inv_freq.to(current.dtype), persistent=False)
            setattr(module, f"{prefix}max_seq_len_cached", seen)
            changed += 1
    return changed

"""LongLoRA's shifted sparse attention (S2-Attn), registered with transformers' ``AttentionInterface``.

Training only: the sequence of length T is split into groups of ``G = ratio * T`` tokens (LongLoRA: 1/4); each query
attends causally inside its group. Half of the heads see groups shifted by ``G/2`` so information flows between
neighbouring groups. In evaluation mode (``module.training`` False) it is plain sdpa attention, as LongLoRA evaluates
with full attention.

The shifted heads follow LongLoRA's flash-attention path at HEAD (``llama_attn_replace.py``, since October 2023): it
cuts each sequence into variable-length segments with ``cu_seqlens`` at ``G/2, 3G/2, ..., T - G/2``, so the shifted
groups are ``[0, G/2)``, ``[G/2, 3G/2)``, ..., ``[T - G/2, T)``: the first and the last half group stand alone and no
token sees a token from the other end of the sequence. (LongLoRA's non-flash path rolls the sequence instead, which
joins the last half group with the first one; we do not follow it.) Causality follows the original token order and
the padding mask.

    from endprompt import s2attn
    s2attn.register(group_ratio=0.25)
    model.set_attn_implementation(s2attn.NAME)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["NAME", "register", "s2_attention_forward", "group_slots", "group_ids"]

NAME = "s2attn"
_STATE = {"group_ratio": 0.25}


def group_slots(T: int, group: int, shift: int) -> torch.Tensor:
    """Original token index of each (group, slot): ``(T/group, group)``; the shifted pattern starts ``shift`` later.

    With a shift the last row holds ``T - shift .. T-1`` and ``0 .. shift-1``: a container for two half groups that
    `group_ids` keeps apart (no wrap), so every row has ``group`` slots and one batched attention call serves all."""
    return (torch.arange(T).view(T // group, group) + shift) % T


def group_ids(idx: torch.Tensor, group: int, shift: int) -> torch.Tensor:
    """The attention group of each token in ``idx``: ``(i + shift) // group``, LongLoRA's flash segments (no wrap)."""
    return (idx + shift) // group


def _attend(q, k, v, idx, gid, mask, scaling, dropout):
    """Causal attention inside the groups given by ``idx`` (nG, G) and their group ids ``gid`` (nG, G).
    q, k, v: (B, h, T, D). Returns (B, h, T, D)."""
    B, h, T, D = q.shape
    nG, G = idx.shape
    flat = idx.reshape(-1)
    qg, kg, vg = (x[:, :, flat].view(B, h, nG, G, D) for x in (q, k, v))
    if mask is not None:  # (B, 1, T, T) bool from transformers' sdpa mask: causality and padding included
        allowed = mask[:, 0][:, idx[:, :, None], idx[:, None, :]][:, None]  # (B, 1, nG, G, G)
    else:
        allowed = (idx[:, None, :] <= idx[:, :, None])[None, None]  # (1, 1, nG, G, G): key index <= query index
    allowed = allowed & (gid[:, :, None] == gid[:, None, :])[None, None]  # the wrapped row holds two groups
    # a query with no visible key (a group of padding) would give NaN; let it see itself, its output is unused
    eye = torch.eye(G, dtype=torch.bool, device=q.device)
    allowed = allowed | (eye & ~allowed.any(-1, keepdim=True))
    out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=allowed, dropout_p=dropout, scale=scaling)
    result = torch.empty_like(q)
    result[:, :, flat] = out.reshape(B, h, T, D)
    return result


def s2_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention function: query (B, H, T, D), key/value (B, H_kv, T, D) -> ((B, T, H, D), None)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if not module.training or query.shape[2] == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    B, H, T, D = query.shape
    G = int(T * _STATE["group_ratio"])
    if G < 2 or T % G or G % 2:
        raise ValueError(f"S2-Attn needs the sequence length ({T}) to be a multiple of an even group size "
                         f"(ratio {_STATE['group_ratio']} gives {G}); pad batches to a multiple of "
                         f"{int(round(2 / _STATE['group_ratio']))}")
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask == 0  # additive (0 / -inf) -> allowed
    half = H // 2
    heads = []
    for sl, shift in ((slice(None, half), 0), (slice(half, None), G // 2)):
        idx = group_slots(T, G, shift).to(query.device)  # (nG, G)
        heads.append(_attend(query[:, sl], key[:, sl], value[:, sl], idx, group_ids(idx, G, shift), attention_mask,
                             scaling, dropout))
    plain, shifted = heads
    return torch.cat([plain, shifted], dim=1).transpose(1, 2).contiguous(), None


def register(group_ratio: float = 0.25) -> str:
    """Register S2-Attn (and sdpa's mask builder for it) under `NAME`; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not 0 < group_ratio <= 1:
        raise ValueError(f"group_ratio must be in (0, 1], got {group_ratio}")
    _STATE["group_ratio"] = group_ratio
    AttentionInterface.register(NAME, s2_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME

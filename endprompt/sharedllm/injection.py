"""Self-injection: cross-attention added to the first M layers of a stock transformers Llama, with forward hooks.

In each injected layer the residual stream after self-attention, ``h1 = h0 + SelfAttn(norm(h0))``, reads the compressed
context (paper §3.1, reference ``LlamaCrossKVFlashAttention2``):

    h2 = h1 + CrossAttn(norm_x(h1), K_ctx, V_ctx),  then the layer's MLP on h2 as usual.

The cross-attention owns a norm, ``q_proj`` and ``o_proj``; keys and values are the lower model's own (the same
layer index of the bottom M layers), so nothing is projected twice. Positions are chunk-level (§3.3): every query token
sits at position ``n`` (the number of context chunks), every token of chunk ``i`` (1-based) at ``i - 1``, so a query
sees chunk ``i`` at distance ``n - i + 1``. Keys enter pre-RoPE (the paper's chunk-level ids; the reference code also
keeps each key's within-node rotation) and get only the chunk rotation here.

The stock layer is untouched: a pre-hook on the layer records ``h0``, a hook on its ``self_attn`` adds the
cross-attention term to the attention output (``h0 + (attn + x) = h2``). With no context installed the hooks return
``None`` and the layer computes exactly what the base computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InjectedContext", "CrossAttention", "Injector"]


@dataclass
class InjectedContext:
    """Compressed context for one sequence: per injected layer, keys ``(1, H_kv, Lc, D)`` (pre-RoPE) and values
    ``(1, H_kv, Lc, D)``; ``chunk_ids`` ``(Lc,)`` the 0-based chunk of every kept token; ``num_chunks`` = n."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    chunk_ids: torch.Tensor
    num_chunks: int

    @property
    def length(self) -> int:
        return int(self.chunk_ids.numel())


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class CrossAttention(nn.Module):
    """Query projection, output projection and pre-norm of one injected layer (keys/values come from the lower
    model). ``rotary`` is the base model's rotary embedding module (shared, no parameters)."""

    def __init__(self, config, rotary: nn.Module):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)
        self._rotary = [rotary]  # a list: not a submodule, so not saved twice

    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` ``(B, H, L, D)`` to ``positions`` ``(L,)`` with the base's frequencies (half-split pairs)."""
        cos, sin = self._rotary[0](x, positions[None])  # (1, L, D) each
        return x * cos[:, None] + _rotate_half(x) * sin[:, None]

    def forward(self, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, num_chunks: int) -> torch.Tensor:
        """``hidden`` ``(B, T, hidden)``; ``keys`` already rotated to their chunk positions ``(B, H_kv, Lc, D)``."""
        B, T, _ = hidden.shape
        q = self.q_proj(self.norm(hidden)).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        q = self.rope(q, torch.full((T,), num_chunks, dtype=torch.long, device=hidden.device))
        # every query token may read every kept context token: the context lies entirely before the query
        out = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype),
                                             enable_gqa=self.num_kv_heads != self.num_heads)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class Injector:
    """Installs the hooks on ``layers[:M]`` of a Llama body; `active` holds the context in use (None = off)."""

    def __init__(self, layers, cross: nn.ModuleList):
        self.cross = cross
        self.active: InjectedContext | None = None
        self._rotated: list[torch.Tensor] = []
        self._h0: dict[int, torch.Tensor] = {}
        self._handles = []
        for i, layer in enumerate(layers[: len(cross)]):
            self._handles.append(layer.register_forward_pre_hook(self._keep_input(i), with_kwargs=True))
            self._handles.append(layer.self_attn.register_forward_hook(self._add_cross(i)))

    def set(self, context: InjectedContext | None) -> None:
        """Install ``context`` (its keys rotated once to their chunk positions) or switch the injection off."""
        self.active = context
        self._rotated = [] if context is None else [
            x.rope(k, context.chunk_ids.to(k.device)) for x, k in zip(self.cross, context.keys)]

    def _keep_input(self, i: int):
        def hook(module, args, kwargs):
            if self.active is not None:
                self._h0[i] = args[0] if args else kwargs["hidden_states"]
            return None
        return hook

    def _add_cross(self, i: int):
        def hook(module, args, output):
            if self.active is None:
                return None
            attn, weights = output
            h1 = self._h0.pop(i) + attn
            x = self.cross[i](h1, self._rotated[i], self.active.values[i], self.active.num_chunks)
            return attn + x, weights
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

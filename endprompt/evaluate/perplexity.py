"""Perplexity by context length, in the two forms that give different numbers (always labelled):

- ``truncated``: the first L tokens of each document of at least L tokens, scored in one forward pass; every position
  counts, so early tokens (with little context) are included.
- ``sliding``: each document read with a window of L tokens moved by ``stride``; each window scores only the tokens
  not scored before (the first window scores all of its tokens), so most tokens see L - stride or more context.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["nll_sum", "truncated_perplexity", "sliding_perplexity"]


@torch.no_grad()
def nll_sum(model, ids: torch.Tensor, score_from: int = 1) -> tuple[float, int]:
    """Sum of next-token NLL over positions ``score_from .. T-1`` of ``ids`` (1, T), and their count."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.float()  # (1, T, V)
    start = max(score_from, 1)
    nll = F.cross_entropy(logits[0, start - 1 : -1], ids[0, start:], reduction="sum")
    return float(nll), ids.shape[1] - start


def truncated_perplexity(model, docs: list[np.ndarray], length: int, max_docs: int = 8) -> tuple[float, int]:
    """exp(mean NLL) over the first ``length`` tokens of up to ``max_docs`` documents with >= ``length`` tokens."""
    usable = [d for d in docs if len(d) >= length][:max_docs]
    if not usable:
        raise ValueError(f"no document has {length} tokens")
    total, count = 0.0, 0
    for d in usable:
        s, n = nll_sum(model, torch.as_tensor(np.asarray(d[:length], dtype=np.int64))[None])
        total, count = total + s, count + n
    return math.exp(total / count), count


def sliding_perplexity(model, docs: list[np.ndarray], length: int, stride: int = 256, max_docs: int = 8,
                       max_tokens_per_doc: int | None = None) -> tuple[float, int]:
    """exp(mean NLL) reading each document with a window of ``length`` tokens and step ``stride`` (new tokens only)."""
    if not 0 < stride <= length:
        raise ValueError(f"stride must be in (0, length], got stride={stride}, length={length}")
    usable = [d for d in docs if len(d) >= length][:max_docs]
    if not usable:
        raise ValueError(f"no document has {length} tokens")
    total, count = 0.0, 0
    for d in usable:
        d = np.asarray(d[: max_tokens_per_doc or len(d)], dtype=np.int64)
        scored = 0  # tokens [0, scored) have been scored
        for end in range(length, len(d) + stride, stride):
            end = min(end, len(d))
            begin = max(0, end - length)
            window = torch.as_tensor(d[begin:end])[None]
            s, n = nll_sum(model, window, score_from=max(scored - begin, 1))
            total, count, scored = total + s, count + n, end
            if end == len(d):
                break
    return math.exp(total / count), count

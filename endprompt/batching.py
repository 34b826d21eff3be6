"""From samples to model-ready batches: padding with an explicit ``attention_mask``, packing for varlen attention, and
the seeded, resumable `Collator` (documents -> samples of one `endprompt.recipe.Recipe` -> a batch).

Never rely on transformers inferring masks from ``position_ids``: with ``attention_mask=None`` it treats every position
jump as the start of a new packed sequence, which would cut the terminal segment off from the text it must see.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from endprompt.recipe import Recipe, Sample, build_sample, tokenize_cues

__all__ = [
    "Collator",
    "pad_samples",
    "pack_samples",
    "packed_causal_mask",
    "model_inputs",
]


def pad_samples(samples: Sequence[Sample], pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict:
    """Right-pad samples into a batch dict of tensors, each ``(B, T)``.

    Keys: ``input_ids``, ``labels`` (-100 on padding), ``position_ids`` (0 on padding), ``attention_mask`` (1 on real
    tokens), ``loss_weights`` (0 on padding), ``segment_ids`` (0 on padding). Pass ``attention_mask`` to the model
    always: it is what keeps jumped positions inside one sequence.
    """
    if not samples:
        raise ValueError("no samples to collate (every document in the batch was skipped; see Collator.stats)")
    if pad_token_id is None:
        raise ValueError("padding needs a pad_token_id; for a tokenizer without one set tokenizer.pad_token = "
                         "tokenizer.eos_token (padded positions are masked and carry label -100)")
    lengths = np.array([len(s) for s in samples])
    T = int(lengths.max())
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(samples)
    input_ids = np.full((B, T), pad_token_id, dtype=np.int64)
    position_ids = np.zeros((B, T), dtype=np.int64)
    weights = np.zeros((B, T), dtype=np.float32)
    segments = np.zeros((B, T), dtype=np.int64)
    for i, s in enumerate(samples):
        n = len(s)
        input_ids[i, :n] = s.input_ids
        position_ids[i, :n] = s.position_ids
        weights[i, :n] = s.loss_weights
        segments[i, :n] = s.segment_ids
    mask = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
    labels = np.where(mask, input_ids, -100)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(position_ids),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        "loss_weights": torch.from_numpy(weights),
        "segment_ids": torch.from_numpy(segments),
    }


def pack_samples(samples: Sequence[Sample]) -> dict:
    """Concatenate samples into one row for varlen attention (flash-attention users), no padding.

    Keys: ``input_ids``, ``labels``, ``position_ids``, ``loss_weights``, ``segment_ids`` of shape ``(1, N)``;
    ``cu_seq_lens_q`` = ``cu_seq_lens_k`` ``(B+1,)`` int32 and ``max_length_q`` = ``max_length_k`` (transformers'
    ``FlashAttentionKwargs`` names). The first label of every sample is -100 (weight 0) so the last token of one sample
    never learns to predict the next sample. Sequence boundaries come from ``cu_seq_lens``, never from position ids,
    which jump inside a sample. For sdpa/eager build the mask with `packed_causal_mask`.
    """
    if not samples:
        raise ValueError("no samples to pack")
    lengths = np.array([len(s) for s in samples])
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)  # (B+1,)
    input_ids = np.concatenate([s.input_ids for s in samples])
    labels = input_ids.copy()
    labels[cu[:-1]] = -100
    weights = np.concatenate([s.loss_weights for s in samples]).astype(np.float32)
    weights[cu[:-1]] = 0.0
    cu_t = torch.from_numpy(cu)
    return {
        "input_ids": torch.from_numpy(input_ids)[None],
        "labels": torch.from_numpy(labels)[None],
        "position_ids": torch.from_numpy(np.concatenate([s.position_ids for s in samples]))[None],
        "loss_weights": torch.from_numpy(weights)[None],
        "segment_ids": torch.from_numpy(np.concatenate([s.segment_ids for s in samples]))[None],
        "cu_seq_lens_q": cu_t,
        "cu_seq_lens_k": cu_t,
        "max_length_q": int(lengths.max()),
        "max_length_k": int(lengths.max()),
    }


def packed_causal_mask(cu_seq_lens: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Block-diagonal causal mask ``(1, 1, N, N)`` for a packed row, for the sdpa and eager backends.

    transformers passes a 4-D mask through unchanged: sdpa reads a boolean mask (True = may attend, ``dtype=None``),
    eager adds it to the scores, so it needs an additive mask (pass the model's ``dtype``: 0 where allowed, the dtype's
    minimum elsewhere). Memory is O(N^2): meant for checks and short rows; flash-attention uses ``cu_seq_lens``.
    """
    cu = cu_seq_lens.to(torch.int64)
    N = int(cu[-1])
    seq = torch.repeat_interleave(torch.arange(len(cu) - 1), cu[1:] - cu[:-1])  # (N,)
    idx = torch.arange(N)
    allowed = ((seq[:, None] == seq[None, :]) & (idx[None, :] <= idx[:, None]))[None, None]  # (1, 1, N, N)
    if dtype is None:
        return allowed
    return torch.where(allowed, torch.zeros((), dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype))


_MODEL_KEYS = ("input_ids", "position_ids", "attention_mask", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
               "max_length_k")


def model_inputs(batch: dict) -> dict:
    """The keys of a batch that go to the model's forward (labels and weights stay with the loss)."""
    return {k: batch[k] for k in _MODEL_KEYS if k in batch}


class Collator:
    """Documents -> padded (or packed) batches for one recipe, seeded and resumable.

    Sample ``i`` (counted over the collator's lifetime) draws its randomness from ``default_rng([seed, i])``, so a run
    restored with `load_state_dict` continues with exactly the samples it would have made.
    """

    def __init__(self, recipe: Recipe, pad_token_id: int | None = None, cue_ids: Sequence[np.ndarray] | None = None,
                 seed: int = 0, packed: bool = False, pad_to_multiple_of: int | None = None):
        self.recipe, self.seed, self.packed, self.pad_to_multiple_of = recipe, seed, packed, pad_to_multiple_of
        if recipe.spec.uses_cues:
            if not cue_ids:
                raise ValueError(f"recipe {recipe.name!r} needs cue_ids; use Collator.from_tokenizer or tokenize_cues")
            for ids in cue_ids:
                if len(ids) > recipe.b:
                    raise ValueError(f"end prompt of {len(ids)} tokens is longer than b={recipe.b}; raise Recipe.b")
        if not packed and pad_token_id is None:
            raise ValueError("padding needs a pad_token_id; for a tokenizer without one set tokenizer.pad_token = "
                             "tokenizer.eos_token, or use packed=True")
        self.pad_token_id = pad_token_id
        self.cue_ids = [np.asarray(c, dtype=np.int64) for c in (cue_ids or [])]
        self.samples_made = 0
        self.stats: Counter = Counter()

    @classmethod
    def from_tokenizer(cls, recipe: Recipe, tokenizer, **kwargs) -> Collator:
        """Tokenize the recipe's cue set with ``tokenizer`` and take its pad token."""
        cue_ids = tokenize_cues(recipe.cues, tokenizer, recipe.b) if recipe.spec.uses_cues else None
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None and not kwargs.get("packed", False):
            raise ValueError("the tokenizer has no pad token, which padding needs; set tokenizer.pad_token = "
                             "tokenizer.eos_token (padded positions are masked and carry label -100), "
                             "or use packed=True")
        return cls(recipe, pad_token_id=pad, cue_ids=cue_ids, **kwargs)

    def samples(self, docs, keys=None) -> list[Sample]:
        """Samples for ``docs``. Sample randomness comes from ``default_rng([seed, *key])``: ``keys`` (one tuple of
        ints per document, e.g. its (epoch, position) in the data order) make a sample independent of which process
        or batch builds it; without keys a running counter is used."""
        if keys is not None and len(keys) != len(docs):
            raise ValueError(f"got {len(keys)} keys for {len(docs)} documents")
        out = []
        for i, doc in enumerate(docs):
            if isinstance(doc, dict):
                doc = doc["input_ids"]
            key = (self.samples_made,) if keys is None else tuple(keys[i])
            self.samples_made += 1
            sample = build_sample(doc, self.recipe, np.random.default_rng([self.seed, *key]), self.cue_ids, self.stats)
            if sample is not None:
                out.append(sample)
        return out

    def __call__(self, docs, keys=None) -> dict:
        samples = self.samples(docs, keys)
        if self.packed:
            return pack_samples(samples)
        return pad_samples(samples, self.pad_token_id, self.pad_to_multiple_of)

    def state_dict(self) -> dict:
        return {"samples_made": self.samples_made, "stats": dict(self.stats), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.samples_made = int(state["samples_made"])
        self.stats = Counter(state.get("stats", {}))
        self.seed = int(state.get("seed", self.seed))

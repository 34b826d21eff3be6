"""Which retrieval examples of a mixture a recipe's training samples hold whole, and at what distance.

A retrieval example teaches retrieval only if a sample holds its key and its question with the answer
(`endprompt.mixture.EXAMPLE_COLUMNS`); the haystack between them may be skipped (PoSE's chunks jump over content, and
the example still asks for a key seen earlier). Its distance in a sample is that of the position ids the model sees,
``position(question) - position(key)``, which PoSE's and EndPrompt's layouts make differ from the distance in the text.

`sample_examples` cuts every sample of one epoch exactly as training does (`endprompt.data.SampleSource` over the same
corpus, then `endprompt.recipe.build_sample`), on a copy of the corpus whose tokens are their own stream indices, so
each sample says which stream tokens it took; `coverage` summarises that per recipe. Nothing is trained.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from endprompt.data import SampleSource, TokenizedCorpus
from endprompt.mixture import MixtureCorpus
from endprompt.recipe import Recipe, build_sample, sample_len

__all__ = ["sample_examples", "coverage"]


def _held(src: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether every stream index in ``[a, b)`` is in the sorted unique ``src``."""
    return np.searchsorted(src, b) - np.searchsorted(src, a) == b - a


def sample_examples(corpus: MixtureCorpus, recipe: Recipe, concat: bool,
                    cue_ids: Sequence[np.ndarray] | None = None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """The examples held whole by the samples of one epoch of ``recipe`` over ``corpus``.

    ``concat``: samples of ``sample_len(recipe)`` tokens of the EOS-separated stream, else one whole document each
    (the recipe's short-document rule applies). Returns one row per (sample, example) -- ``sample``, ``example`` (row
    of ``corpus.examples``), ``kind``, ``distance`` (position ids), ``text_distance`` -- and the epoch's totals:
    ``samples``, ``tokens`` (physical tokens, prompts included) and the short-document counts."""
    index = TokenizedCorpus(np.arange(corpus.num_tokens, dtype=np.int64), corpus.offsets)
    source = SampleSource(index, sample_len(recipe), concat) if concat else SampleSource(index, concat=False)
    spec, stats = recipe.spec, Counter()
    ex = corpus.examples
    order = np.argsort(ex[:, 1], kind="stable")
    keys = ex[order, 1]
    rows, tokens, samples = [], 0, 0
    for i in range(len(source)):
        sample = build_sample(source[i], recipe, [seed, i], cue_ids, stats)
        if sample is None:
            continue
        samples, tokens = samples + 1, tokens + len(sample)
        from_doc = np.ones(len(sample), dtype=bool) if not spec.uses_cues else sample.segment_ids == 1
        src, pos = sample.input_ids[from_doc], sample.position_ids[from_doc]  # stream indices and their positions
        by_src = np.argsort(src, kind="stable")
        src, pos = src[by_src], pos[by_src]
        cand = order[np.searchsorted(keys, src[0]) : np.searchsorted(keys, src[-1] + 1)]
        cand = cand[ex[cand, 4] <= src[-1] + 1]
        whole = cand[_held(src, ex[cand, 1], ex[cand, 2]) & _held(src, ex[cand, 3], ex[cand, 4])]
        for e in whole:
            distance = int(pos[np.searchsorted(src, ex[e, 3])] - pos[np.searchsorted(src, ex[e, 1])])
            rows.append((i, int(e), str(corpus.example_kinds[e]), distance, int(ex[e, 3] - ex[e, 1])))
    table = pd.DataFrame(rows, columns=["sample", "example", "kind", "distance", "text_distance"])
    return table, {"samples": samples, "tokens": tokens, **{k: int(v) for k, v in stats.items()}}


def coverage(corpus: MixtureCorpus, recipe: Recipe, concat: bool, cue_ids=None, seed: int = 0,
             short: int = 64, long: int = 512) -> dict:
    """One row of summary for ``recipe`` on ``corpus``.

    Examples held whole per 1M physical training tokens (all, distance < ``short``, > ``long``), and per 1M of
    ``samples * physical_len`` (``examples_per_1m_budget``: the tokens a step count sized by the recipe's physical
    length pays for, padding included); quartiles of their distance; the share of the corpus's examples that some
    sample of the epoch holds whole: of all (``whole_share``), of those whose text from key to answer fits in one
    sample's ``sample_len`` document tokens (``fitting_whole_share``: 1 - the share that cuts separate), and of those
    at a text distance above ``long`` (``long_whole_share``)."""
    table, totals = sample_examples(corpus, recipe, concat, cue_ids, seed)
    per_m = 1e6 / max(totals["tokens"], 1)
    d = table["distance"].to_numpy()
    q = np.percentile(d, [25, 50, 75]) if len(d) else [np.nan] * 3
    ex, held = corpus.examples, np.zeros(len(corpus.examples), dtype=bool)
    held[table["example"].unique()] = True
    fits = ex[:, 4] - ex[:, 1] <= sample_len(recipe)
    far = ex[:, 3] - ex[:, 1] > long
    share = lambda mask: float(held[mask].mean()) if mask.any() else np.nan
    budget = totals["samples"] * recipe.physical_len  # what a step count sized by the physical length pays for
    return {"samples": totals["samples"], "tokens": totals["tokens"], "budget_tokens": budget,
            "shrunk": totals.get("shrunk", 0), "skipped": totals.get("skipped", 0),
            "examples_per_1m": len(d) * per_m, "examples_per_1m_budget": len(d) * 1e6 / max(budget, 1),
            f"short_lt{short}_per_1m": int((d < short).sum()) * per_m,
            f"long_gt{long}_per_1m": int((d > long).sum()) * per_m,
            "distance_q25": float(q[0]), "distance_median": float(q[1]), "distance_q75": float(q[2]),
            "whole_share": share(np.ones(len(ex), dtype=bool)), "fitting_whole_share": share(fits),
            "long_whole_share": share(far)}

"""Tidy tables of the theory notebook (``notebooks/01_bernstein_bound.py``): `endprompt.bound`'s checks per scaling,
factor and recipe, as pandas DataFrames that `endprompt.plotting` draws.

`endprompt.bound` itself stays numpy/scipy only; this module adds pandas and the recipe registry
(`endprompt.recipe`), whose layouts give the distance sets of each recipe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from endprompt import bound as B
from endprompt import positions as P
from endprompt import rope as R
from endprompt.recipe import Recipe, recipe_position_ids

__all__ = ["STUDY_SCALINGS", "study_scaling", "bandwidth_table", "bernstein_study", "score_curves", "STUDY_RECIPES",
           "recipe_distance_sets", "coverage_table", "identifiability_table"]

STUDY_SCALINGS = ("none", "linear", "ntk", "dynamic", "yarn", "llama3")
"""Scalings compared in the theory notebook ("none" = unscaled RoPE, the reference)."""


def study_scaling(rope_type: str, s: float, original_len: int = 8192, rope_theta: float = 10000.0) -> R.RopeScaling:
    """The scaling ``rope_type`` at factor ``s`` for a model pretrained at ``original_len`` ("none": no scaling)."""
    if rope_type == "none":
        return R.RopeScaling(rope_theta=rope_theta)
    return R.for_extension(rope_type, original_len, int(original_len * s), rope_theta=rope_theta)


def bandwidth_table(rope_types=STUDY_SCALINGS, scales=(2, 4, 8, 16), head_dim: int = 128,
                    original_len: int = 8192) -> pd.DataFrame:
    """sigma per scaling type and factor (L2), at the target length ``s * original_len``."""
    rows = []
    for rope_type in rope_types:
        for s in scales:
            cfg = study_scaling(rope_type, s, original_len)
            sigma = B.bandwidth(cfg, head_dim, seq_len=int(s * original_len))
            rows.append({"rope_type": rope_type, "s": s, "sigma": sigma, "sigma_times_s": sigma * s})
    return pd.DataFrame(rows)


def bernstein_study(sources: dict[str, np.ndarray], rope_types=STUDY_SCALINGS, scales=(2, 4, 8, 16),
                    head_dim: int = 128, original_len: int = 8192, num_points: int = 4096,
                    step: float = 0.05) -> pd.DataFrame:
    """L3 ratios for every coefficient source (e.g. "random", "tiny-llama") x scaling x factor, one row per pair.

    Distances are ``num_points`` samples at step ``step / sigma`` from 0 (the ratios do not depend on the coefficients'
    overall scale, so one coefficient set serves every scaling).
    """
    frames = []
    for rope_type in rope_types:
        for s in scales:
            cfg = study_scaling(rope_type, s, original_len)
            inv_freq, _ = R.compute_inv_freq(cfg, head_dim, seq_len=int(s * original_len))
            sigma = float(inv_freq.max())
            d = np.arange(num_points) * (step / sigma)
            for source, coeffs in sources.items():
                frame = pd.DataFrame(B.bernstein_check(coeffs, inv_freq, d, sigma))
                frames.append(frame.assign(source=source, rope_type=rope_type, s=s))
    return pd.concat(frames, ignore_index=True)


def score_curves(coeffs: np.ndarray, configs: dict[str, R.RopeScaling], head_dim: int, max_distance: int = 65535,
                 step: int = 16) -> pd.DataFrame:
    """S(d) on ``0..max_distance`` (every ``step``) for each labelled configuration, tidy, with ``S / sum|c|``."""
    d = np.arange(0, max_distance + 1, step)
    coeffs = np.atleast_2d(coeffs)
    frames = []
    for label, cfg in configs.items():
        inv_freq, _ = R.compute_inv_freq(cfg, head_dim, seq_len=max_distance + 1)
        S = B.score(d, coeffs, inv_freq)  # (P, N)
        amp = np.abs(coeffs).sum(axis=1, keepdims=True)
        for pair in range(len(coeffs)):
            frames.append(pd.DataFrame({"config": label, "pair": pair, "distance": d, "score": S[pair],
                                        "normalized_score": S[pair] / amp[pair]}))
    return pd.concat(frames, ignore_index=True)


STUDY_RECIPES = ("short", "endprompt", "endprompt-random", "endprompt-pose", "pose", "full")
"""Recipes compared in the theory notebook; "short" is training at the physical length a+b with no extension."""


def recipe_distance_sets(name: str, a: int, b: int, target_len: int, samples: int = 1, rng: P.RngLike = 0,
                         num_chunks: int = 2, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """L5 for a registered recipe: (observed, gap) intervals over ``samples`` samples of its full-size layout (a
    ``b``-token end prompt for the cue recipes); a short-context baseline is ``name="full", window=a+b``."""
    recipe = Recipe(name=name, a=a, b=b, target_len=target_len, num_chunks=num_chunks, window=window)
    return B.distance_sets(lambda gen: recipe_position_ids(recipe, gen), target_len, samples, rng)


def _recipe_sets(recipe: str, a: int, b: int, target_len: int, samples: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if recipe == "short":
        return recipe_distance_sets("full", a, b, target_len, 1, rng, window=a + b)
    return recipe_distance_sets(recipe, a, b, target_len, samples, rng)


def coverage_table(recipes=STUDY_RECIPES, a: int = 8192, b: int = 20, target_len: int = 65536, samples: int = 64,
                   seed: int = 0) -> pd.DataFrame:
    """L5: the observed intervals of each recipe (union over ``samples`` samples), one row per interval, with the
    recipe's share of ``[0, target_len-1]`` observed."""
    rows = []
    for i, recipe in enumerate(recipes):
        observed, _ = _recipe_sets(recipe, a, b, target_len, samples, np.random.default_rng([seed, i]))
        share = P.interval_count(observed) / target_len
        rows += [{"recipe": recipe, "lo": int(lo), "hi": int(hi), "share_observed": share} for lo, hi in observed]
    return pd.DataFrame(rows)


def identifiability_table(recipes=STUDY_RECIPES, rope_types=("linear", "yarn"), head_dims=(64, 128), a: int = 8192,
                          b: int = 20, target_len: int = 65536, original_len: int = 8192, samples: int = 64,
                          seed: int = 0, rcond: float = 1e-10) -> pd.DataFrame:
    """L6 per recipe x scaling x head dim, for a model pretrained at ``original_len`` extended to ``target_len``."""
    rows = []
    for i, recipe in enumerate(recipes):  # an independent random stream per recipe
        observed, gap = _recipe_sets(recipe, a, b, target_len, samples, np.random.default_rng([seed, i]))
        for rope_type in rope_types:
            cfg = study_scaling(rope_type, target_len / original_len, original_len)
            for head_dim in head_dims:
                inv_freq, _ = R.compute_inv_freq(cfg, head_dim, seq_len=target_len)
                rows.append({"recipe": recipe, "rope_type": rope_type, "head_dim": head_dim,
                             **B.identifiability(observed, gap, inv_freq, rcond)})
    return pd.DataFrame(rows)

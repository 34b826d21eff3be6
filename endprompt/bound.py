"""The paper's theory made checkable (numpy/scipy only; the lemmas are in ``proofs/``).

- L1 `score_coefficients`, `score`: for one query/key pair the RoPE score is a trigonometric polynomial in the relative
  distance ``d``, ``S(d) = sum_j a_j cos(d theta_j + phi_j) = Re sum_j c_j e^{i d theta_j}`` (Eq. 1), with
  ``c_j = a_j e^{i phi_j} = q_j conj(k_j)``, in both pairing conventions.
- L2 `bandwidth`: its exponential type ``sigma = max_j theta_j`` for any `endprompt.rope` configuration (Eq. 2).
- L3 `bernstein_check`: ``sup|S'| <= sigma sup|S|`` and ``sup|S''| <= sigma^2 sup|S|`` (Eq. 3), checked on grids.
- L4 `sup_enclosure`: a rigorous enclosure of ``sup|S|`` from samples on a grid of step ``h``.
- L5 `distance_sets`: observed and gap distances of a layout (Eq. 8-9), from `endprompt.positions`.
- L6 `gram`, `identifiability`: how well supervision on the observed distances pins the score down on the gap
  (the checkable form of the "shared parameters" argument, Eq. 12-13).

The tidy tables of the theory notebook (pandas, per recipe and scaling) are in `endprompt.bound_tables`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg

from endprompt import positions as P
from endprompt import rope as R

__all__ = [
    "CONVENTIONS",
    "complex_pairs",
    "score_coefficients",
    "score",
    "bandwidth",
    "sup_enclosure",
    "bernstein_check",
    "random_coefficients",
    "pair_coefficients",
    "distance_sets",
    "gram",
    "identifiability",
]

CONVENTIONS = ("half", "interleaved")
"""How the ``D`` rotated dims form ``D/2`` complex pairs: ``half`` = transformers' rotate_half, ``(x[j], x[j+D/2])``;
``interleaved`` = the original RoPE / Meta Llama code, ``(x[2j], x[2j+1])``."""


def complex_pairs(x: np.ndarray, convention: str = "half") -> np.ndarray:
    """``(..., D)`` real -> ``(..., D/2)`` complex ``x_j`` as RoPE rotates them (L1)."""
    x = np.asarray(x, dtype=np.float64)
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"the rotated dim must be even, got {D}")
    if convention == "half":
        return x[..., : D // 2] + 1j * x[..., D // 2 :]
    if convention == "interleaved":
        return x[..., 0::2] + 1j * x[..., 1::2]
    raise ValueError(f"unknown convention {convention!r}; valid conventions are: {', '.join(CONVENTIONS)}")


def score_coefficients(q: np.ndarray, k: np.ndarray, convention: str = "half", attention_factor: float = 1.0,
                       scale: float = 1.0) -> np.ndarray:
    """L1: ``c_j = scale * attention_factor^2 * q_j conj(k_j)``, shape ``(..., D/2)`` complex.

    ``q`` and ``k`` are the rotated parts (``rotary_dim`` values) of a query and a key before RoPE. transformers
    multiplies cos and sin by ``attention_factor`` for both q and k, hence the square; ``scale`` is e.g. ``D^-1/2``.
    Then ``S(d) = Re sum_j c_j e^{i d theta_j}`` is the pre-softmax score of query position m, key position n = m - d.
    """
    q, k = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim, got {q.shape[-1]} and {k.shape[-1]}")
    return scale * attention_factor**2 * complex_pairs(q, convention) * np.conj(complex_pairs(k, convention))


def score(distances, coeffs: np.ndarray, inv_freq: np.ndarray, order: int | tuple[int, ...] = 0,
          chunk: int = 8192) -> np.ndarray:
    """``S^(n)(d) = Re sum_j c_j (i theta_j)^n e^{i d theta_j}``: exact derivatives of order ``n`` (L1, L3).

    ``coeffs`` ``(P, J)`` (or ``(J,)``), ``inv_freq`` ``(J,)``, ``distances`` ``(N,)``. Returns ``(P, N)`` for one
    order or ``(len(order), P, N)`` for a tuple. The cos/sin basis is shared by all pairs and orders, so the work is
    real matrix products, chunked over distances to bound memory.
    """
    coeffs = np.atleast_2d(np.asarray(coeffs, dtype=np.complex128))  # (P, J)
    theta = np.asarray(inv_freq, dtype=np.float64)  # (J,)
    d = np.asarray(distances, dtype=np.float64).ravel()  # (N,)
    if coeffs.shape[-1] != theta.shape[0]:
        raise ValueError(f"coeffs have {coeffs.shape[-1]} frequencies but inv_freq has {theta.shape[0]}")
    orders = (order,) if isinstance(order, int) else tuple(order)
    weighted = [coeffs * (1j * theta) ** n for n in orders]  # each (P, J)
    out = np.empty((len(orders), coeffs.shape[0], d.size))
    for start in range(0, d.size, chunk):
        angles = d[start : start + chunk, None] * theta[None, :]  # (n, J)
        cos, sin = np.cos(angles).T, np.sin(angles).T  # (J, n)
        for i, w in enumerate(weighted):
            out[i, :, start : start + chunk] = w.real @ cos - w.imag @ sin  # Re(w e^{i d theta})
    return out[0] if isinstance(order, int) else out


def bandwidth(cfg: R.RopeScaling, head_dim: int, seq_len: int | None = None) -> float:
    """L2: the exponential type sigma of S for this scaling, ``max_j inv_freq_j`` (``theta_0 / s`` under PI)."""
    return R.bandwidth(cfg, head_dim, seq_len)


def sup_enclosure(values: np.ndarray, h: float, sigma: float, amplitude: np.ndarray | float | None = None,
                  whole_line: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """L4: ``(lower, upper)`` bounds of ``sup|S|`` from ``values`` = S on a grid of step ``h`` (last axis).

    ``whole_line=True``: the grid samples S on all of ``hZ`` (e.g. a full period of a periodic S), and
    ``max_grid|S| <= sup|S| <= max_grid|S| / (1 - sigma h / 2)`` for ``sigma h < 2``.
    Otherwise the grid covers a window ``I`` and the bound is for ``sup_I|S|``:
    ``max_grid|S| <= sup_I|S| <= max_grid|S| + (sigma h / 2) * A`` with ``A = sum_j |c_j| >= sup|S|`` (``amplitude``).
    """
    lower = np.abs(values).max(axis=-1)
    if whole_line:
        if sigma * h >= 2:
            raise ValueError(f"the whole-line enclosure needs sigma*h < 2, got sigma={sigma}, h={h}")
        return lower, lower / (1 - sigma * h / 2)
    if amplitude is None:
        raise ValueError("a window enclosure needs amplitude = sum_j |c_j| (an upper bound of sup|S|)")
    return lower, np.minimum(lower + sigma * h / 2 * np.asarray(amplitude), amplitude)


def bernstein_check(coeffs: np.ndarray, inv_freq: np.ndarray, distances,
                    sigma: float | None = None) -> dict[str, np.ndarray]:
    """L3 on sampled distances, as columns of one row per pair (``pd.DataFrame(result)`` is the table): ``sup_S`` (grid
    max, a lower bound of sup|S|), the grid maxima of ``|S'|`` and ``|S''|``, and the ratios ``ratio_1 = max|S'| /
    (sigma sup_S)``, ``ratio_2 = max|S''| / (sigma^2 sup_S)``. Using the grid max (<= the true sup) makes the ratios
    conservative: ``ratio <= 1`` certifies Eq. 3 at every sampled distance; a ratio above 1 on a dense long grid would
    be evidence against it.
    """
    theta = np.asarray(inv_freq, dtype=np.float64)
    sigma = float(theta.max()) if sigma is None else sigma
    S, S1, S2 = score(distances, coeffs, theta, order=(0, 1, 2))
    sup_S = np.abs(S).max(axis=-1)
    max1, max2 = np.abs(S1).max(axis=-1), np.abs(S2).max(axis=-1)
    return {
        "pair": np.arange(len(sup_S)),
        "sigma": np.full(len(sup_S), sigma),
        "sup_S": sup_S,
        "amplitude_sum": np.abs(np.atleast_2d(coeffs)).sum(axis=-1),
        "max_abs_d1": max1,
        "max_abs_d2": max2,
        "ratio_1": max1 / (sigma * sup_S),
        "ratio_2": max2 / (sigma**2 * sup_S),
    }


def random_coefficients(num_pairs: int, head_dim: int, rng: P.RngLike = None, convention: str = "half") -> np.ndarray:
    """Coefficients of ``num_pairs`` random Gaussian (q, k) pairs, ``(num_pairs, head_dim/2)`` complex."""
    gen = P.as_generator(rng)
    q, k = gen.standard_normal((2, num_pairs, head_dim))
    return score_coefficients(q, k, convention)


def pair_coefficients(q: np.ndarray, k: np.ndarray, num_pairs: int, rng: P.RngLike = None,
                      convention: str = "half") -> np.ndarray:
    """Coefficients of ``num_pairs`` (query token, key token, head) triples drawn from probed states.

    ``q`` ``(H, T, D)`` and ``k`` ``(H_kv, T, D)`` as returned by `endprompt.modeling.query_key_states`; with grouped
    query attention, query head ``h`` reads key head ``h // (H / H_kv)``. Returns ``(num_pairs, D/2)`` complex.
    """
    gen = P.as_generator(rng)
    H, T, _ = q.shape
    group = H // k.shape[0]
    h = gen.integers(0, H, num_pairs)
    i, j = gen.integers(0, T, num_pairs), gen.integers(0, T, num_pairs)
    return score_coefficients(q[h, i], k[h // group, j], convention)


# --- L5: distance sets ------------------------------------------------------------------------------------------------


def distance_sets(layout: Callable[[np.random.Generator], np.ndarray], target_len: int, samples: int = 1,
                  rng: P.RngLike = 0) -> tuple[np.ndarray, np.ndarray]:
    """L5: (observed, gap) distance intervals of a layout, the union over ``samples`` draws of ``layout(rng)`` (position
    ids of one sample, e.g. ``lambda g: endprompt.recipe.recipe_position_ids(recipe, g)``), gap within
    ``[0, target_len-1]``. One sample suffices for a deterministic layout."""
    gen = P.as_generator(rng)
    parts = [P.observed_distances(layout(gen)) for _ in range(samples)]
    observed = P.merge_intervals(np.concatenate(parts))
    observed = observed[observed[:, 0] <= target_len - 1]
    observed[:, 1] = np.minimum(observed[:, 1], target_len - 1)
    return observed, P.complement_intervals(observed, 0, target_len - 1)


# --- L6: identifiability ----------------------------------------------------------------------------------------------


def _exp_sums(intervals: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """``sum over d in the intervals of e^{i d omega}``, exactly, for an array of frequencies ``omega``."""
    total = np.zeros(omega.shape, dtype=np.complex128)
    half = omega / 2
    small = np.abs(np.sin(half)) < 1e-12
    for lo, hi in np.asarray(intervals, dtype=np.int64).reshape(-1, 2):
        n = hi - lo + 1
        # geometric sum, written with sines so it stays accurate for small omega: e^{i mid w} sin(n w/2) / sin(w/2)
        mid = (lo + hi) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(small, n, np.sin(n * half) / np.sin(half))
        total += np.exp(1j * mid * omega) * ratio
    return total


def gram(intervals, inv_freq: np.ndarray) -> np.ndarray:
    """L6: ``G = sum_{d in set} b(d) b(d)^T`` with ``b(d) = [cos(d theta), sin(d theta)]``, shape ``(2J, 2J)``, exact.

    S(d) = b(d) . x for the real unknowns ``x = [Re c, -Im c]``, so ``x^T G x`` is the squared score summed over the
    set. Built from closed-form sums of ``cos/sin(d (theta_i -+ theta_j))`` over each interval: O(J^2) per interval,
    independent of its length.
    """
    theta = np.asarray(inv_freq, dtype=np.float64)
    diff = _exp_sums(intervals, theta[:, None] - theta[None, :])  # (J, J)
    summ = _exp_sums(intervals, theta[:, None] + theta[None, :])
    cc = (diff.real + summ.real) / 2  # sum cos_i cos_j
    ss = (diff.real - summ.real) / 2  # sum sin_i sin_j
    cs = (summ.imag - diff.imag) / 2  # sum cos_i sin_j
    return np.block([[cc, cs], [cs.T, ss]])


def identifiability(observed, gap, inv_freq: np.ndarray, rcond: float = 1e-10) -> dict:
    """L6: how far the scores on the observed distances determine the score on the gap.

    ``S(d) = b(d) . x``. Let ``Pi`` project onto the span of the observed evaluation vectors ``{b(d): d observed}``
    (the eigenvectors of the observed Gram with eigenvalue above ``rcond * max``: its numerical rank). For a gap
    distance, ``b(d) = Pi b(d) + r(d)``: the first part is a combination of observed scores, ``r(d) . x`` is free.

    Returns a dict with
      ``unexplained_gap``: ``trace((I - Pi) Gg) / trace(Gg)``, the expected share of the score's mean square on the gap
        that the observed scores leave undetermined, for isotropic random coefficients (0 = fully pinned down);
      ``amplification``: ``sqrt`` of the largest generalized eigenvalue of the mean-square Grams ``(Gg, Go)`` on the
        determined subspace: an RMS error ``e`` of the score on the observed set allows at most ``amplification * e``
        RMS on the gap there;
      ``rank_observed`` (of ``2J`` unknowns), ``observed`` and ``gap`` (distance counts).
    """
    theta = np.asarray(inv_freq, dtype=np.float64)
    n_obs, n_gap = P.interval_count(observed), P.interval_count(gap)
    if n_obs == 0:
        raise ValueError("the observed set is empty")
    out = {"observed": n_obs, "gap": n_gap, "unknowns": 2 * len(theta)}
    evals, evecs = scipy.linalg.eigh(gram(observed, theta) / n_obs)
    keep = evals > rcond * evals.max()
    out["rank_observed"] = int(keep.sum())
    if n_gap == 0:
        return out | {"unexplained_gap": 0.0, "amplification": 0.0}
    Gg = gram(gap, theta) / n_gap
    seen = evecs[:, keep]  # (2J, r)
    explained = np.trace(seen.T @ Gg @ seen)
    W = seen / np.sqrt(evals[keep])  # whitening of the observed Gram on the seen subspace
    lam = np.linalg.eigvalsh(W.T @ Gg @ W).max()
    return out | {"unexplained_gap": float(max(1 - explained / np.trace(Gg), 0.0)),
                  "amplification": float(np.sqrt(max(lam, 0.0)))}

"""Position-id layouts for short-sequence context extension, and the relative distances they expose.

Every function here is pure numpy (no torch, no model) so that `endprompt.bound` and the data pipeline can share it.
A layout is a 1-D ``int64`` array of position ids, one per physical token, in physical (causal) order.

Layouts (``a`` text tokens, ``b`` terminal tokens, target length ``L`` = ``target_len``); which recipe uses which is
the recipe registry's business (`endprompt.recipe.RECIPES`, `endprompt.recipe.recipe_position_ids`):

- full-length:      ``0 .. n-1``                                   (plain contiguous training)
- EndPrompt:        ``0 .. a-1`` then ``L-b .. L-1``               (paper Eq. 5)
- random placement: ``0 .. a-1`` then ``t .. t+b-1``, ``t ~ U[a, L-b]`` (the authors' random variant)
- PoSE:             ``k`` contiguous chunks, chunk ``i`` shifted by a non-decreasing skip ``u_i``, ``u_1 = 0``
- ET(PoSE):         PoSE chunks for the body inside ``[0, L-b-1]``, then the terminal segment on ``L-b .. L-1``

Distance sets are lists of closed integer intervals ``[[lo, hi], ...]`` (an ``(m, 2)`` int64 array), sorted and merged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_generator",
    "full_position_ids",
    "endprompt_position_ids",
    "random_endprompt_position_ids",
    "pose_chunk_lengths",
    "pose_skips",
    "pose_position_ids",
    "endprompt_pose_position_ids",
    "observed_distances",
    "gap_distances",
    "endprompt_distance_sets",
    "merge_intervals",
    "complement_intervals",
    "interval_count",
    "segment_runs",
]

RngLike = np.random.Generator | int | Sequence[int] | None


def as_generator(rng: RngLike) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed, a sequence of ints (seed material) or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_layout(a: int, b: int, target_len: int) -> None:
    _check_int("a (segment-1 length)", a, 1)
    _check_int("b (terminal-segment length)", b, 1)
    _check_int("target_len", target_len, 2)
    if target_len <= a + b:
        raise ValueError(
            f"target_len={target_len} must exceed the physical length a + b = {a} + {b} = {a + b}; "
            f"there is nothing to extend. Raise target_len or shorten the segments (e.g. a <= {target_len - b - 1})."
        )


def full_position_ids(n: int, offset: int = 0) -> np.ndarray:
    """Contiguous ids ``offset .. offset+n-1``: full-length fine-tuning and pretraining."""
    _check_int("n", n, 0)
    _check_int("offset", offset, 0)
    return np.arange(offset, offset + n, dtype=np.int64)


def endprompt_position_ids(a: int, b: int, target_len: int) -> np.ndarray:
    """Paper Eq. 5: segment 1 on ``[0, a-1]``, the terminal segment on ``[target_len-b, target_len-1]``.

    Returns an ``(a + b,)`` int64 array. Raises if ``target_len <= a + b`` (the layout would not extend anything).
    """
    _check_layout(a, b, target_len)
    ids = np.empty(a + b, dtype=np.int64)
    ids[:a] = np.arange(a)
    ids[a:] = np.arange(target_len - b, target_len)
    return ids


def random_endprompt_position_ids(
    a: int, b: int, target_len: int, rng: RngLike = None, tail_start: int | None = None
) -> np.ndarray:
    """The authors' random variant: segment 2 starts at ``t ~ U[a, target_len-b]`` (both ends inclusive).

    ``t = a`` gives a contiguous sequence and ``t = target_len-b`` the EndPrompt layout. Pass ``tail_start`` to fix
    ``t`` (it is then validated instead of drawn).
    """
    _check_layout(a, b, target_len)
    if tail_start is None:
        tail_start = int(as_generator(rng).integers(a, target_len - b + 1))
    elif not a <= tail_start <= target_len - b:
        raise ValueError(f"tail_start={tail_start} must lie in [a, target_len-b] = [{a}, {target_len - b}]")
    ids = np.empty(a + b, dtype=np.int64)
    ids[:a] = np.arange(a)
    ids[a:] = np.arange(tail_start, tail_start + b)
    return ids


def pose_chunk_lengths(window: int, num_chunks: int = 2, rng: RngLike = None) -> list[int]:
    """Split a physical window of ``window`` tokens into ``num_chunks`` non-empty chunks, PoSE-style.

    Two chunks follow PoSE's code exactly: ``r1 ~ U[1, (window+1)//2]``, ``r2 = window - r1``. For ``k > 2`` chunks the
    ``k-1`` cut points are ``k-1`` distinct draws from ``[1, window-1]``, sorted (every chunk has at least one token).
    """
    _check_int("num_chunks", num_chunks, 1)
    _check_int("window", window, num_chunks)
    gen = as_generator(rng)
    if num_chunks == 1:
        return [window]
    if num_chunks == 2:
        r1 = int(gen.integers(1, (window + 1) // 2 + 1))
        return [r1, window - r1]
    cuts = np.sort(gen.choice(np.arange(1, window), size=num_chunks - 1, replace=False))
    edges = np.concatenate([[0], cuts, [window]])
    return [int(x) for x in np.diff(edges)]


def pose_skips(num_chunks: int, max_skip: int, rng: RngLike = None) -> list[int]:
    """Non-decreasing skips ``0 = u_1 <= u_2 <= ... <= u_k <= max_skip``, drawn as in the PoSE paper:
    ``u_i ~ U[u_{i-1}, max_skip]`` (for two chunks: ``u_2 ~ U[0, max_skip]``, as in PoSE's code)."""
    _check_int("num_chunks", num_chunks, 1)
    _check_int("max_skip", max_skip, 0)
    gen = as_generator(rng)
    skips = [0]
    for _ in range(num_chunks - 1):
        skips.append(int(gen.integers(skips[-1], max_skip + 1)))
    return skips


def _chunked_ids(chunk_lens: Sequence[int], skips: Sequence[int]) -> np.ndarray:
    # a token's id is its physical index plus the skip of its chunk, so each chunk stays contiguous
    lens = np.asarray(chunk_lens, dtype=np.int64)  # (k,)
    return np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(np.asarray(skips, dtype=np.int64), lens)


def _check_chunks(chunk_lens: Sequence[int], skips: Sequence[int] | None, max_skip: int) -> None:
    if len(chunk_lens) == 0:
        raise ValueError("chunk_lens is empty; give at least one chunk length")
    for i, c in enumerate(chunk_lens):
        _check_int(f"chunk_lens[{i}]", c, 1)
    if skips is None:
        return
    if len(skips) != len(chunk_lens):
        raise ValueError(f"skips has {len(skips)} entries but there are {len(chunk_lens)} chunks")
    if skips[0] != 0 or any(s1 > s2 for s1, s2 in zip(skips, skips[1:])) or skips[-1] > max_skip:
        raise ValueError(f"skips={list(skips)} must start at 0, be non-decreasing and end <= {max_skip}")


def pose_position_ids(
    chunk_lens: Sequence[int], target_len: int, rng: RngLike = None, skips: Sequence[int] | None = None
) -> np.ndarray:
    """PoSE (Zhu et al. 2023): chunk ``i`` keeps its tokens contiguous and is shifted by skip ``u_i``.

    The physical window is ``w = sum(chunk_lens)``; the skips satisfy ``0 = u_1 <= ... <= u_k <= target_len - w`` so the
    last id is at most ``target_len - 1``. Drawn with `pose_skips` unless given.
    """
    _check_int("target_len", target_len, 1)
    window = int(sum(chunk_lens))
    if window > target_len:
        raise ValueError(f"PoSE window sum(chunk_lens)={window} exceeds target_len={target_len}")
    _check_chunks(chunk_lens, skips, target_len - window)
    if skips is None:
        skips = pose_skips(len(chunk_lens), target_len - window, rng)
    return _chunked_ids(chunk_lens, skips)


def endprompt_pose_position_ids(
    chunk_lens: Sequence[int],
    b: int,
    target_len: int,
    rng: RngLike = None,
    skips: Sequence[int] | None = None,
) -> np.ndarray:
    """ET(PoSE), our definition of the paper's hybrid (its construction is not given in the paper).

    The body of ``a = sum(chunk_lens)`` text tokens is laid out PoSE-style inside ``[0, target_len-b-1]``: chunk 1
    starts at position 0 (the head stays where pretraining put it), later chunks are shifted by non-decreasing skips
    ``u_i <= target_len - b - a``. The terminal segment of ``b`` tokens always sits on ``[target_len-b, target_len-1]``
    as in Eq. 5. With one chunk this is exactly `endprompt_position_ids`. The skips fill the middle distances that plain
    EndPrompt leaves unobserved (Eq. 9) while every sample still anchors the terminal segment at the target length.
    """
    a = int(sum(chunk_lens))
    _check_layout(a, b, target_len)
    max_skip = target_len - b - a
    _check_chunks(chunk_lens, skips, max_skip)
    if skips is None:
        skips = pose_skips(len(chunk_lens), max_skip, rng)
    ids = np.empty(a + b, dtype=np.int64)
    ids[:a] = _chunked_ids(chunk_lens, skips)
    ids[a:] = np.arange(target_len - b, target_len)
    return ids


# --- distance sets ---------------------------------------------------------------------------------------------------


def merge_intervals(intervals) -> np.ndarray:
    """Sort closed integer intervals and merge overlapping or adjacent ones (``[0,3] + [4,6] -> [0,6]``)."""
    iv = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)  # (m, 2)
    if len(iv) == 0:
        return iv
    if np.any(iv[:, 0] > iv[:, 1]):
        raise ValueError(f"intervals must have lo <= hi, got {iv[iv[:, 0] > iv[:, 1]].tolist()}")
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    reach = np.maximum.accumulate(iv[:, 1])  # furthest end seen so far
    new_group = np.concatenate([[True], iv[1:, 0] > reach[:-1] + 1])
    starts = iv[new_group, 0]
    ends = np.maximum.reduceat(iv[:, 1], np.flatnonzero(new_group))
    return np.stack([starts, ends], axis=1)


def complement_intervals(intervals, lo: int, hi: int) -> np.ndarray:
    """The integers of ``[lo, hi]`` not covered by ``intervals``, as merged closed intervals."""
    iv = merge_intervals(intervals)
    out, cur = [], lo
    for s, e in iv:
        if e < cur:
            continue
        if s > hi:
            break
        if s > cur:
            out.append((cur, s - 1))
        cur = max(cur, e + 1)
    if cur <= hi:
        out.append((cur, hi))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def interval_count(intervals) -> int:
    """How many integers the (merged) intervals cover."""
    iv = merge_intervals(intervals)
    return int((iv[:, 1] - iv[:, 0] + 1).sum()) if len(iv) else 0


def segment_runs(position_ids) -> np.ndarray:
    """Maximal runs of step +1 in a layout, as ``(first_id, length)`` rows: shape ``(r, 2)``."""
    p = np.asarray(position_ids, dtype=np.int64).ravel()
    if p.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(p) != 1) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [p.size]]))
    return np.stack([p[starts], lengths], axis=1)


def observed_distances(position_ids) -> np.ndarray:
    """Relative distances ``p_i - p_j`` over all causal pairs ``j <= i`` (physical order) of one layout, merged.

    Works on runs of contiguous ids, not on token pairs: within a run of length ``n`` the distances are ``[0, n-1]``;
    between an earlier run ``[s1, e1]`` and a later run ``[s2, e2]`` they are every integer of ``[s2-e1, e2-s1]``
    (a sum of two integer intervals). Cost is O(r^2) in the number of runs ``r``, independent of ``target_len``. For
    the EndPrompt layout the result is Eq. 8: ``[0, a-1] U [0, b-1] U [L-a-b+1, L-1]``.
    """
    runs = segment_runs(position_ids)  # (r, 2)
    if len(runs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    first, length = runs[:, 0], runs[:, 1]
    last = first + length - 1
    within = np.stack([np.zeros_like(length), length - 1], axis=1)  # (r, 2)
    i, j = np.triu_indices(len(runs), k=1)  # run i physically before run j
    across = np.stack([first[j] - last[i], last[j] - first[i]], axis=1)  # (r(r-1)/2, 2)
    return merge_intervals(np.concatenate([within, across]))


def gap_distances(position_ids, max_distance: int | None = None) -> np.ndarray:
    """Distances in ``[0, max_distance]`` that the layout never exposes (Eq. 9 for EndPrompt).

    ``max_distance`` defaults to ``max(ids) - min(ids)``; pass ``target_len - 1`` to measure against the target window.
    """
    p = np.asarray(position_ids, dtype=np.int64).ravel()
    if max_distance is None:
        max_distance = int(p.max() - p.min()) if p.size else 0
    return complement_intervals(observed_distances(p), 0, max_distance)


def endprompt_distance_sets(a: int, b: int, target_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed forms of Eq. 8 (observed) and Eq. 9 (gap, within ``[0, target_len-1]``) for the EndPrompt layout."""
    _check_layout(a, b, target_len)
    observed = merge_intervals([(0, a - 1), (0, b - 1), (target_len - a - b + 1, target_len - 1)])
    lo, hi = max(a, b), target_len - a - b
    gap = np.asarray([(lo, hi)] if hi >= lo else [], dtype=np.int64).reshape(-1, 2)
    return observed, gap

"""endprompt.positions: layouts (input sanity, properties from the paper) and distance sets against brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endprompt import positions as P

FAST = settings(max_examples=60, deadline=None)


@st.composite
def layouts(draw, max_len=100_000):
    """(a, b, target_len) with target_len > a + b."""
    a = draw(st.integers(1, 5000))
    b = draw(st.integers(1, 200))
    target_len = draw(st.integers(a + b + 1, max(a + b + 1, max_len)))
    return a, b, target_len


def brute_distances(ids) -> set[int]:
    ids = np.asarray(ids)
    i, j = np.tril_indices(len(ids))  # j <= i: key j physically before (or at) query i
    return set((ids[i] - ids[j]).tolist())


def as_set(intervals) -> set[int]:
    return {d for lo, hi in np.asarray(intervals).reshape(-1, 2) for d in range(lo, hi + 1)}


# --- layouts ----------------------------------------------------------------------------------------------------------


@FAST
@given(layouts())
def test_endprompt_layout_is_eq5(layout):
    a, b, L = layout
    ids = P.endprompt_position_ids(a, b, L)
    assert ids.dtype == np.int64 and ids.shape == (a + b,)
    assert ids[0] == 0 and ids[-1] == L - 1
    np.testing.assert_array_equal(ids[:a], np.arange(a))
    np.testing.assert_array_equal(ids[a:], np.arange(L - b, L))
    assert np.all(np.diff(ids) > 0)


@FAST
@given(layouts(), st.integers(0, 2**32 - 1))
def test_random_placement(layout, seed):
    a, b, L = layout
    ids = P.random_endprompt_position_ids(a, b, L, rng=seed)
    t = ids[a]
    assert a <= t <= L - b
    np.testing.assert_array_equal(ids[:a], np.arange(a))
    np.testing.assert_array_equal(ids[a:], np.arange(t, t + b))
    np.testing.assert_array_equal(ids, P.random_endprompt_position_ids(a, b, L, rng=seed))  # seeded


def test_random_placement_covers_both_ends():
    starts = {int(P.random_endprompt_position_ids(3, 2, 10, rng=s)[3]) for s in range(400)}
    assert starts == set(range(3, 9))  # U[a, L-b] inclusive: t = a (contiguous) .. L-b (EndPrompt)
    ids = P.random_endprompt_position_ids(3, 2, 10, tail_start=8)
    np.testing.assert_array_equal(ids, P.endprompt_position_ids(3, 2, 10))
    with pytest.raises(ValueError, match="tail_start=9"):
        P.random_endprompt_position_ids(3, 2, 10, tail_start=9)


@FAST
@given(st.integers(2, 10_000), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_pose_chunk_lengths(window, k, seed):
    k = min(k, window)
    lens = P.pose_chunk_lengths(window, k, rng=seed)
    assert len(lens) == k and sum(lens) == window and min(lens) >= 1
    if k == 2:
        assert lens[0] <= (window + 1) // 2  # PoSE: r1 ~ U[1, (w+1)//2]


@FAST
@given(st.integers(2, 4000), st.integers(1, 5), st.integers(1, 100_000), st.integers(0, 2**32 - 1))
def test_pose_layout(window, k, extra, seed):
    k = min(k, window)
    L = window + extra
    lens = P.pose_chunk_lengths(window, k, rng=seed)
    ids = P.pose_position_ids(lens, L, rng=seed)
    assert ids.shape == (window,) and ids[0] == 0 and ids[-1] <= L - 1
    assert np.all(np.diff(ids) >= 1)  # strictly increasing
    assert len(P.segment_runs(ids)) <= k  # contiguous within each chunk
    edges = np.cumsum(lens)[:-1]
    inside = np.ones(window - 1, dtype=bool)
    inside[edges - 1] = False
    assert np.all(np.diff(ids)[inside] == 1)


def test_pose_two_chunks_matches_reference_rule():
    ids = P.pose_position_ids([3, 4], 20, skips=[0, 9])
    np.testing.assert_array_equal(ids, [0, 1, 2, 12, 13, 14, 15])  # chunk 2 shifted by u = 9
    with pytest.raises(ValueError, match="non-decreasing"):
        P.pose_position_ids([3, 4], 20, skips=[0, 14])  # u <= L - w = 13


@FAST
@given(layouts(max_len=50_000), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_endprompt_pose_layout(layout, k, seed):
    a, b, L = layout
    k = min(k, a)
    lens = P.pose_chunk_lengths(a, k, rng=seed)
    ids = P.endprompt_pose_position_ids(lens, b, L, rng=seed)
    assert ids[0] == 0 and ids[-1] == L - 1
    np.testing.assert_array_equal(ids[a:], np.arange(L - b, L))  # terminal segment anchored at the target
    assert ids[a - 1] <= L - b - 1
    assert np.all(np.diff(ids) >= 1)
    np.testing.assert_array_equal(P.endprompt_pose_position_ids([a], b, L, rng=seed), P.endprompt_position_ids(a, b, L))


def test_full_layout():
    np.testing.assert_array_equal(P.full_position_ids(5), np.arange(5))
    np.testing.assert_array_equal(P.full_position_ids(3, offset=7), [7, 8, 9])


# --- distance sets ----------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=40))
def test_observed_distances_brute_force_any_layout(ids):
    # arbitrary ids: jumps, repeats and backwards steps included
    assert as_set(P.observed_distances(ids)) == brute_distances(ids)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 10), st.integers(1, 80), st.integers(0, 2**16))
def test_observed_and_gap_brute_force_all_builders(a, b, extra, seed):
    L = a + b + extra
    for ids in (
        P.endprompt_position_ids(a, b, L),
        P.random_endprompt_position_ids(a, b, L, rng=seed),
        P.pose_position_ids(P.pose_chunk_lengths(a + b, min(3, a + b), rng=seed), L, rng=seed),
        P.full_position_ids(a + b),
    ):
        observed = brute_distances(ids)
        assert as_set(P.observed_distances(ids)) == observed
        assert as_set(P.gap_distances(ids, L - 1)) == set(range(L)) - observed


@FAST
@given(layouts(max_len=200_000))
def test_endprompt_distances_are_eq8_eq9(layout):
    a, b, L = layout
    ids = P.endprompt_position_ids(a, b, L)
    observed, gap = P.endprompt_distance_sets(a, b, L)
    np.testing.assert_array_equal(P.observed_distances(ids), observed)
    np.testing.assert_array_equal(P.gap_distances(ids, L - 1), gap)
    if L - a - b >= max(a, b):  # Eq. 9's condition
        np.testing.assert_array_equal(gap, [[max(a, b), L - a - b]])


def test_distance_snapshot_paper_setting():
    # a = 8192, b = 20, L = 131072: intervals straight from the runs, no pair enumeration
    observed = P.observed_distances(P.endprompt_position_ids(8192, 20, 131072))
    np.testing.assert_array_equal(observed, [[0, 8191], [122861, 131071]])
    gap = P.gap_distances(P.endprompt_position_ids(8192, 20, 65536), 65535)
    np.testing.assert_array_equal(gap, [[8192, 57324]])
    assert P.interval_count(gap) == 49133


def test_interval_helpers():
    np.testing.assert_array_equal(P.merge_intervals([(5, 7), (0, 3), (4, 4), (10, 12), (11, 11)]), [[0, 7], [10, 12]])
    np.testing.assert_array_equal(P.complement_intervals([(2, 3), (6, 6)], 0, 8), [[0, 1], [4, 5], [7, 8]])
    assert P.interval_count([(0, 3), (2, 5)]) == 6
    assert P.merge_intervals([]).shape == (0, 2)
    with pytest.raises(ValueError, match="lo <= hi"):
        P.merge_intervals([(3, 1)])


# --- bad input --------------------------------------------------------------------------------------------------------


def test_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"target_len=30 must exceed the physical length a \+ b = 20 \+ 10"):
        P.endprompt_position_ids(20, 10, 30)
    with pytest.raises(ValueError, match=r"b \(terminal-segment length\) must be >= 1, got 0"):
        P.endprompt_position_ids(20, 0, 100)
    with pytest.raises(TypeError, match="must be an int"):
        P.endprompt_position_ids(2.5, 1, 100)
    with pytest.raises(ValueError, match="exceeds target_len"):
        P.pose_position_ids([30, 30], 50)

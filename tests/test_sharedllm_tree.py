"""The context tree of SharedLLM: levels tile the chunk, kept nodes tile it, ratios alpha_w = 2 alpha_(w+1), beta."""

import numpy as np
import pytest

from endprompt.sharedllm.tree import TreeSpec, compress_layout, keep_indices, select_nodes, split_tree


def _tiles(nodes, length):
    spans = sorted((n.start, n.end) for n in nodes)
    return spans[0][0] == 0 and spans[-1][1] == length and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_paper_ratios():
    spec = TreeSpec(chunk_size=1024, height=3, beta=8)
    assert [spec.alpha(w) for w in (1, 2, 3)] == [16, 8, 4]
    assert all(spec.alpha(w) == 2 * spec.alpha(w + 1) for w in (1, 2))
    layout = compress_layout(spec)
    assert [len(idx) for _, idx in layout] == [32, 32, 32, 32]  # the reference code's last_p = 32 per node
    assert sum(len(idx) for _, idx in layout) * 8 == 1024  # beta = 8 overall


@pytest.mark.parametrize("chunk,height,beta", [(1024, 3, 8), (64, 3, 8), (256, 2, 4), (96, 1, 2)])
def test_midpoint_tree_sizes_and_ratios(chunk, height, beta):
    spec = TreeSpec(chunk_size=chunk, height=height, beta=beta)
    levels = split_tree(spec)
    for w, nodes in enumerate(levels):
        assert len(nodes) == 2**w and _tiles(nodes, chunk)
        assert {n.size for n in nodes} <= {chunk // 2**w, -(-chunk // 2**w)}
    for choice in (lambda a, b: 0, lambda a, b: 1):
        layout = compress_layout(spec, choice)
        assert _tiles([n for n, _ in layout], chunk)
        assert sorted(n.level for n, _ in layout) == list(range(1, height)) + [height, height]
        for node, idx in layout:
            assert idx.min() >= node.start and idx.max() == node.end - 1 and len(set(idx)) == len(idx)
            assert len(idx) == pytest.approx(node.size / spec.alpha(node.level), abs=0.5)
        assert sum(len(i) for _, i in layout) == pytest.approx(chunk / beta, abs=(height + 1) / 2)


def test_noisy_splits_cover_the_chunk_exactly():
    spec = TreeSpec(chunk_size=64, height=3, beta=8, split_noise=0.3)
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(50):
        levels = split_tree(spec, rng=rng)
        for w, nodes in enumerate(levels):
            assert len(nodes) == 2**w and _tiles(nodes, 64)
            assert min(n.size for n in nodes) >= 2 ** (3 - w)  # every leaf below keeps a token
        moved += levels[1][0].size != 32
        kept, path = select_nodes(levels, lambda a, b: int(rng.integers(2)))
        assert _tiles(kept, 64) and len(path) == 2
        assert all(1 <= len(keep_indices(n, spec)) <= n.size for n in kept)
    assert moved > 25  # training splits are not the midpoints
    assert split_tree(spec) == split_tree(spec)  # evaluation splits are deterministic


def test_selection_walks_the_chosen_side():
    spec = TreeSpec(chunk_size=64, height=3, beta=8)
    kept, path = select_nodes(split_tree(spec), lambda a, b: 0)
    assert path == [0, 0]
    assert [(n.level, n.start, n.end) for n in kept] == [(3, 0, 8), (3, 8, 16), (2, 16, 32), (1, 32, 64)]


def test_bad_specs_are_refused():
    for kwargs in ({"height": 0}, {"beta": 0.5}, {"chunk_size": 4}, {"chunk_size": 16, "beta": 8},
                   {"split_noise": 1.0}):
        with pytest.raises(ValueError):
            TreeSpec(**kwargs)
    with pytest.raises(ValueError, match="level"):
        TreeSpec().alpha(4)

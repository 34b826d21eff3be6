"""SharedLLM's context tree (arXiv 2603.04759, §3.2): the multi-grained layout of one context chunk.

A chunk of ``C`` tokens is the root (level 0) of a binary tree of height ``h`` (3 in the paper): every node is split in
two children, down to ``2^h`` leaves. The split point is the midpoint at evaluation; in training it moves by Gaussian
noise (std ``split_noise`` x half the node's length), so the model does not learn fixed boundaries.

Query-aware retrieval is a depth-first walk: at each node, the child whose representation is closer (cosine) to the
query is *expanded*; the other child is *kept* at this level's granularity. At level ``h`` both children of the
expanded node are kept. The kept nodes therefore tile the chunk exactly: one node per level ``1..h-1`` and two at
level ``h``, coarse far from the query's interest, fine around it.

A kept node of level ``w`` is downsampled uniformly with ratio ``alpha_w`` (one token of every ``alpha_w``), and
``alpha_w = 2 alpha_(w+1)``: each level is twice as coarse as the one below. With midpoint splits every kept node then
keeps the same number of tokens ``C / (2^h alpha_h)``, and the whole chunk ``(h + 1) C / (2^h alpha_h)``; the overall
ratio ``beta = C / kept`` fixes ``alpha_h = beta (h + 1) / 2^h`` (paper: h = 3, beta = 8 -> alpha = 16, 8, 4 for
levels 1, 2, 3; a 1024-token chunk keeps 4 x 32 = 128 tokens). The reference code reaches the same numbers by keeping
a fixed count per node (``last_p``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TreeSpec", "Node", "split_tree", "select_nodes", "keep_indices", "compress_layout"]


@dataclass(frozen=True)
class TreeSpec:
    """Shape of every chunk's tree.

    Attributes:
        chunk_size: tokens per context chunk (the root); 1024 in the paper's language modelling.
        height: levels below the root (3 in the paper); the tree has ``2^height`` leaves.
        beta: overall compression ratio of a chunk (8 in the paper).
        split_noise: std of a training split point, as a fraction of half the node's length (0 = midpoints).
    """

    chunk_size: int = 1024
    height: int = 3
    beta: float = 8.0
    split_noise: float = 0.1

    def __post_init__(self):
        if self.height < 1:
            raise ValueError(f"height={self.height}: the tree needs at least one level below the root")
        if self.beta < 1:
            raise ValueError(f"beta={self.beta} must be >= 1 (the chunk keeps chunk_size / beta tokens)")
        if self.chunk_size < 2**self.height:
            raise ValueError(f"chunk_size={self.chunk_size} < 2^height={2**self.height}: every leaf needs a token; "
                             "raise chunk_size or lower height")
        if self.chunk_size / self.beta < self.height + 1:
            raise ValueError(f"chunk_size / beta = {self.chunk_size / self.beta:g} < height + 1 = {self.height + 1} "
                             "kept nodes: every kept node needs a token; lower beta or raise chunk_size")
        if not 0 <= self.split_noise < 1:
            raise ValueError(f"split_noise={self.split_noise} must be in [0, 1)")

    def alpha(self, level: int) -> float:
        """Downsampling ratio of a kept node at ``level`` (1..height): ``alpha_w = 2 alpha_(w+1)``."""
        if not 1 <= level <= self.height:
            raise ValueError(f"level={level} outside 1..{self.height}")
        return self.beta * (self.height + 1) / 2**self.height * 2 ** (self.height - level)


@dataclass(frozen=True)
class Node:
    """A node of a chunk's tree: tokens ``[start, end)`` of the chunk, at ``level`` (0 = root)."""

    level: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def split_tree(spec: TreeSpec, length: int | None = None, rng: np.random.Generator | None = None) -> list[list[Node]]:
    """All levels of the tree over ``length`` tokens (default ``spec.chunk_size``): ``levels[w]`` lists the ``2^w``
    nodes of level ``w`` left to right. ``rng`` given (training): Gaussian split points; None: midpoints."""
    length = spec.chunk_size if length is None else length
    if length < 2**spec.height:
        raise ValueError(f"a chunk of {length} tokens cannot hold 2^height={2**spec.height} leaves")
    levels = [[Node(0, 0, length)]]
    for w in range(1, spec.height + 1):
        below = 2 ** (spec.height - w)  # leaves under each child: each child needs at least that many tokens
        nodes = []
        for parent in levels[-1]:
            mid = parent.start + parent.size / 2
            if rng is not None and spec.split_noise > 0:
                mid += rng.normal(0.0, spec.split_noise * parent.size / 2)
            cut = int(np.clip(round(mid), parent.start + below, parent.end - below))
            nodes += [Node(w, parent.start, cut), Node(w, cut, parent.end)]
        levels.append(nodes)
    return levels


def select_nodes(levels: list[list[Node]], choose: Callable[[Node, Node], int] | Sequence[int]
                 ) -> tuple[list[Node], list[int]]:
    """Depth-first query-aware walk: ``choose(left, right)`` returns 0 or 1, the child to expand (or ``choose`` is
    the list of those choices, one per level 1..height-1). Returns the kept nodes in chunk order (they tile the
    chunk) and the choices made."""
    if not callable(choose):
        replay = iter(choose)
        choose = lambda left, right: next(replay)
    height = len(levels) - 1
    node, kept, path = levels[0][0], [], []
    for w in range(1, height + 1):
        left, right = (n for n in levels[w] if n.start >= node.start and n.end <= node.end)
        if w == height:
            kept += [left, right]
            break
        pick = int(choose(left, right))
        if pick not in (0, 1):
            raise ValueError(f"choose must return 0 (left) or 1 (right), got {pick}")
        path.append(pick)
        kept.append(right if pick == 0 else left)
        node = left if pick == 0 else right
    return sorted(kept, key=lambda n: n.start), path


def keep_indices(node: Node, spec: TreeSpec) -> np.ndarray:
    """Chunk positions kept from ``node``: ``round(size / alpha_level)`` (at least 1) uniformly spaced tokens, each the
    last of its stride (a causal compressor's token has read its stride; the reference code takes the first)."""
    k = max(1, min(node.size, round(node.size / spec.alpha(node.level))))
    return node.start + (np.arange(1, k + 1) * node.size) // k - 1


def compress_layout(spec: TreeSpec, choose: Callable[[Node, Node], int] | None = None,
                    rng: np.random.Generator | None = None) -> list[tuple[Node, np.ndarray]]:
    """The kept nodes of one chunk and their kept positions; ``choose`` None always expands the right child (the
    paper's choice for language modelling)."""
    levels = split_tree(spec, rng=rng)
    kept, _ = select_nodes(levels, choose or (lambda left, right: 1))
    return [(n, keep_indices(n, spec)) for n in kept]

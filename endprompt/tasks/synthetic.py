"""Synthetic task generators shared by the training mixture (`endprompt.mixture`) and the evaluation suite
(`endprompt.evaluate`): RULER's needle tasks and variable tracking, the PI paper's passkey, and MQAR.

Each generator is a pure function of a haystack size ``n``, a seed and a ``style`` ("ruler": RULER's wording;
"compact": short wording for tiny byte-level models) and returns the prompt (ending with the answer prefix) and the
reference answers. `fit_units` finds the largest ``n`` whose prompt fits a token budget, as RULER sizes its haystacks.
What RULER does differently is listed in `endprompt.evaluate.ruler`.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from endprompt.tasks.text import NOISE, essay_sentences, random_key, random_value

__all__ = ["NIAH", "NiahSpec", "TaskDoesNotFit", "fit_units", "niah", "vt", "vt_example", "passkey", "mqar_example"]


class TaskDoesNotFit(Exception):
    """Even an empty haystack does not fit in the requested length, or the haystack runs out before it fills the
    length; reported as not run, with the reason."""


@dataclass(frozen=True)
class NiahSpec:
    """One RULER needle task: haystack kind, key and value kinds, and how many keys, values per key and queries."""

    haystack: str  # noise | essay | needle
    key_kind: str  # words | uuids
    value_kind: str  # numbers | uuids
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


NIAH = {
    "niah_single_1": NiahSpec("noise", "words", "numbers"),
    "niah_single_2": NiahSpec("essay", "words", "numbers"),
    "niah_single_3": NiahSpec("essay", "words", "uuids"),
    "niah_multikey_1": NiahSpec("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NiahSpec("needle", "words", "numbers"),
    "niah_multikey_3": NiahSpec("needle", "uuids", "uuids"),
    "niah_multivalue": NiahSpec("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NiahSpec("essay", "words", "numbers", num_keys=4, num_queries=4),
}

_RULER_NIAH = ("Some special magic {kind} are hidden within the following text. Make sure to memorize it. I will quiz "
               "you about the {kind} afterwards.\n{context}\nWhat are all the special magic {kind} for {query} "
               "mentioned in the provided text?")
_VT = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: "
       "Find all variables that are assigned the value {query} in the text above.")
_VT_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {n} variables are "
              "assigned the value {query}, they are: ")  # RULER's spelling since May 2025 (was "assgined")
_VT_EXAMPLE_TOKENS = 500  # RULER fits its one-shot vt example to 500 tokens


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


@lru_cache(maxsize=4)
def _essay_words(essay: str | None) -> tuple[str, ...]:
    return tuple(" ".join(essay_sentences(essay)).split(" "))


@lru_cache(maxsize=4)
def _sentence_starts(essay: str | None) -> np.ndarray:
    text = _essay_words(essay)
    return np.array([0] + [i + 1 for i, w in enumerate(text[:-1]) if w.endswith((".", "!", "?"))])


def _insert(units: list[str], inserts: list[str], fractions: np.ndarray) -> list[str]:
    """Insert ``inserts`` into ``units`` at relative depths ``fractions`` (sorted), keeping their order."""
    out, last = [], 0
    cuts = [int(round(f * len(units))) for f in fractions]
    for cut, item in zip(cuts, inserts):
        out += units[last:cut] + [item]
        last = cut
    return out + units[last:]


def niah(task: str, n: int, seed, style: str = "ruler", essay: str | None = None) -> tuple[str, list[str], dict]:
    """A RULER needle task (``NIAH``) with ``n`` haystack units (noise lines, distractor needles or essay words):
    ``(prompt ending with the answer prefix, answers, meta)``; ``style`` "ruler" or "compact"."""
    spec = NIAH[task]
    rng = np.random.default_rng(seed)
    kind = spec.value_kind
    keys = [random_value("uuids", rng) if spec.key_kind == "uuids" else random_key(rng) for _ in range(spec.num_keys)]
    values = [[random_value(kind, rng) for _ in range(spec.num_values)] for _ in keys]
    needle = ("One of the special magic {kind} for {key} is: {value}." if style == "ruler"
              else "The {kind} for {key} is {value}.".replace("{kind}", kind[:-1]))
    needles = [needle.format(kind=kind, key=k, value=v) for k, vs in zip(keys, values) for v in vs]
    needles = [needles[i] for i in rng.permutation(len(needles))]
    fractions = np.sort(rng.random(len(needles)))
    queried = rng.choice(spec.num_keys, spec.num_queries, replace=False).tolist()  # in drawn order, as RULER
    hay = np.random.default_rng([*np.atleast_1d(seed), 7])  # haystack draws: extending n only appends
    if spec.haystack == "noise":
        units = [NOISE] * n
    elif spec.haystack == "needle":
        units = [needle.format(kind=kind, key=random_value("uuids", hay) if spec.key_kind == "uuids"
                               else random_key(hay), value=random_value(kind, hay)) for _ in range(n)]
    else:  # n words of prose from a random sentence on (repeated if needed, as RULER); needles at sentence ends
        text = _essay_words(essay)
        start = int(hay.choice(_sentence_starts(essay)))
        units = [text[(start + i) % len(text)] for i in range(n)]
        ends = [i + 1 for i, w in enumerate(units) if w.endswith((".", "!", "?"))] or [len(units)]
        cuts = [max([0] + [e for e in ends if e <= f * len(units)]) for f in fractions]
        fractions = np.array(cuts, dtype=float) / max(len(units), 1)
    context = ("\n" if spec.haystack != "essay" else " ").join(_insert(units, needles, fractions))
    answers = [v for i in queried for v in values[i]]
    query = _join([keys[i] for i in queried])
    single = len(answers) == 1
    if style == "ruler":
        template = _RULER_NIAH
        if single:  # RULER's singular wording
            template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
        noun = kind[:-1] if single else kind
        prompt = template.format(kind=noun, context=context, query=query)
        verb = "is" if single else "are"
        prompt += f" The special magic {noun} for {query} mentioned in the provided text {verb}"
    else:
        # the answer prefix restates the query as RULER's does ("The special magic number for {query} mentioned in the
        # provided text is"), in the needle's own words, so the answer follows the words that preceded it in the needle
        noun, verb = (kind[:-1], "is") if single else (kind, "are")
        prompt = f"{context}\nWhat {verb} the {noun} for {query}? Answer: The {noun} for {query} {verb}"
    return prompt, answers, {"depths": np.round(fractions, 4).tolist()}


def _insert_before(units: list[str], inserts: list[str], positions: list[int]) -> list[str]:
    """Insert ``inserts[j]`` just before ``units[positions[j]]`` (``positions`` sorted; ``len(units)`` appends)."""
    out, last = [], 0
    for pos, item in zip(positions, inserts):
        out += units[last:pos] + [item]
        last = pos
    return out + units[last:]


def _vt_chain(rng: np.random.Generator, letters: int, hops: int = 4) -> tuple[list[str], list[str], str]:
    """RULER's chain: ``hops + 1`` distinct upper-case names, "VAR A = value", then "VAR B = VAR A " (RULER's trailing
    space) and so on; the value has 5 digits (``randint(10000, 99999)``, upper bound excluded)."""
    names: list[str] = []
    while len(names) < hops + 1:
        name = "".join(rng.choice(list(string.ascii_uppercase), letters))
        if name not in names:
            names.append(name)
    value = str(int(rng.integers(10000, 99999)))
    statements = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(hops)]
    return names, statements, value


def _vt_ruler(n: int, rng: np.random.Generator, letters: int) -> tuple[str, list[str]]:
    """RULER's vt prompt with ``n`` noise lines: the chain's statements go before distinct, sorted noise lines (after
    all of them only when ``n`` is smaller than the chain), one per line."""
    names, statements, value = _vt_chain(rng, letters)
    k = len(statements)
    positions = sorted(rng.choice(n, k, replace=False).tolist() if n >= k else rng.integers(0, n + 1, k).tolist())
    context = "\n".join(_insert_before([NOISE] * n, statements, positions))
    return _VT.format(context=context, query=value) + _VT_PREFIX.format(n=len(names), query=value), names


def vt_example(seed, count: Callable[[str], int]) -> str:
    """RULER's one-shot vt example: 3-letter names, as much noise as fits in 500 tokens of ``count`` (the answer not
    counted), followed by its answer; seeded by ``seed``, the same for every haystack size of the main prompt."""
    key = [*np.atleast_1d(seed), 11]
    n = fit_units(lambda m: _vt_ruler(m, np.random.default_rng(key), 3)[0], count, _VT_EXAMPLE_TOKENS, start=4)
    prompt, names = _vt_ruler(n, np.random.default_rng(key), 3)
    return prompt + " " + " ".join(names)


def vt(n: int, seed, style: str = "ruler", example: str = "") -> tuple[str, list[str], dict]:
    """vt with ``n`` noise units. ``style="ruler"``: RULER's prompt after ``example`` (`vt_example`), separated by a
    blank line. ``style="compact"``: 5-letter names, noise joined by spaces, no example."""
    rng = np.random.default_rng(seed)
    if style == "ruler":
        prompt, names = _vt_ruler(n, rng, 5)
        return (example + "\n\n" if example else "") + prompt, names, {}
    names: list[str] = []
    while len(names) < 5:
        name = "".join(rng.choice(list(string.ascii_uppercase), 5))
        if name not in names:
            names.append(name)
    value = str(int(rng.integers(10000, 100000)))
    statements = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]}" for j in range(4)]
    fractions = np.sort(rng.random(len(statements)))
    context = " ".join(_insert([NOISE] * n, statements, fractions))
    return f"{context}\nWhich variables are assigned the value {value}? Answer:", names, {}


def fit_units(build: Callable[[int], str], count: Callable[[str], int], budget: int, start: int = 1,
              limit: int = 1 << 22) -> int:
    """Largest haystack size ``n >= 0`` with ``count(build(n)) <= budget`` (binary search; ``build`` must grow with
    ``n``). Raises `TaskDoesNotFit` when even ``n = 0`` is too long, and when the prompt cannot reach the budget:
    ``build`` stops growing (doubling ``n`` adds no token: a word list or a text ran out) or ``n = limit`` fits."""
    empty = count(build(0))
    if empty > budget:
        raise TaskDoesNotFit(f"the prompt without haystack is {empty} tokens, more than the {budget} allowed")
    lo, hi, size = 0, max(1, start), empty
    while (grown := count(build(min(hi, limit)))) <= budget:
        if hi >= limit or (lo > 0 and grown == size):
            raise TaskDoesNotFit(f"the prompt stops growing at {grown} tokens (haystack size {min(hi, limit)}), "
                                 f"short of the {budget} tokens to fill; the haystack source ran out")
        lo, hi, size = hi, hi * 2, grown
    while hi - lo > 1:  # invariant: build(lo) fits, build(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(build(mid)) <= budget else (lo, mid)
    return lo


_PASSKEY_PREAMBLE = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                     "I will quiz you about the important information there.")


def passkey(n: int, key: str, depth: float, style: str = "ruler") -> str:
    """The PI paper's passkey prompt with ``n`` noise units and the needle at ``depth`` (0 = start, 1 = end)."""
    units = [NOISE] * n
    cut = int(round(depth * n))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    body = " ".join(units[:cut] + [needle] + units[cut:])
    head = "" if style == "compact" else _PASSKEY_PREAMBLE + " "
    return f"{head}{body}\nWhat is the pass key? The pass key is"


def mqar_example(num_pairs: int, rng: np.random.Generator, num_queries: int | None = None) -> tuple[str, list[tuple]]:
    """A text "k1 v1, k2 v2, ... | kq vq, ..." and the (start, end) character spans of the query values to score.

    Keys are distinct two-letter codes, values three-digit numbers; queries repeat a random subset of the keys."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    keys: list[str] = []
    while len(keys) < num_pairs:
        k = "".join(rng.choice(list(letters), 2))
        if k not in keys:
            keys.append(k)
    values = [str(int(rng.integers(100, 1000))) for _ in keys]
    pairs = ", ".join(f"{k} {v}" for k, v in zip(keys, values))
    order = rng.permutation(num_pairs)[: num_queries or num_pairs]
    text, spans = pairs + " |", []
    for q in order:
        text += f" {keys[q]} "
        spans.append((len(text), len(text) + len(values[q])))
        text += values[q] + ","
    return text, spans

"""A training mixture of natural text and the evaluation suite's synthetic retrieval formats.

Tiny models learn retrieval only if they see it. Every training document is one of:

- ``natural``: a slice of the first 90% of the built-in corpus (the standard library's sources; the rest is held
  out for perplexity);
- ``passkey``: the compact passkey prompt of `endprompt.tasks` followed by its answer;
- ``niah``: a compact niah_single_1 / niah_multikey_2 prompt followed by its answer;
- ``mqar``: key-value pairs then queries with their values;
- ``vt``: a compact variable-tracking prompt followed by its answer.

A synthetic example is fitted by the same binary search as the evaluation prompts to a random span of
``doc_len // 4 .. doc_len`` tokens and placed at a random offset, with filler before and after it, so that the
document has exactly ``doc_len`` tokens. Examples of varying size at varying places matter: a base trained only on
examples that fill the whole document and end at its last token learns where the answer is rather than how to find it,
and fails on prompts shorter than ``doc_len`` (measured: 0% passkey at ``doc_len / 2``). The evaluation draws
different random keys and values (other seeds), so a model cannot pass by memorising training answers.

Two builds:

- `build_mixture`: every document ``doc_len`` tokens, no EOS (pretraining at ``L0``; the committed study's extension,
  which built it at each recipe's own document length and trained on whole documents).
- `build_shared_mixture`: documents of varying length, ``min_len .. max_len`` tokens (laid out by a
  `endprompt.data.DOC_LAYOUTS` entry: log-uniform lengths by default, `document_lengths`),
  each followed by EOS, built from the seed and the settings only -- never from a recipe -- so that every method of a
  seed trains on token-identical documents, and cuts its samples from their EOS-separated stream as it cuts natural
  text (`endprompt.data.SampleSource`, ``concat=True``). A synthetic document too short for its example without
  haystack is lengthened to hold it whole (counted in ``meta["lengthened"]``): a truncated example has lost its key.

How a recipe cuts the shared corpus: like natural text, with ``concat=True`` (the default of `DataConfig.concat`):
every sample is ``sample_len(recipe)`` consecutive tokens of the EOS-separated stream, as the authors' pre-tokenised
fixed-length chunks, so every sample has the recipe's full physical length and the study's step counts buy the same
physical tokens for every method. The price is the cut: a window boundary can separate a key from its question.
Measured on the study's settings (byte tokens, L0 = 256, target 2048, the study's mixture, 4096 documents of 64-2048
tokens, seed 0; ``experiments/study/extension_corpus_stats.py``, ``results/study/extension_corpus_stats.csv``):
EndPrompt's 204-token windows hold 41% of the examples short enough to fit (59% are cut), full-length's 2048-token
windows 87% (49% of those with a key-to-question distance above 2 L0). Whole documents (``concat=False``) cut nothing
but make samples as long as documents (mean 573 tokens, 64-2048): full-length's samples then fill 28% of the 2048
tokens its steps are sized for, and EndPrompt keeps only each document's first 204 tokens.

Both return a `MixtureCorpus`, which also says where each retrieval example lies (its key, its question and the end
of its answer), so that what a recipe's samples contain can be measured (`endprompt.mixture_coverage`).

Spec strings (`DataConfig.source`): ``mixture:natural=0.5,passkey=0.3,niah=0.1,mqar=0.1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from endprompt.data import (
    DOC_LAYOUTS,
    TokenizedCorpus,
    check_doc_layout,
    check_doc_len_range,
    document_lengths,
    parse_mixture,
    tokenize_corpus,
)
from endprompt.data import MIXTURE_KINDS as KINDS
from endprompt.tasks import NOISE, fit_units, mqar_example, niah, passkey, vt

__all__ = ["KINDS", "EXAMPLE_COLUMNS", "MixtureCorpus", "parse_mixture", "synthetic_document", "document_lengths",
           "build_mixture", "build_shared_mixture"]

EXAMPLE_COLUMNS = ("doc", "key", "key_end", "question", "end")
"""Columns of `MixtureCorpus.examples`: the document, then token indices into the flat ``tokens``: the key (passkey
needle, queried niah needle, vt's whole chain, mqar's key-value pairs) is ``[key, key_end)``, the question starts at
``question`` and the answer ends at ``end`` (exclusive). The key-to-question distance is ``question - key``."""


@dataclass
class MixtureCorpus(TokenizedCorpus):
    """A built mixture: a `TokenizedCorpus` plus ``examples`` ``(E, 5)`` int64 (`EXAMPLE_COLUMNS`) and
    ``example_kinds`` ``(E,)``, one row per retrieval example whose key and answer are both in its document."""

    examples: np.ndarray = field(default_factory=lambda: np.zeros((0, len(EXAMPLE_COLUMNS)), dtype=np.int64))
    example_kinds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U8"))


Locate = Callable[[str], tuple[int, int, int]]  # text -> (key, key_end, question) character offsets


def _example(kind: str, rng: np.random.Generator, seed) -> tuple[Callable[[int], str], Locate]:
    """``(build, locate)``: ``build(n)`` the example with ``n`` haystack units ending with its answer; ``locate(text)``
    the character offsets of its key, the key's end and its question."""
    if kind == "passkey":
        key, depth = str(int(rng.integers(10000, 100000))), float(rng.random())
        needle = f"The pass key is {key}. Remember it. {key} is the pass key."

        def locate(text):
            start = text.index(needle)
            return start, start + len(needle), text.rindex("\nWhat is the pass key?") + 1

        return (lambda n: passkey(n, key, depth, "compact") + f" {key}."), locate
    if kind == "niah":
        task = "niah_single_1" if rng.random() < 0.5 else "niah_multikey_2"
        answer = niah(task, 0, seed, "compact", None)[1][0]  # keys and values do not depend on the haystack size

        def build(n):
            prompt, answers, _ = niah(task, n, seed, "compact", None)
            return f"{prompt} {answers[0]}."

        def locate(text):  # the queried needle "The number for <key> is <answer>." (distractors hold other values)
            value = text.index(f" is {answer}.")
            return text.rindex("The ", 0, value), value + len(f" is {answer}."), text.rindex("\nWhat ") + 1

        return build, locate
    if kind == "vt":
        names = vt(0, seed, "compact")[1]
        last = f"VAR {names[-1]} = VAR {names[-2]}"

        def build(n):
            prompt, names, _ = vt(n, seed, "compact")
            return f"{prompt} {' '.join(names)}."

        def locate(text):  # the whole chain: every hop is needed for the answer
            return text.index(f"VAR {names[0]} = "), text.index(last) + len(last), text.rindex("\nWhich ") + 1

        return build, locate
    if kind == "mqar":
        def locate(text):
            return 0, text.index(" |"), text.index("|")

        return (lambda n: mqar_example(max(n, 1), np.random.default_rng(seed))[0]), locate
    raise ValueError(f"{kind!r} is not a synthetic kind")


def _encode(tokenizer, text: str, starts: list[int], ends: list[int]) -> tuple[list[int], list[int]]:
    """``(ids, bounds)``: the tokens of ``text``, and for each character offset in ``starts`` the token that holds it,
    then for each exclusive character end in ``ends`` the number of tokens that begin before it."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer has no offsets: count prefixes (exact at word boundaries)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return ids, [len(tokenizer(text[:c], add_special_tokens=False).input_ids) for c in starts + ends]
    spans = np.asarray(enc.offset_mapping, dtype=np.int64).reshape(-1, 2)
    first = [int(np.searchsorted(spans[:, 1], c, side="right")) for c in starts]
    return enc.input_ids, first + [int(np.searchsorted(spans[:, 0], c, side="left")) for c in ends]


def _synthetic(kind: str, doc_len: int, tokenizer, seed, whole: bool = False,
               fill: bool = False) -> tuple[list[int], np.ndarray | None]:
    """``(ids, layout)``: one ``kind`` document and its example's ``(key, key_end, question, end)`` token offsets in
    it (None when the example was truncated to fit and lost its key). ``whole``: lengthen ``doc_len`` to the example
    without haystack instead of truncating it. ``fill``: the example spans the whole document (no filler)."""
    count = lambda t: len(tokenizer(t, add_special_tokens=False).input_ids)
    rng = np.random.default_rng(seed)
    build, locate = _example(kind, rng, seed)
    empty = count(build(0))
    doc_len = max(doc_len, empty) if whole else doc_len
    span = doc_len if fill else max(int(rng.integers(max(doc_len // 4, 1), doc_len + 1)), min(empty, doc_len))
    n = fit_units(build, count, span, start=4, limit=1 << 16)
    text = build(n)
    key, key_end, question = locate(text)
    full, bounds = _encode(tokenizer, text, [key, question], [key_end, len(text)])
    ids = full[-doc_len:]
    free = doc_len - len(ids)
    before = int(rng.integers(0, free + 1))
    head = tokenizer(NOISE + " ", add_special_tokens=False).input_ids
    tail = tokenizer(" " + NOISE, add_special_tokens=False).input_ids
    head, tail = head * (doc_len // len(head) + 1), tail * (doc_len // len(tail) + 1)
    doc = head[len(head) - before :] + ids + tail[: free - before]
    layout = np.asarray([bounds[0], bounds[2], bounds[1], bounds[3]], dtype=np.int64)  # key, key_end, question, end
    layout += before - (len(full) - len(ids))  # into the document: the truncated head goes, the filler comes first
    return doc, (layout if layout[0] >= 0 else None)


def synthetic_document(kind: str, doc_len: int, tokenizer, seed) -> list[int]:
    """One ``kind`` document of exactly ``doc_len`` tokens: filler, an example of ``span`` tokens ending with its answer
    (``span`` uniform in ``doc_len // 4 .. doc_len``, at least the example without haystack), filler."""
    return _synthetic(kind, doc_len, tokenizer, seed)[0]


def _natural(tokenizer, cache_dir: str, progress: bool) -> TokenizedCorpus:
    return tokenize_corpus("builtin", tokenizer, cache_dir, progress=progress)


def _assemble(weights: dict, kinds: np.ndarray, lengths: np.ndarray, rng: np.random.Generator, doc_seed,
              tokenizer, cache_dir: str, progress: bool, eos: int | None, meta: dict,
              fill: bool = False) -> MixtureCorpus:
    """Documents of ``lengths[i]`` tokens of ``kinds[i]`` (plus ``eos`` if given), natural slices drawn from ``rng``
    in document order, synthetic documents seeded by ``doc_seed(i)`` (lengthened to a whole example when ``eos``)."""
    natural = _natural(tokenizer, cache_dir, progress) if "natural" in weights else None
    docs, rows, row_kinds, offset, lengthened = [], [], [], 0, 0
    for i, kind in enumerate(tqdm(kinds, desc="mixture", unit="doc", disable=not progress)):
        n = int(lengths[i])
        if kind == "natural":  # the last 10% of the corpus is held out (perplexity text of endprompt.reproduce)
            start = int(rng.integers(0, int(0.9 * natural.num_tokens) - n))
            doc = np.asarray(natural.tokens[start : start + n], dtype=np.int64)
        else:
            ids, layout = _synthetic(kind, n, tokenizer, doc_seed(i), whole=eos is not None, fill=fill)
            doc, lengthened = np.asarray(ids, dtype=np.int64), lengthened + (len(ids) > n)
            if layout is not None:
                rows.append([i, *(layout + offset)])
                row_kinds.append(kind)
        if eos is not None:
            doc = np.append(doc, eos)
        docs.append(doc)
        offset += len(doc)
    tokens = np.concatenate(docs).astype(np.uint32)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    meta = {**meta, "documents": len(kinds), "kinds": {k: int((kinds == k).sum()) for k in weights},
            "examples": len(rows), "lengthened": int(lengthened)}
    examples = np.asarray(rows, dtype=np.int64).reshape(-1, len(EXAMPLE_COLUMNS))
    return MixtureCorpus(tokens, offsets, meta, examples, np.asarray(row_kinds, dtype="<U8"))


def build_mixture(spec: str, tokenizer, doc_len: int, num_docs: int, seed: int = 0, cache_dir: str = "cache",
                  progress: bool = True) -> MixtureCorpus:
    """``num_docs`` documents of exactly ``doc_len`` tokens (no EOS) drawn from the mixture ``spec`` (seeded)."""
    weights = parse_mixture(spec)
    rng = np.random.default_rng([seed, doc_len])
    kinds = rng.choice(list(weights), size=num_docs, p=list(weights.values()))
    lengths = np.full(num_docs, doc_len, dtype=np.int64)
    return _assemble(weights, kinds, lengths, rng, lambda i: [seed, doc_len, i], tokenizer, cache_dir, progress,
                     None, {"source": spec, "doc_len": doc_len, "seed": seed})


def build_shared_mixture(spec: str, tokenizer, doc_len_range: tuple[int, int], num_docs: int, seed: int = 0,
                         cache_dir: str = "cache", progress: bool = True, layout: str = "log-part") -> MixtureCorpus:
    """``num_docs`` documents of ``doc_len_range[0] .. doc_len_range[1]`` tokens, each followed by EOS, drawn from the
    mixture ``spec`` and laid out as `endprompt.data.DOC_LAYOUTS` [``layout``] says (lengths, and whether an example
    fills its document); a function of ``(spec, tokenizer, doc_len_range, num_docs, seed, layout)`` only, so every
    recipe of a seed gets the same tokens (module docstring). Cut samples with
    ``SampleSource(corpus, sample_len(recipe), concat=True)``."""
    weights = parse_mixture(spec)
    lo, hi = check_doc_len_range(doc_len_range, "doc_len_range")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token, which separates documents; set tokenizer.eos_token")
    rng = np.random.default_rng([seed, lo, hi])
    kinds = rng.choice(list(weights), size=num_docs, p=list(weights.values()))
    how = DOC_LAYOUTS[check_doc_layout(layout, "layout")]
    lengths = how.lengths(lo, hi, num_docs, rng)
    return _assemble(weights, kinds, lengths, rng, lambda i: [seed, lo, hi, i], tokenizer, cache_dir, progress,
                     int(tokenizer.eos_token_id), {"source": spec, "doc_len_range": [lo, hi], "seed": seed,
                                                   "layout": layout}, fill=how.fill)

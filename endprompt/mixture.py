"""A training mixture of natural text and the evaluation suite's synthetic retrieval formats, in fixed-length documents.

Tiny models learn retrieval only if they see it. For the small-scale study every training document is ``doc_len``
tokens long and is one of:

- ``natural``: a slice of the first 90% of the built-in corpus (the standard library's sources; the rest is held
  out for perplexity);
- ``passkey``: the compact passkey prompt of `endprompt.tasks` followed by its answer;
- ``niah``: a compact niah_single_1 / niah_multikey_2 prompt followed by its answer;
- ``mqar``: key-value pairs then queries with their values;
- ``vt``: a compact variable-tracking prompt followed by its answer.

A synthetic example is fitted by the same binary search as the evaluation prompts to a random span of
``doc_len // 4 .. doc_len`` tokens and placed at a random offset, with filler before and after it, so that every
document has exactly ``doc_len`` tokens. Examples of varying size at varying places matter: a base trained only on
examples that fill the whole document and end at its last token learns where the answer is rather than how to find it,
and fails on prompts shorter than ``doc_len`` (measured: 0% passkey at ``doc_len / 2``). The evaluation draws
different random keys and values (other seeds), so a model cannot pass by memorising training answers.

Spec strings (`DataConfig.source`): ``mixture:natural=0.5,passkey=0.3,niah=0.1,mqar=0.1``.
"""

from __future__ import annotations

import numpy as np

from endprompt.data import MIXTURE_KINDS as KINDS
from endprompt.data import TokenizedCorpus, parse_mixture, tokenize_corpus
from endprompt.tasks import NOISE, fit_units, mqar_example, niah, passkey, vt

__all__ = ["KINDS", "parse_mixture", "synthetic_document", "build_mixture"]


def synthetic_document(kind: str, doc_len: int, tokenizer, seed) -> list[int]:
    """One ``kind`` document of exactly ``doc_len`` tokens: filler, an example of ``span`` tokens ending with its answer
    (``span`` uniform in ``doc_len // 4 .. doc_len``, at least the example without haystack), filler."""
    count = lambda t: len(tokenizer(t, add_special_tokens=False).input_ids)
    rng = np.random.default_rng(seed)
    if kind == "passkey":
        key, depth = str(int(rng.integers(10000, 100000))), float(rng.random())
        build = lambda n: passkey(n, key, depth, "compact") + f" {key}."
    elif kind == "niah":
        task = "niah_single_1" if rng.random() < 0.5 else "niah_multikey_2"

        def build(n):
            prompt, answers, _ = niah(task, n, seed, "compact", None)
            return f"{prompt} {answers[0]}."
    elif kind == "vt":
        def build(n):
            prompt, names, _ = vt(n, seed, "compact")
            return f"{prompt} {' '.join(names)}."
    elif kind == "mqar":
        build = lambda n: mqar_example(max(n, 1), np.random.default_rng(seed))[0]
    else:
        raise ValueError(f"{kind!r} is not a synthetic kind")
    span = max(int(rng.integers(max(doc_len // 4, 1), doc_len + 1)), min(count(build(0)), doc_len))
    n = fit_units(build, count, span, start=4, limit=1 << 16)
    ids = tokenizer(build(n), add_special_tokens=False).input_ids[-doc_len:]
    free = doc_len - len(ids)
    before = int(rng.integers(0, free + 1))
    head = tokenizer(NOISE + " ", add_special_tokens=False).input_ids
    tail = tokenizer(" " + NOISE, add_special_tokens=False).input_ids
    head, tail = head * (doc_len // len(head) + 1), tail * (doc_len // len(tail) + 1)
    return head[len(head) - before :] + ids + tail[: free - before]


def build_mixture(spec: str, tokenizer, doc_len: int, num_docs: int, seed: int = 0, cache_dir: str = "cache",
                  progress: bool = True) -> TokenizedCorpus:
    """``num_docs`` documents of ``doc_len`` tokens drawn from the mixture ``spec`` (seeded)."""
    weights = parse_mixture(spec)
    rng = np.random.default_rng([seed, doc_len])
    kinds = rng.choice(list(weights), size=num_docs, p=list(weights.values()))
    natural = None
    if "natural" in weights:
        natural = tokenize_corpus("builtin", tokenizer, cache_dir, progress=progress)
    docs = []
    for i, kind in enumerate(kinds):
        if kind == "natural":  # the last 10% of the corpus is held out (perplexity text of endprompt.reproduce)
            start = int(rng.integers(0, int(0.9 * natural.num_tokens) - doc_len))
            docs.append(np.asarray(natural.tokens[start : start + doc_len], dtype=np.int64))
        else:
            docs.append(np.asarray(synthetic_document(kind, doc_len, tokenizer, [seed, doc_len, i]), dtype=np.int64))
    tokens = np.concatenate(docs).astype(np.uint32)
    offsets = np.arange(num_docs + 1, dtype=np.int64) * doc_len
    counts = {k: int((kinds == k).sum()) for k in weights}
    return TokenizedCorpus(tokens, offsets, {"source": spec, "doc_len": doc_len, "documents": num_docs,
                                             "kinds": counts, "seed": seed})

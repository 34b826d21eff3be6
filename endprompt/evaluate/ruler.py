"""RULER-style tasks (Hsieh et al. 2024), generated offline, seeded, fitted to a length in the model's own tokens.

Each task builds a prompt (RULER's template followed by its answer prefix, which the model continues) and the reference
answers. The haystack size is found by binary search so that prompt tokens + the task's generation budget <= length,
as RULER fits its haystack. Templates, answer prefixes, budgets and the needle sentence follow RULER; deviations:

- essay haystacks use the standard library's docstring prose by default (see `endprompt.evaluate.text`), keys are
  pairs of words from the shipped list, and needle depths are drawn uniformly rather than from 40 fixed depths;
- ``style="compact"`` (for tiny byte-level models whose whole context is a few hundred bytes) keeps the tasks and the
  scoring but uses short wording: needle "The {kind} for {key} is {value}.", question "What is the {kind} for {query}?",
  answer prefix "Answer:"; vt asks "Which variables are assigned the value {value}?" with no one-shot example;
- qa_1 (SQuAD v2 dev JSON) and qa_2 (HotpotQA distractor dev JSON) read local files; without them they are not run.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from endprompt.evaluate.text import NOISE, essay_sentences, extended_words, random_key, random_value, words

__all__ = ["RULER_TASKS", "SYNTHETIC_TASKS", "EvalSample", "TaskUnavailable", "TaskDoesNotFit", "make_samples",
           "fit_units"]

RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
SYNTHETIC_TASKS = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "vt", "fwe")
"""RULER's purely synthetic tasks (no word list, essay or QA data needed)."""


class TaskUnavailable(Exception):
    """The task needs data that is not available (e.g. QA files); it is reported as not run."""


class TaskDoesNotFit(Exception):
    """Even an empty haystack does not fit in the requested length; reported as not run."""


@dataclass
class EvalSample:
    """One prompt. ``prompt`` ends with the answer prefix; the model's continuation is scored against ``answers``
    with ``metric`` ("all": share of answers found, "part": any answer found)."""

    task: str
    length: int
    index: int
    prompt: str
    answers: list[str]
    max_new_tokens: int
    metric: str = "all"
    prompt_tokens: int = 0
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Niah:
    haystack: str  # noise | essay | needle
    key_kind: str  # words | uuids
    value_kind: str  # numbers | uuids
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


_NIAH = {
    "niah_single_1": _Niah("noise", "words", "numbers"),
    "niah_single_2": _Niah("essay", "words", "numbers"),
    "niah_single_3": _Niah("essay", "words", "uuids"),
    "niah_multikey_1": _Niah("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": _Niah("needle", "words", "numbers"),
    "niah_multikey_3": _Niah("needle", "uuids", "uuids"),
    "niah_multivalue": _Niah("essay", "words", "numbers", num_values=4),
    "niah_multiquery": _Niah("essay", "words", "numbers", num_keys=4, num_queries=4),
}

_BUDGET = {"ruler": {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32},
           "compact": {"niah": 48, "vt": 32, "cwe": 120, "fwe": 50, "qa": 32}}

_RULER_NIAH = ("Some special magic {kind} are hidden within the following text. Make sure to memorize it. I will quiz "
               "you about the {kind} afterwards.\n{context}\nWhat are all the special magic {kind} for {query} "
               "mentioned in the provided text?")
_VT = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\nQuestion: "
       "Find all variables that are assigned the value {query} in the text above.")
_VT_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {n} variables are "
              "assigned the value {query}, they are: ")  # RULER's spelling since May 2025 (was "assgined")
_VT_EXAMPLE_TOKENS = 500  # RULER fits its one-shot vt example to 500 tokens
_CWE = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
        "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?")
_CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
_FWE = ("Read the following coded text and track the frequency of each coded word. Find the three most frequently "
        "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
        "What are the three most frequently appeared words in the above coded text?")
_FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
_QA = ("Answer the question based on the given documents. Only give me the answer and do not output any other words."
       "\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given documents. Only "
       "give me the answer and do not output any other words.\n\nQuestion: {query}")


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


def _niah(task: str, n: int, seed, style: str, essay: str | None) -> tuple[str, list[str], dict]:
    spec = _NIAH[task]
    rng = np.random.default_rng(seed)
    kind = spec.value_kind
    keys = [random_value("uuids", rng) if spec.key_kind == "uuids" else random_key(rng) for _ in range(spec.num_keys)]
    values = [[random_value(kind, rng) for _ in range(spec.num_values)] for _ in keys]
    needle = ("One of the special magic {kind} for {key} is: {value}." if style == "ruler"
              else "The {kind} for {key} is {value}.".replace("{kind}", kind[:-1]))
    needles = [needle.format(kind=kind, key=k, value=v) for k, vs in zip(keys, values) for v in vs]
    needles = [needles[i] for i in rng.permutation(len(needles))]
    fractions = np.sort(rng.random(len(needles)))
    queried = sorted(rng.choice(spec.num_keys, spec.num_queries, replace=False).tolist())
    hay = np.random.default_rng([*np.atleast_1d(seed), 7])  # haystack draws: extending n only appends
    if spec.haystack == "noise":
        units = [NOISE] * n
    elif spec.haystack == "needle":
        units = [needle.format(kind=kind, key=random_value("uuids", hay) if spec.key_kind == "uuids"
                               else random_key(hay), value=random_value(kind, hay)) for _ in range(n)]
    else:  # n words of prose from a random sentence on; needles go in at sentence ends, as RULER inserts them
        text = _essay_words(essay)
        start = int(hay.choice(_sentence_starts(essay)))
        units = [text[(start + i) % len(text)] for i in range(min(n, len(text)))]
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
        noun = kind[:-1] if single else kind
        prompt = f"{context}\nWhat {'is the' if single else 'are the'} {noun} for {query}? Answer:"
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


def _vt(n: int, seed, style: str, example: str = "") -> tuple[str, list[str], dict]:
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


def _cwe(n: int, seed, length: int) -> tuple[str, list[str], dict]:
    rng = np.random.default_rng(seed)
    common_repeats, rare_repeats = (6, 1) if length < 4096 else (30, 3)

    def listing(num, c_rep, r_rep):
        # RULER samples from its word list, and from a larger one when ``num`` exceeds it
        pool = words() if num <= len(words()) else extended_words()
        chosen = [pool[i] for i in rng.choice(len(pool), min(num, len(pool)), replace=False)]
        common, rare = chosen[:10], chosen[10:]
        items = common * c_rep + rare * r_rep
        items = [items[i] for i in rng.permutation(len(items))]
        return " ".join(f"{i + 1}. {x}" for i, x in enumerate(items)), common

    ex_context, ex_common = listing(20, 3, 1) if length < 4096 else listing(40, 10, 3)
    example = _CWE.format(context=ex_context) + _CWE_PREFIX + " " + " ".join(
        f"{i + 1}. {x}" for i, x in enumerate(ex_common))
    context, common = listing(10 + n, common_repeats, rare_repeats)
    return example + "\n" + _CWE.format(context=context) + _CWE_PREFIX, common, {}


def _fwe(n: int, seed, length: int, budget: int) -> tuple[str, list[str], dict]:
    from scipy.special import zeta

    rng = np.random.default_rng(seed)
    size = max((length - budget) // 50, 4)  # RULER: (max_seq_length - tokens_to_generate) // 50; 4 keeps 3 answers
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choice(list(string.ascii_lowercase), 6)))
    vocab_list = sorted(vocab)
    vocab_list = [vocab_list[i] for i in rng.permutation(len(vocab_list))]
    vocab_list[0] = "..."  # the most frequent "word" is noise, as in RULER
    counts = (n * np.arange(1, size + 1, dtype=float) ** -2.0 / zeta(2.0)).astype(int)  # Zipf, alpha = 2
    text = [w for w, c in zip(vocab_list, counts) for _ in range(c)]
    text = [text[i] for i in rng.permutation(len(text))]
    return _FWE.format(context=" ".join(text)) + _FWE_PREFIX, vocab_list[1:4], {}


def _read_qa(path: str, kind: str) -> tuple[list[dict], list[str]]:
    """RULER's readers: unique documents (sorted) and the answerable questions with their gold documents; a SQuAD
    question also lists the other paragraphs of its article (``more``), RULER's first distractors."""
    data = json.loads(Path(path).read_text())
    if kind == "squad":
        docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
        index = {c: i for i, c in enumerate(docs)}
        qas = []
        for d in data["data"]:
            article = [index[p["context"]] for p in d["paragraphs"]]
            for p in d["paragraphs"]:
                gold = index[p["context"]]
                qas += [{"query": q["question"], "answers": [a["text"] for a in q["answers"]], "docs": [gold],
                         "more": [i for i in article if i != gold]}
                        for q in p["qas"] if not q.get("is_impossible")]
    else:
        docs = sorted({f"{t}\n{''.join(s)}" for d in data for t, s in d["context"]})
        index = {c: i for i, c in enumerate(docs)}
        qas = [{"query": d["question"], "answers": [d["answer"]], "docs": [index[f"{t}\n{''.join(s)}"]
                                                                          for t, s in d["context"]], "more": []}
               for d in data]
    return qas, docs


def _qa(n: int, seed, qa_data) -> tuple[str, list[str], dict]:
    """The gold documents and ``n`` distractors, as RULER draws them: the gold paragraph's same-article paragraphs
    first (SQuAD), then random other documents; once the prompt needs as many documents as exist, all documents
    repeated (RULER's rule, the gold included)."""
    qas, docs = qa_data
    rng = np.random.default_rng(seed)
    item = qas[int(rng.integers(len(qas)))]
    gold, more = item["docs"], item["more"]
    total = len(gold) + n
    if total < len(docs):
        if n <= len(more):
            chosen = gold + [more[i] for i in rng.choice(len(more), n, replace=False)]
        else:
            rest = np.setdiff1d(np.arange(len(docs)), gold + more)
            chosen = gold + more + rest[rng.choice(len(rest), n - len(more), replace=False)].tolist()
    else:
        chosen = (list(range(len(docs))) * (total // len(docs) + 1))[:total]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    context = "\n\n".join(f"Document {i + 1}:\n{docs[d]}" for i, d in enumerate(chosen))
    return _QA.format(context=context, query=item["query"]) + " Answer:", item["answers"], {}


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


def make_samples(task: str, length: int, tokenizer, num_samples: int = 10, seed: int = 0, style: str = "ruler",
                 essay_path: str | None = None, squad_path: str | None = None,
                 hotpotqa_path: str | None = None) -> list[EvalSample]:
    """``num_samples`` prompts of ``task`` fitted to ``length`` tokens of ``tokenizer`` (prompt + budget <= length)."""
    if task not in RULER_TASKS:
        raise ValueError(f"unknown task {task!r}; RULER tasks are: {', '.join(RULER_TASKS)}")
    if style not in _BUDGET:
        raise ValueError(f"unknown style {style!r}; styles are: {', '.join(_BUDGET)}")
    family = "niah" if task in _NIAH else "qa" if task.startswith("qa") else task
    budget = _BUDGET[style][family]
    if style == "compact" and family == "niah":  # sized to the answers: 7 digits or a 36-character uuid each
        spec = _NIAH[task]
        budget = (40 if spec.value_kind == "uuids" else 10) * spec.num_values * spec.num_queries + 6
    qa_data = None
    if family == "qa":
        path, kind = (squad_path, "squad") if task == "qa_1" else (hotpotqa_path, "hotpotqa")
        if not path:
            raise TaskUnavailable(f"{task} needs a local {'SQuAD v2 dev' if kind == 'squad' else 'HotpotQA dev'} JSON "
                                  f"file (--{'squad' if kind == 'squad' else 'hotpotqa'}-path); nothing is downloaded")
        qa_data = _read_qa(path, kind)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    samples = []
    for index in range(num_samples):
        seed_i = [seed, RULER_TASKS.index(task), length, index]
        example = vt_example(seed_i, count) if family == "vt" and style == "ruler" else ""

        def build(n, seed_i=seed_i, example=example):
            if family == "niah":
                return _niah(task, n, seed_i, style, essay_path)
            if family == "vt":
                return _vt(n, seed_i, style, example)
            if family == "cwe":
                return _cwe(n, seed_i, length)
            if family == "fwe":
                return _fwe(n, seed_i, length, budget)
            return _qa(n, seed_i, qa_data)

        n = fit_units(lambda m: build(m)[0], count, length - budget, start=8)
        prompt, answers, meta = build(n)
        samples.append(EvalSample(task, length, index, prompt, list(answers), budget,
                                  "part" if family == "qa" else "all", count(prompt), {"units": n, **meta}))
    return samples

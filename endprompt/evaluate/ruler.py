"""RULER-style tasks (Hsieh et al. 2024), generated offline, seeded, fitted to a length in the model's own tokens.

Each task builds a prompt (RULER's template followed by its answer prefix, which the model continues) and the reference
answers. The haystack size is found by binary search so that prompt tokens + the task's generation budget <= length,
as RULER fits its haystack. Templates, answer prefixes (vt: "assigned", RULER's spelling since May 2025), generation
budgets, needle sentences, the vt layout (one statement or noise sentence per line, a one-shot example of about 500
tokens with 3-letter names), cwe's example and repeat counts, fwe's vocabulary ``(L - 50) // 50`` and Zipf counts, the
SQuAD distractors (the gold paragraph's article first) and the scores (rounded to 2 decimals) follow RULER's code. The
needle, vt and passkey generators live in `endprompt.tasks` (training uses them too). Deviations, all deliberate:

- essay haystack: the standard library's docstring prose (`endprompt.tasks.text`; ``essay_path`` for any local text)
  instead of Paul Graham's essays, starting at a random sentence, split into sentences by a regular expression (RULER:
  nltk's ``sent_tokenize``);
- keys: two words of the shipped 1,427-word list joined by "-" (RULER: wonderwords adjective-noun pairs);
- needle places: uniform random depths, moved to the nearest preceding sentence end in essays (RULER: 40 fixed depths
  in essays, distinct random lines in noise and needle haystacks);
- haystack size: fitted for each sample, the largest that fits (RULER: fitted once per task and length, then reduced by
  its step for a sample that does not fit);
- vt: a fresh one-shot example per sample, fitted to 500 tokens even when fewer than 5 noise lines fit (RULER: one
  example whose names and value are redrawn per sample, at least 5 noise lines);
- cwe: the shipped word list, then ``2**17`` deterministic pseudo-words once it runs out (RULER: wonderwords nouns,
  adjectives and verbs, then a larger English list);
- fwe: at least 4 coded words below 250 tokens (RULER's formula gives fewer there), and the word count fitted by binary
  search (RULER: steps of 10 words);
- qa: questions drawn at random (RULER: in file order); qa_1 (SQuAD v2 dev JSON) and qa_2 (HotpotQA distractor dev
  JSON) read local files and are reported as not run without them;
- random draws come from seeded numpy generators (RULER: Python's ``random``): other samples, the same distributions;
- the model template: none by default (RULER's "base" template); ``evaluate(..., chat=True)`` puts the task in the
  tokenizer's chat template as RULER's chat-model templates do (`endprompt.evaluate.chat`);
- ``style="compact"`` (for tiny byte-level models whose whole context is a few hundred bytes) is not RULER: it keeps
  the tasks and the scoring but uses short wording: needle "The {kind} for {key} is {value}.", question "What is the
  {kind} for {query}?", answer prefix "Answer: The {kind} for {query} is" (restating the query as RULER's does; until
  2026-11-30 it was "Answer:" alone, which no miniature base learned to answer); vt asks "Which variables are assigned
  the value {value}?" with no one-shot example and joins noise and statements with spaces.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from endprompt.tasks import NIAH, fit_units, niah, vt, vt_example
from endprompt.tasks.text import extended_words, words

__all__ = ["RULER_TASKS", "SYNTHETIC_TASKS", "EvalSample", "TaskUnavailable", "make_samples"]

RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
SYNTHETIC_TASKS = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "vt", "fwe")
"""RULER's purely synthetic tasks (no word list, essay or QA data needed)."""


class TaskUnavailable(Exception):
    """The task needs data that is not available (e.g. QA files); it is reported as not run."""


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


_BUDGET = {"ruler": {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32},
           "compact": {"niah": 48, "vt": 32, "cwe": 120, "fwe": 50, "qa": 32}}

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


def make_samples(task: str, length: int, tokenizer, num_samples: int = 10, seed: int = 0, style: str = "ruler",
                 essay_path: str | None = None, squad_path: str | None = None,
                 hotpotqa_path: str | None = None) -> list[EvalSample]:
    """``num_samples`` prompts of ``task`` fitted to ``length`` tokens of ``tokenizer`` (prompt + budget <= length)."""
    if task not in RULER_TASKS:
        raise ValueError(f"unknown task {task!r}; RULER tasks are: {', '.join(RULER_TASKS)}")
    if style not in _BUDGET:
        raise ValueError(f"unknown style {style!r}; styles are: {', '.join(_BUDGET)}")
    family = "niah" if task in NIAH else "qa" if task.startswith("qa") else task
    budget = _BUDGET[style][family]
    if style == "compact" and family == "niah":  # sized to the answers: 7 digits or a 36-character uuid each
        spec = NIAH[task]
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
                return niah(task, n, seed_i, style, essay_path)
            if family == "vt":
                return vt(n, seed_i, style, example)
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

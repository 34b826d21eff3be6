"""Offline text for the evaluation tasks: haystacks, a word list, random needle values.

- "noise": RULER's repeated filler, "The grass is green. The sky is blue. ..." (also the PI paper's passkey filler).
- "essay": RULER uses Paul Graham's essays, which would need a download. The default here is English prose that exists
  on every machine: the docstrings of the Python standard library (about 0.8 MB, whitespace-normalised, doctest-free),
  split into sentences. A documented deviation; pass ``essay_path`` (a local .txt file or directory) to use any text.
- words: ``words.txt`` ships with the package (1,427 English words from the same docstrings); RULER draws keys
  from wonderwords' adjective-noun pairs, here they are pairs of these words ("silent-window").
- `extended_words`: the list for cwe once ``words`` runs out. RULER then samples from a larger English word list; here
  the shipped words are followed by deterministic pseudo-words of three consonant-vowel syllables ("bavito"),
  ``2**17`` words in all, so cwe fills 64K and more tokens (a documented deviation: the extra words are not English).
"""

from __future__ import annotations

import ast
import re
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["NOISE", "words", "extended_words", "essay_sentences", "random_value", "random_key"]

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """The shipped word list (sorted, unique; the file's ``#`` comment lines are not words)."""
    path = Path(__file__).with_name("words.txt")
    lines = (line.strip() for line in path.read_text().splitlines())
    return tuple(sorted({w for w in lines if w and not w.startswith("#") and w.isalpha()}))


EXTENDED_SIZE = 1 << 17
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


@lru_cache(maxsize=1)
def extended_words() -> tuple[str, ...]:
    """`words` followed by pseudo-words (three consonant-vowel syllables, in a fixed shuffled order, none equal to a
    shipped word): ``EXTENDED_SIZE`` distinct words, the same on every machine."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]  # 70, so 70**3 = 343,000 pseudo-words
    shipped = words()
    taken, extra = set(shipped), []
    n = len(syllables)
    for i in np.random.default_rng(0).permutation(n**3)[: EXTENDED_SIZE + len(shipped)].tolist():
        word = syllables[i // n**2] + syllables[i // n % n] + syllables[i % n]
        if word not in taken:
            extra.append(word)
    return shipped + tuple(extra[: EXTENDED_SIZE - len(shipped)])


def _stdlib_prose() -> list[str]:
    from endprompt.data import builtin_files

    docs = []
    for path in builtin_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 300 and ">>>" not in doc:
                    docs.append(" ".join(doc.split()))
    return docs


@lru_cache(maxsize=4)
def essay_sentences(essay_path: str | None = None) -> tuple[str, ...]:
    """Sentences of the essay haystack: the standard library's docstring prose, or the text at ``essay_path``."""
    if essay_path is None:
        texts = _stdlib_prose()
    else:
        path = Path(essay_path)
        if not path.exists():
            raise FileNotFoundError(f"essay_path {essay_path!r} does not exist; give a local .txt file or directory")
        files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
        texts = [" ".join(f.read_text(encoding="utf-8", errors="replace").split()) for f in files]
    sentences = tuple(s for t in texts for s in _SENTENCE.split(t) if s)
    if not sentences:
        raise ValueError(f"no sentences in the essay haystack ({essay_path or 'standard library docstrings'})")
    return sentences


def random_value(kind: str, rng: np.random.Generator) -> str:
    """A needle value: "numbers" (7 digits), "uuids" or "words"."""
    if kind == "numbers":
        return str(int(rng.integers(1_000_000, 10_000_000)))
    if kind == "uuids":
        return str(uuid.UUID(int=int.from_bytes(rng.bytes(16), "big"), version=4))
    if kind == "words":
        return random_key(rng)
    raise ValueError(f"unknown value kind {kind!r}; valid kinds are: numbers, uuids, words")


def random_key(rng: np.random.Generator) -> str:
    """A key: two words of the shipped list joined by a hyphen."""
    w = words()
    return f"{w[int(rng.integers(len(w)))]}-{w[int(rng.integers(len(w)))]}"

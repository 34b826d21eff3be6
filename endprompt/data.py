"""Training text from local files or the embedded default corpus, tokenized once and cached.

Sources (`DataConfig.source`):

- ``builtin``: the Python standard library's own ``.py`` sources (without its test suites, idlelib, lib2to3 and
  turtledemo): about 11 MB of real, long, structured text that exists on every machine with Python, so nothing is
  downloaded. One file is one document. Its exact content follows the Python version (3.11 here); the corpus metadata
  records the version and file count.
- ``mixture:natural=0.5,passkey=0.3,...``: a synthetic-retrieval training mixture (`endprompt.mixture` builds it;
  the spec is parsed here so that the typed configuration can check it without importing the generators).
- local files and directories, comma-separated: ``.txt``/``.md``/``.py`` (one document per file; an empty file is
  reported by name and skipped), ``.jsonl``/``.json`` (one record per line, text in ``text_field``; a corrupt line is
  reported with its file, line number and reason and counted, never silently skipped), ``.parquet`` (through
  ``datasets``, loading local files only). The counts and the first reasons go into the corpus metadata and are
  reported again whenever the cached corpus is reused.

A tokenized corpus is one flat token array (each document followed by EOS) plus document offsets, cached under
``cache_dir`` by a key of the sources' paths, sizes and mtimes and the tokenizer's vocabulary; writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from endprompt import positions as P
from endprompt.recipe import sample_len  # re-exported: the recipe registry knows each recipe's length
from endprompt.tokenizer import encode_bytes, is_byte_tokenizer

__all__ = ["BUILTIN", "MIXTURE_KINDS", "parse_mixture", "check_doc_len_range", "document_lengths", "uniform_lengths",
           "DocLayout", "DOC_LAYOUTS", "check_doc_layout", "builtin_files", "source_files",
           "iter_documents", "TokenizedCorpus", "tokenize_corpus", "sample_len", "SampleSource", "EpochSampler"]

log = logging.getLogger(__name__)

BUILTIN = "builtin"
_BUILTIN_SKIP = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "__pycache__"}
_TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst"}
_JSONL_SUFFIXES = {".jsonl", ".json"}


MIXTURE_KINDS = ("natural", "passkey", "niah", "mqar", "vt")
"""Components of a mixture source (`endprompt.mixture`)."""


def parse_mixture(spec: str) -> dict[str, float]:
    """``"mixture:natural=0.5,passkey=0.5"`` -> normalised weights."""
    if not spec.startswith("mixture:"):
        raise ValueError(f"a mixture source looks like 'mixture:natural=0.5,passkey=0.5', got {spec!r}")
    weights = {}
    for part in spec[len("mixture:") :].split(","):
        kind, _, value = part.partition("=")
        kind = kind.strip()
        if kind not in MIXTURE_KINDS:
            raise ValueError(f"unknown mixture component {kind!r}; components are: {', '.join(MIXTURE_KINDS)}")
        try:
            weights[kind] = float(value)
        except ValueError:
            raise ValueError(f"mixture component {kind!r} needs a number as its weight, got {value!r}") from None
    total = sum(weights.values())
    if total <= 0 or min(weights.values()) < 0:
        raise ValueError(f"mixture weights must be >= 0 and not all 0, got {weights}")
    return {k: v / total for k, v in weights.items()}


def check_doc_len_range(value, name: str = "data.doc_len_range") -> tuple[int, int]:
    """``(min_len, max_len)`` of a shared mixture's documents (`endprompt.mixture.build_shared_mixture`), checked:
    two integers with ``1 <= min_len <= max_len``."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two token counts (min_len, max_len), e.g. [64, 2048], "
                         f"got {value!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (lo, hi)):
        raise ValueError(f"{name} must hold integers (min_len, max_len), e.g. [64, 2048], got {value!r}")
    if not 1 <= lo <= hi:
        raise ValueError(f"{name}={[lo, hi]} needs 1 <= min_len <= max_len; give e.g. [{max(1, min(lo, hi))}, "
                         f"{max(lo, hi, 1)}] (the study: [L0 // 4, 8 * L0])")
    return int(lo), int(hi)


def document_lengths(min_len: int, max_len: int, num_docs: int, rng: np.random.Generator) -> np.ndarray:
    """``num_docs`` lengths in ``min_len .. max_len``, log-uniform: every octave (64-128, ..., 1024-2048 for the
    study) holds the same number of documents. Uniform lengths would put 3 in 4 documents above 512 at 64 .. 2048 and
    leave few examples short enough to sit whole inside a cue recipe's L0-sized body; log-uniform still puts most
    tokens in long documents (each octave's documents are twice as long as the previous one's), which full-length
    fine-tuning's long windows need."""
    lo, hi = check_doc_len_range((min_len, max_len), "doc_len_range")
    lengths = np.floor(np.exp(rng.uniform(np.log(lo), np.log(hi + 1), size=num_docs))).astype(np.int64)
    return np.clip(lengths, lo, hi)


def uniform_lengths(min_len: int, max_len: int, num_docs: int, rng: np.random.Generator) -> np.ndarray:
    """``num_docs`` lengths uniform in ``min_len .. max_len``: as many documents near ``max_len`` as near ``min_len``,
    so long key-to-question distances are as common as short ones (`DOC_LAYOUTS` ``"uniform-whole"``)."""
    lo, hi = check_doc_len_range((min_len, max_len), "doc_len_range")
    return rng.integers(lo, hi + 1, size=num_docs).astype(np.int64)


@dataclass(frozen=True)
class DocLayout:
    """How a shared mixture (`endprompt.mixture.build_shared_mixture`) lays out its documents: ``lengths(min_len,
    max_len, num_docs, rng)`` draws their lengths; ``fill``: a synthetic example fills its whole document (the key's
    random depth then sets the key-to-question distance, up to the document's length), else it spans a random
    quarter-to-all of it with filler around."""

    lengths: Callable[[int, int, int, np.random.Generator], np.ndarray]
    fill: bool
    about: str


DOC_LAYOUTS = {
    "log-part": DocLayout(document_lengths, False, "log-uniform lengths, each example a quarter to all of its "
                          "document (study-bpe's corpus): distances mostly short, 1.6% above 4 L0, 0.1% above 6 L0"),
    "uniform-whole": DocLayout(uniform_lengths, True, "uniform lengths, each example fills its document: every "
                               "distance up to the longest document, 15% above 4 L0, 3.3% above 6 L0"),
}
"""Shared-corpus layouts (`DataConfig.doc_layout`). The key-to-question distance shares are measured on study-bpe's
seed-0 corpus (its BPE tokenizer, 4096 documents of 64-2048 tokens, L0 = 256): with "log-part" 2078 of its 3312
examples are under 128 tokens and 3 above 1536; with "uniform-whole" 652 and 109 (`tests/test_mixture.py` checks the
same contrast on byte tokens)."""


def check_doc_layout(name: str, field_name: str = "data.doc_layout") -> str:
    if name not in DOC_LAYOUTS:
        raise ValueError(f"{field_name}={name!r} is not a document layout; layouts are: "
                         + "; ".join(f"{k!r} ({v.about})" for k, v in DOC_LAYOUTS.items()))
    return name


def builtin_files() -> list[Path]:
    """The embedded default corpus: the standard library's ``.py`` files, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not (_BUILTIN_SKIP & set(p.relative_to(root).parts)))


def source_files(source: str) -> list[Path]:
    """Expand a source spec ("builtin" or comma-separated files/directories) into files."""
    if source == BUILTIN:
        return builtin_files()
    files: list[Path] = []
    for part in [s.strip() for s in source.split(",") if s.strip()]:
        path = Path(part)
        if path.is_dir():
            suffixes = _TEXT_SUFFIXES | _JSONL_SUFFIXES | {".parquet"}
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"data source {part!r} does not exist; give local files or directories "
                                    "(.txt, .jsonl, .parquet) or 'builtin'")
    if not files:
        raise ValueError(f"data source {source!r} contains no .txt/.md/.py/.jsonl/.json/.parquet files")
    return files


_MAX_PROBLEMS = 20  # skipped lines and files listed in the corpus metadata (all are counted)


def iter_documents(files: list[Path], text_field: str = "text", stats: Counter | None = None,
                   problems: list[str] | None = None) -> Iterator[str]:
    """Yield document texts. Corrupt JSONL lines, records without ``text_field`` and empty text files are logged
    (file:line and the full reason), counted in ``stats["corrupt_lines"]`` / ``stats["missing_field"]`` /
    ``stats["empty_files"]``, and the first `_MAX_PROBLEMS` descriptions appended to ``problems``."""
    stats = stats if stats is not None else Counter()
    problems = problems if problems is not None else []

    def skip(kind: str, message: str) -> None:
        stats[kind] += 1
        log.warning("%s", message)
        if len(problems) < _MAX_PROBLEMS:
            problems.append(message)

    for path in files:
        if path.suffix in _JSONL_SUFFIXES:
            with path.open(encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        skip("corrupt_lines", f"{path}:{lineno}: corrupt JSON line skipped ({err})")
                        continue
                    text = record.get(text_field) if isinstance(record, dict) else None
                    if not isinstance(text, str):
                        skip("missing_field", f"{path}:{lineno}: record has no string field {text_field!r}; skipped")
                        continue
                    stats["documents"] += 1
                    yield text
        elif path.suffix == ".parquet":
            from datasets import load_dataset

            table = load_dataset("parquet", data_files=[str(path)], split="train")
            if text_field not in table.column_names:
                raise ValueError(f"{path} has no column {text_field!r} (columns: {table.column_names}); "
                                 "set data.text_field")
            for text in table[text_field]:
                stats["documents"] += 1
                yield text
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            if not text.strip():
                skip("empty_files", f"{path}: file is empty; skipped")
                continue
            stats["documents"] += 1
            yield text


def _fingerprint(files: list[Path], text_field: str, max_documents: int | None, tokenizer) -> str:
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(f"{text_field}|{max_documents}|{type(tokenizer).__name__}|{len(tokenizer)}".encode())
    vocab = tokenizer.get_vocab()
    h.update(hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).digest())
    return h.hexdigest()[:20]


@dataclass
class TokenizedCorpus:
    """Documents as one flat token array: document ``i`` is ``tokens[offsets[i]:offsets[i+1]]`` (its EOS included)."""

    tokens: np.ndarray
    offsets: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


def tokenize_corpus(source: str, tokenizer, cache_dir: str | Path = "cache", text_field: str = "text",
                    max_documents: int | None = None, progress: bool = True) -> TokenizedCorpus:
    """Tokenize (or load from cache) every document of ``source``, each followed by the tokenizer's EOS."""
    files = source_files(source)
    key = _fingerprint(files, text_field, max_documents, tokenizer)
    cache = Path(cache_dir) / f"corpus-{key}"
    if (cache / "meta.json").exists():
        meta = json.loads((cache / "meta.json").read_text())
        _report_skipped(meta, text_field, cached=cache)
        return TokenizedCorpus(np.load(cache / "tokens.npy", mmap_mode="r"), np.load(cache / "offsets.npy"), meta)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token, which separates documents; set tokenizer.eos_token")
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
    fast = is_byte_tokenizer(tokenizer)
    stats: Counter = Counter()
    problems: list[str] = []
    pieces, lengths = [], []
    docs = iter_documents(files, text_field, stats, problems)
    bar = tqdm(docs, desc=f"tokenizing {source[:40]}", unit="doc", disable=not progress)
    batch: list[str] = []

    def flush():
        encoded = [encode_bytes(t) for t in batch] if fast else [
            np.asarray(ids, dtype=dtype) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]]
        for ids in encoded:
            pieces.append(np.append(ids.astype(dtype), dtype(eos)))
            lengths.append(len(ids) + 1)
        batch.clear()

    for text in bar:
        batch.append(text)
        if len(batch) >= 256:
            flush()
        if max_documents is not None and len(lengths) + len(batch) >= max_documents:
            break
    if batch:
        flush()
    if not lengths:
        raise ValueError(f"data source {source!r} yielded no documents: " + ("; ".join(problems) or "no text found"))
    tokens = np.concatenate(pieces)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    meta = {"source": source, "files": len(files), "documents": len(lengths), "tokens": int(offsets[-1]),
            "stats": dict(stats), "skipped": problems, "python": sys.version.split()[0],
            "tokenizer_vocab": len(tokenizer), "key": key}
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "tokens.npy", tokens)
    np.save(tmp / "offsets.npy", offsets)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        os.replace(tmp, cache)  # atomic: a reader sees the whole cache or none
    except OSError:  # another process won the race
        pass
    _report_skipped(meta, text_field)
    return TokenizedCorpus(tokens, offsets, meta)


def _report_skipped(meta: dict, text_field: str, cached: Path | None = None) -> None:
    """Warn about what was skipped, also when the corpus comes from the cache (which read no file this time)."""
    stats = meta.get("stats", {})
    counts = {k: stats.get(k, 0) for k in ("corrupt_lines", "missing_field", "empty_files")}
    if not any(counts.values()):
        return
    where = f" when the cache {cached} was built" if cached else ""
    details = "".join(f"\n  {p}" for p in meta.get("skipped", [])) if cached else " (see the warnings above)"
    log.warning("data %s: %d corrupt JSON lines, %d records without %r and %d empty files were skipped%s%s",
                meta.get("source"), counts["corrupt_lines"], counts["missing_field"], text_field, counts["empty_files"],
                where, details)


class SampleSource:
    """Indexable training documents: whole documents, or (``concat=True``) consecutive slices of ``length`` tokens of
    the EOS-separated stream, as the authors' pre-tokenised fixed-length samples."""

    def __init__(self, corpus: TokenizedCorpus, length: int | None = None, concat: bool = True):
        self.corpus, self.concat, self.length = corpus, concat, length
        if concat:
            if not length or length < 1:
                raise ValueError("concatenated samples need a length >= 1")
            self._n = corpus.num_tokens // length
            if self._n == 0:
                raise ValueError(f"the corpus has {corpus.num_tokens} tokens, fewer than one sample of {length}")
        else:
            self._n = len(corpus)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray:
        if self.concat:
            return np.asarray(self.corpus.tokens[i * self.length : (i + 1) * self.length], dtype=np.int64)
        return np.asarray(self.corpus.doc(i), dtype=np.int64)


class EpochSampler:
    """Deterministic, resumable order over ``n`` samples, sharded over ranks.

    Epoch ``e`` visits ``permutation(default_rng([seed, e]))``; a global step takes the next ``global_batch`` entries,
    rank ``r`` of ``world`` the entries ``r, r + world, ...`` of them, so the union over ranks does not depend on the
    number of processes. Each entry comes with a key ``(epoch, position)`` for the sample's own RNG.
    """

    def __init__(self, n: int, seed: int = 0):
        if n < 1:
            raise ValueError("nothing to sample from (0 samples)")
        self.n, self.seed, self.epoch, self.cursor = n, seed, 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return P.as_generator([self.seed, epoch]).permutation(self.n)

    def next_global(self, global_batch: int) -> list[tuple[int, tuple[int, int]]]:
        """The next ``global_batch`` (index, key) pairs, crossing into the next epoch as needed."""
        out = []
        while len(out) < global_batch:
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            out.append((int(self._perm[self.cursor]), (self.epoch, self.cursor)))
            self.cursor += 1
        return out

    @staticmethod
    def shard(items: list, rank: int, world: int) -> list:
        return items[rank::world]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise ValueError(f"checkpoint sampled from {state['n']} samples but the data now has {self.n}; resume "
                             "with the same data and recipe")
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self._perm = self._permutation(self.epoch)

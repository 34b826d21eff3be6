"""A small byte-level BPE tokenizer trained on the built-in corpus, saved as a stock transformers tokenizer.

The byte tokenizer (`endprompt.tokenizer`) puts a tiny model's whole context on a few hundred characters and makes the
paper's first cue 50 tokens long. A BPE vocabulary of a few thousand tokens trained with the ``tokenizers`` library
on the built-in corpus (the Python standard library's sources) covers 3-4 characters per token, as Llama's tokenizer
does for English, and makes the cue set a few tokens long: "This is the end of text, please pay attention here" about
11 tokens, the end-of-turn token 1, "End." 2 (Llama-3: 11 / 1 / 2).

Choices (each one a real LLM tokenizer makes too):

- byte-level pre-tokenization with GPT-2's split regex, so every string round-trips and nothing is unknown;
- digits split one by one (as Llama-1/2 and SmolLM2 do), so a 5-digit passkey is 5 tokens whatever the number and a
  model copies it digit by digit rather than from a vocabulary of memorised numbers;
- the byte tokenizer's special tokens ``<pad> <bos> <eos> <|eot_id|>`` with ids 0..3 (``<|eot_id|>`` is the
  end-of-turn token of the cue set, EP_2); special-token strings inside text are not parsed, as in `byte_tokenizer`.

The training text is the first 90% (by characters, in `endprompt.data.builtin_files` order) of the built-in corpus,
so the tokenizer never sees the held-out tail. Training is deterministic: the same files and vocabulary size give the
same merges (`tests/test_bpe_tokenizer.py`). ``bpe_tokenizer(vocab_size, cache_dir)`` trains once and reloads the saved
directory with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["SPECIAL_TOKENS", "MIN_VOCAB", "train_bpe_tokenizer", "bpe_tokenizer", "bpe_corpus_texts"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<|eot_id|>")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)
"""The 256 byte symbols and the special tokens; a vocabulary must be larger to hold any merge."""

TRAIN_FRACTION = 0.9


def bpe_corpus_texts(files: list[Path] | None = None, fraction: float = TRAIN_FRACTION) -> Iterator[str]:
    """The texts the tokenizer trains on: the first ``fraction`` of ``files``' characters (default: the built-in
    corpus), file by file, the last file cut at the boundary."""
    from endprompt.data import builtin_files

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    files = builtin_files() if files is None else list(files)
    if not files:
        raise ValueError("no files to train a tokenizer on")
    texts = [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]
    budget = int(fraction * sum(len(t) for t in texts))
    for text in texts:
        if budget <= 0:
            return
        yield text[:budget]
        budget -= len(text)


def train_bpe_tokenizer(vocab_size: int = 4096, texts: Iterable[str] | None = None, out_dir: str | Path | None = None):
    """Train the BPE tokenizer (see the module docstring) on ``texts`` (default `bpe_corpus_texts`); returns a
    ``PreTrainedTokenizerFast``, saved with ``save_pretrained`` to ``out_dir`` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} leaves no room for merges: it must exceed {MIN_VOCAB} (256 bytes + "
                         f"{len(SPECIAL_TOKENS)} special tokens); the study uses 2048-8192")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts if texts is not None else bpe_corpus_texts(), trainer=trainer)
    pad, bos, eos, eot = SPECIAL_TOKENS
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, split_special_tokens=True, model_max_length=1 << 30,
                                   pad_token=pad, bos_token=bos, eos_token=eos, extra_special_tokens={"eot_token": eot})
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def bpe_tokenizer(vocab_size: int = 4096, cache_dir: str | Path = "cache"):
    """The built-in corpus' BPE tokenizer of ``vocab_size``: trained once into
    ``<cache_dir>/tokenizers/bpe-<vocab_size>/`` (a stock tokenizer directory), then loaded from there."""
    from transformers import AutoTokenizer

    out = Path(cache_dir) / "tokenizers" / f"bpe-{vocab_size}"
    if not (out / "tokenizer.json").exists():
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        train_bpe_tokenizer(vocab_size, out_dir=tmp)
        (tmp / "bpe_meta.json").write_text(json.dumps({"vocab_size": vocab_size, "corpus": "builtin",
                                                        "train_fraction": TRAIN_FRACTION}))
        shutil.rmtree(out, ignore_errors=True)  # an incomplete directory (no tokenizer.json) from elsewhere
        os.replace(tmp, out)  # atomic: a reader sees the whole tokenizer or none
    return AutoTokenizer.from_pretrained(out, local_files_only=True)

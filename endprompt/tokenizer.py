"""endprompt's built-in byte-level tokenizer, as a stock ``PreTrainedTokenizerFast``.

Token id = byte value (0..255) for UTF-8 text, then four special tokens. Because it is an ordinary transformers
tokenizer, ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip it and every tool that takes a tokenizer
takes it; `encode_bytes` is the same mapping in numpy, for fast bulk tokenization.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["BYTE_VOCAB_SIZE", "SPECIAL_TOKENS", "byte_tokenizer", "encode_bytes", "load_tokenizer", "is_byte_tokenizer"]

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "eot_token": "<|eot_id|>"}
BYTE_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


@lru_cache(maxsize=1)
def _byte_to_char() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (what the ByteLevel pre-tokenizer emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def byte_tokenizer():
    """A fresh byte-level ``PreTrainedTokenizerFast``: ids 0..255 are bytes, 256.. the special tokens.

    Special-token strings inside text are *not* parsed (``split_special_tokens=True``): text maps to its bytes exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _byte_to_char().items()}
    for i, token in enumerate(SPECIAL_TOKENS.values()):
        vocab[token] = 256 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS.values()))
    named = {k: v for k, v in SPECIAL_TOKENS.items() if k != "eot_token"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, split_special_tokens=True, model_max_length=1 << 30,
                                   extra_special_tokens={"eot_token": SPECIAL_TOKENS["eot_token"]}, **named)


def encode_bytes(text: str) -> np.ndarray:
    """`byte_tokenizer`'s ids for ``text`` without special tokens, in numpy: ``(len(utf8),)`` uint16."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def is_byte_tokenizer(tokenizer) -> bool:
    return len(tokenizer) == BYTE_VOCAB_SIZE and tokenizer.convert_tokens_to_ids("<|eot_id|>") == 259


def load_tokenizer(spec: str | Path | None, model_path: str | Path | None = None):
    """``"byte"`` -> `byte_tokenizer`; a directory -> ``AutoTokenizer.from_pretrained`` (local files only);
    None -> the tokenizer saved with ``model_path``."""
    from transformers import AutoTokenizer

    if spec == "byte":
        return byte_tokenizer()
    path = spec if spec is not None else model_path
    if path is None:
        raise ValueError("no tokenizer: set model.tokenizer to 'byte' or a tokenizer directory")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"no tokenizer directory at {str(path)!r}; set model.tokenizer to a local directory "
                                "or 'byte'")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return tokenizer

"""endprompt.bpe_tokenizer: a stock transformers tokenizer that round-trips text, trains deterministically, keeps the
special tokens and makes the paper's cue set a few tokens long."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from endprompt.bpe_tokenizer import MIN_VOCAB, SPECIAL_TOKENS, bpe_corpus_texts, bpe_tokenizer, train_bpe_tokenizer
from endprompt.data import builtin_files
from endprompt.evaluate import retrieval
from endprompt.recipe import DEFAULT_CUES, EOT_CUE, tokenize_cues


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The real thing: vocabulary 2048 on the built-in corpus (a few seconds), saved and reloaded from its directory."""
    return bpe_tokenizer(2048, tmp_path_factory.mktemp("cache"))


def _small_texts():
    return list(bpe_corpus_texts(builtin_files()[:40]))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(tok, text):
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text


def test_loads_as_stock_tokenizer_with_special_tokens(tok, tmp_path):
    assert len(tok) == 2048
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 3
    assert tok("<eos>", add_special_tokens=False).input_ids != [2]  # text is never parsed as a special token
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "def f(x):\n    return x ** 2  # the pass key is 60494"
    assert again(text, add_special_tokens=False).input_ids == tok(text, add_special_tokens=False).input_ids


def test_cue_set_is_a_few_tokens(tok):
    lengths = [len(ids) for ids in tokenize_cues(DEFAULT_CUES, tok)]
    assert DEFAULT_CUES[1] == EOT_CUE and lengths[1] == 1
    assert lengths[0] <= 20 and lengths[2] <= 3  # Llama-3: 11 / 1 / 2; the byte tokenizer: 50 / 1 / 4
    assert len(tok(DEFAULT_CUES[0], add_special_tokens=False).input_ids) < len(DEFAULT_CUES[0]) / 2.5


def test_digits_are_single_tokens(tok):
    prompt = retrieval.passkey_samples(256, tok, num_samples=1, seed=0, style="compact")[0]
    key = prompt.answers[0]
    pieces = tok.convert_ids_to_tokens(tok(f" {key}.", add_special_tokens=False).input_ids)
    assert [p for p in pieces if p.isdigit()] == list(key)
    assert prompt.prompt_tokens <= 256


def test_training_is_deterministic(tmp_path):
    a = train_bpe_tokenizer(600, _small_texts(), out_dir=tmp_path / "a")
    b = train_bpe_tokenizer(600, _small_texts(), out_dir=tmp_path / "b")
    ja, jb = (json.loads((tmp_path / d / "tokenizer.json").read_text()) for d in ("a", "b"))
    assert ja["model"]["merges"] == jb["model"]["merges"] and ja["model"]["vocab"] == jb["model"]["vocab"]
    assert a.get_vocab() == b.get_vocab() and len(a) == 600
    assert [a.convert_ids_to_tokens(i) for i in range(4)] == list(SPECIAL_TOKENS)


def test_corpus_fraction_and_bad_vocab():
    files = builtin_files()[:40]
    full = sum(len(t) for t in bpe_corpus_texts(files, fraction=1.0))
    part = sum(len(t) for t in bpe_corpus_texts(files))
    assert part == int(0.9 * full)  # the held-out tail of the corpus is never seen
    with pytest.raises(ValueError, match="must exceed"):
        train_bpe_tokenizer(MIN_VOCAB, ["abc"])
    with pytest.raises(ValueError, match="fraction"):
        next(bpe_corpus_texts(files, fraction=0))

"""endprompt.mixture: fixed-length documents with examples of varying place and size, seeded, cached corpus shape;
the spec parser (in `endprompt.data`, so the typed config can check a spec without importing the generators)."""

import numpy as np
import pytest

from endprompt.config import load_config
from endprompt.mixture import KINDS, build_mixture, parse_mixture, synthetic_document
from endprompt.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def test_mixture_documents_are_fixed_length_with_examples_of_varying_place_and_size(tmp_path):
    for kind in ("passkey", "niah", "vt", "mqar"):
        doc = synthetic_document(kind, 256, TOK, [0, 1])
        assert len(doc) == 256, kind
    ends = []
    for seed in range(40):
        text = TOK.decode(synthetic_document("passkey", 256, TOK, [seed]))
        key = text.split("The pass key is ")[1][:5]
        answer = f"What is the pass key? The pass key is {key}."
        assert text.count(answer) == 1 and text.count(f"{key} is the pass key.") == 1
        ends.append(text.index(answer) + len(answer))
    # the answer must not sit at a fixed place (a base learns the place instead of the retrieval)
    assert min(ends) < 160 and max(ends) > 230 and np.std(ends) > 20
    corpus = build_mixture("mixture:natural=1,passkey=1", TOK, 128, 50, cache_dir=str(tmp_path), progress=False)
    assert len(corpus) == 50 and all(len(corpus.doc(i)) == 128 for i in range(50))
    assert sum(corpus.meta["kinds"].values()) == 50


def test_documents_are_seeded():
    assert synthetic_document("niah", 200, TOK, [3, 4]) == synthetic_document("niah", 200, TOK, [3, 4])
    assert synthetic_document("niah", 200, TOK, [3, 4]) != synthetic_document("niah", 200, TOK, [3, 5])
    with pytest.raises(ValueError, match="'natural' is not a synthetic kind"):
        synthetic_document("natural", 200, TOK, 0)


def test_spec_parsing_and_the_config_check():
    assert parse_mixture("mixture:natural=3,passkey=1") == {"natural": 0.75, "passkey": 0.25}
    assert set(KINDS) == {"natural", "passkey", "niah", "mqar", "vt"}
    with pytest.raises(ValueError, match="unknown mixture component 'code'; components are: natural, passkey"):
        parse_mixture("mixture:code=1")
    with pytest.raises(ValueError, match="mixture component 'vt' needs a number as its weight, got 'x'"):
        parse_mixture("mixture:vt=x")
    with pytest.raises(ValueError, match="mixture weights must be >= 0 and not all 0"):
        parse_mixture("mixture:vt=0")
    with pytest.raises(ValueError, match="unknown mixture component 'code'"):  # at load time, before any training
        load_config("tiny-cpu", overrides=["data.source=mixture:code=1"])

"""endprompt.mixture: fixed-length documents with examples of varying place and size, seeded, cached corpus shape;
the shared mixture of varying-length documents (the same for every recipe, log-uniform lengths, examples at short and
long distances, located exactly); the spec parser (in `endprompt.data`, so the typed config can check a spec without
importing the generators)."""

import numpy as np
import pytest

from endprompt.config import load_config
from endprompt.mixture import (
    KINDS,
    build_mixture,
    build_shared_mixture,
    document_lengths,
    parse_mixture,
    synthetic_document,
)
from endprompt.tokenizer import byte_tokenizer
from tests.tolerances import SHARE_ATOL

TOK = byte_tokenizer()
STUDY_MIX = "mixture:natural=0.2,passkey=0.4,niah=0.3,mqar=0.05,vt=0.05"
L0 = 256


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


def test_the_fixed_length_mixture_locates_its_examples(study_workdir):
    corpus = build_mixture(STUDY_MIX, TOK, 256, 60, cache_dir=str(study_workdir / "cache"), progress=False)
    assert corpus.num_tokens == 60 * 256 and len(corpus.examples) > 30  # no EOS: today's documents, unchanged
    starts = {"passkey": "The pass key is ", "niah": "The number for ", "vt": "VAR ", "mqar": ""}
    questions = {"passkey": "What is the pass key?", "niah": "What is the number for ", "vt": "Which variables",
                 "mqar": "|"}
    for (doc, key, key_end, question, end), kind in zip(corpus.examples, corpus.example_kinds):
        assert corpus.offsets[doc] <= key < key_end <= question < end <= corpus.offsets[doc + 1]
        text = TOK.decode(corpus.tokens[key:end])
        assert text.startswith(starts[kind]) and TOK.decode(corpus.tokens[question:end]).startswith(questions[kind])
        if kind == "passkey":  # the answer that ends the example is the key's own value
            value = text[len("The pass key is ") :][:5]
            assert TOK.decode(corpus.tokens[key:key_end]).endswith("is the pass key.") and text.endswith(f" {value}.")


def test_the_shared_mixture_depends_on_the_seed_and_settings_only(study_workdir):
    build = lambda seed, **kw: build_shared_mixture(STUDY_MIX, TOK, kw.get("range", (64, 512)), 80, seed,
                                                    str(study_workdir / "cache"), progress=False)
    a, b = build(0), build(0)
    np.testing.assert_array_equal(a.tokens, b.tokens)  # token-identical: no recipe enters (train.py cuts it later)
    np.testing.assert_array_equal(a.examples, b.examples)
    assert not np.array_equal(build(1).tokens[:2000], a.tokens[:2000])
    assert a.meta["doc_len_range"] == [64, 512] and a.meta["documents"] == 80
    docs = [a.doc(i) for i in range(len(a))]
    assert all(d[-1] == TOK.eos_token_id for d in docs)  # EOS-separated, as a tokenized natural corpus
    with pytest.raises(ValueError, match=r"doc_len_range=\[512, 64\] needs 1 <= min_len <= max_len"):
        build_shared_mixture(STUDY_MIX, TOK, (512, 64), 4, cache_dir=str(study_workdir / "cache"), progress=False)


def test_document_lengths_are_log_uniform_within_the_range():
    lengths = document_lengths(L0 // 4, 8 * L0, 20_000, np.random.default_rng(0))
    assert lengths.min() >= L0 // 4 and lengths.max() <= 8 * L0
    octaves = np.histogram(lengths, [64, 128, 256, 512, 1024, 2049])[0] / len(lengths)
    np.testing.assert_allclose(octaves, 0.2, atol=SHARE_ATOL)  # every scale, 64 .. 2048, equally often


def test_shared_documents_span_the_range_with_examples_at_short_and_long_distances(study_workdir):
    corpus = build_shared_mixture(STUDY_MIX, TOK, (L0 // 4, 8 * L0), 400, 0, str(study_workdir / "cache"),
                                  progress=False)
    content = np.diff(corpus.offsets) - 1  # without the EOS
    synthetic = np.isin(np.arange(len(corpus)), corpus.examples[:, 0])
    assert content[~synthetic].min() >= L0 // 4 and content.max() <= 8 * L0
    # a synthetic document is lengthened only to hold its example whole (about 100-160 byte tokens without haystack)
    assert content[synthetic].min() >= L0 // 4 and corpus.meta["lengthened"] > 0
    assert (content < L0).mean() > 0.3 and (content > 2 * L0).mean() > 0.3  # spread over the range (0.4 each)
    assert len(corpus.examples) == len(corpus) - corpus.meta["kinds"]["natural"]  # no example lost its key
    distance = corpus.examples[:, 3] - corpus.examples[:, 1]
    assert (distance < L0 // 4).sum() > 20 and (distance > 2 * L0).sum() > 10 and distance.max() > 4 * L0


def test_the_uniform_whole_layout_puts_examples_at_long_distances(study_workdir):
    # study-bpe's layout ("log-part") leaves few key-to-question distances above 4 L0, where half of the passkey
    # prompts at the target put their key; "uniform-whole" (uniform lengths, examples filling their documents) fixes it
    build = lambda layout: build_shared_mixture(STUDY_MIX, TOK, (L0 // 4, 8 * L0), 400, 0, str(study_workdir / "cache"),
                                                progress=False, layout=layout)
    part, whole = build("log-part"), build("uniform-whole")
    assert whole.meta["layout"] == "uniform-whole" and part.meta["layout"] == "log-part"
    far = lambda c: ((c.examples[:, 3] - c.examples[:, 1]) > 4 * L0).mean()
    assert far(whole) > 0.1 and far(whole) > 4 * far(part)
    assert len(whole.examples) == len(whole) - whole.meta["kinds"]["natural"]  # no example lost its key
    # an example fills its document: the answer ends at the document's end but for the fitting remainder
    after = lambda c: np.median((c.offsets[c.examples[:, 0] + 1] - 1 - c.examples[:, 4])
                                / np.diff(c.offsets)[c.examples[:, 0]])
    assert after(whole) < 0.05 < after(part)  # measured 0.012 and 0.12
    with pytest.raises(ValueError, match=r"layout='nope' is not a document layout; layouts are: 'log-part'"):
        build("nope")

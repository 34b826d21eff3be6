"""endprompt.data: sources, corrupt-line reporting, caching, concatenated samples, the resumable sharded sampler."""

import json
import logging

import numpy as np
import pytest

from endprompt import data as D
from endprompt.config import DataConfig
from endprompt.recipe import Recipe
from endprompt.tokenizer import byte_tokenizer

TOK = byte_tokenizer()


def test_builtin_corpus_exists_everywhere():
    files = D.builtin_files()
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert not any("test" in f.parts or "idlelib" in f.parts for f in files)


def test_jsonl_corrupt_lines_are_reported_and_counted(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "first doc"}\n{"text": broken\n\n{"other": 1}\n{"text": "second"}\n')
    with caplog.at_level(logging.WARNING):
        corpus = D.tokenize_corpus(str(path), TOK, tmp_path / "cache", progress=False)
    assert len(corpus) == 2 and corpus.meta["stats"] == {"documents": 2, "corrupt_lines": 1, "missing_field": 1}
    assert f"{path}:2: corrupt JSON line" in caplog.text
    assert f"{path}:4: record has no string field 'text'" in caplog.text
    np.testing.assert_array_equal(corpus.doc(0), list(b"first doc") + [TOK.eos_token_id])


def test_text_dir_parquet_and_cache(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("alpha")
    pq.write_table(pa.table({"content": ["beta", "gamma"]}), tmp_path / "src" / "b.parquet")
    corpus = D.tokenize_corpus(str(tmp_path / "src"), TOK, tmp_path / "cache", text_field="content", progress=False)
    texts = sorted(TOK.decode(corpus.doc(i)[:-1]) for i in range(len(corpus)))
    assert texts == ["alpha", "beta", "gamma"]
    again = D.tokenize_corpus(str(tmp_path / "src"), TOK, tmp_path / "cache", text_field="content", progress=False)
    assert again.meta["key"] == corpus.meta["key"] and isinstance(again.tokens, np.memmap)  # served from the cache
    (tmp_path / "src" / "a.txt").write_text("alpha changed")
    changed = D.tokenize_corpus(str(tmp_path / "src"), TOK, tmp_path / "cache", text_field="content", progress=False)
    assert changed.meta["key"] != corpus.meta["key"]
    with pytest.raises(ValueError, match="has no column 'text'"):
        D.tokenize_corpus(str(tmp_path / "src" / "b.parquet"), TOK, tmp_path / "cache", progress=False)
    with pytest.raises(FileNotFoundError, match="data source '/nope' does not exist"):
        D.source_files("/nope")


def test_concatenated_samples_and_sample_lengths():
    corpus = D.TokenizedCorpus(np.arange(100, dtype=np.uint16), np.array([0, 30, 100]))
    src = D.SampleSource(corpus, length=40)
    assert len(src) == 2 and src[1].tolist() == list(range(40, 80))
    docs = D.SampleSource(corpus, concat=False)
    assert len(docs) == 2 and len(docs[0]) == 30
    r = Recipe("endprompt", a=16, b=4, target_len=128)
    assert D.sample_len(r) == 16 and D.sample_len(r.replace(name="pose")) == 128
    assert D.sample_len(r.replace(name="endprompt-tail")) == 20
    # the random variant cuts the windows the own-tail variant cuts (a target_len window would keep its head and tail
    # only, the same 1/8 of a concatenated corpus every epoch)
    assert D.sample_len(r.replace(name="endprompt-random")) == D.sample_len(r.replace(name="endprompt-tail")) == 20


def test_sampler_is_deterministic_sharded_and_resumable():
    s = D.EpochSampler(10, seed=3)
    first = s.next_global(4)
    assert len({i for i, _ in first}) == 4 and [k for _, k in first] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    shards = [D.EpochSampler.shard(first, r, 2) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(first)  # the union over ranks is the global batch
    state = s.state_dict()
    rest = s.next_global(8)  # crosses into epoch 1
    assert rest[-1][1][0] == 1
    t = D.EpochSampler(10, seed=3)
    t.load_state_dict(json.loads(json.dumps(state)))
    assert t.next_global(8) == rest
    with pytest.raises(ValueError, match="checkpoint sampled from 10 samples but the data now has 11"):
        D.EpochSampler(11).load_state_dict(state)


def test_skipped_lines_are_reported_again_when_the_cache_is_reused(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "first doc"}\n{"text": broken\n{"text": "second"}\n')
    D.tokenize_corpus(str(path), TOK, tmp_path / "cache", progress=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = D.tokenize_corpus(str(path), TOK, tmp_path / "cache", progress=False)  # a cache hit: no file read
    assert isinstance(again.tokens, np.memmap)
    assert "1 corrupt JSON lines, 0 records without 'text' and 0 empty files were skipped when the cache" in caplog.text
    # the full reason, with the position in the line
    assert f"{path}:2: corrupt JSON line skipped (Expecting value: line 1 column 10 (char 9))" in caplog.text
    assert again.meta["skipped"] == [f"{path}:2: corrupt JSON line skipped (Expecting value: line 1 column 10 "
                                     "(char 9))"]


def test_empty_files_are_named(tmp_path, caplog):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"yielded no documents: .*empty.txt: file is empty"):
        D.tokenize_corpus(str(tmp_path / "src" / "empty.txt"), TOK, tmp_path / "cache", progress=False)
    (tmp_path / "src" / "full.txt").write_text("some text")
    with caplog.at_level(logging.WARNING):
        corpus = D.tokenize_corpus(str(tmp_path / "src"), TOK, tmp_path / "cache", progress=False)
    assert len(corpus) == 1 and corpus.meta["stats"] == {"documents": 1, "empty_files": 1}
    assert "empty.txt: file is empty; skipped" in caplog.text


def test_document_layouts_draw_their_lengths_and_name_the_fix():
    rng = np.random.default_rng(0)
    lengths = D.uniform_lengths(64, 2048, 20_000, rng)
    assert lengths.min() >= 64 and lengths.max() <= 2048
    np.testing.assert_allclose(np.quantile(lengths, [0.25, 0.5, 0.75]), [560, 1056, 1552], rtol=0.03)  # uniform
    assert set(D.DOC_LAYOUTS) == {"log-part", "uniform-whole"}
    assert not D.DOC_LAYOUTS["log-part"].fill and D.DOC_LAYOUTS["uniform-whole"].fill
    assert DataConfig(source="mixture:natural=1", doc_len_range=(64, 512), doc_layout="uniform-whole")
    with pytest.raises(ValueError, match=r"data.doc_layout='uniform' is not a document layout; layouts are: "
                                         r"'log-part' \(log-uniform lengths"):
        DataConfig(doc_layout="uniform")

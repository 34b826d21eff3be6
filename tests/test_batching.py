"""endprompt.batching: padded batches with explicit masks, packing, seeding and resume, for every recipe."""

from collections import Counter

import numpy as np
import pytest
import torch

from endprompt.batching import Collator, pack_samples, packed_causal_mask
from endprompt.recipe import RECIPES, Recipe, full_doc_len, min_doc_len
from tests.conftest import random_docs

CUES = [np.array([7, 8, 9]), np.array([5])]


def recipe(name, **kw):
    kw = {"a": 16, "b": 4, "target_len": 128, **kw}
    return Recipe(name=name, **kw)


def check_batch_invariants(batch, samples):
    """Shape and padding invariants every padded batch must satisfy."""
    B, T = batch["input_ids"].shape
    lengths = torch.tensor([len(s) for s in samples])
    for key in ("labels", "position_ids", "attention_mask", "loss_weights", "segment_ids"):
        assert batch[key].shape == (B, T), key
    real = torch.arange(T)[None, :] < lengths[:, None]
    assert torch.equal(batch["attention_mask"].bool(), real)
    assert torch.equal(batch["labels"] == -100, ~real)  # -100 exactly on padding
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    assert torch.all(batch["loss_weights"][~real] == 0) and torch.all(batch["loss_weights"][real] > 0)
    for i, s in enumerate(samples):
        n = len(s)
        assert torch.equal(batch["position_ids"][i, :n], torch.from_numpy(s.position_ids))
        assert torch.equal(batch["input_ids"][i, :n], torch.from_numpy(s.input_ids))


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_makes_a_valid_batch(name):
    col = Collator(recipe(name), pad_token_id=0, cue_ids=CUES, seed=3)
    docs = random_docs(4, [300, 200, 17, 140])
    batch = col(docs)
    samples = Collator(recipe(name), pad_token_id=0, cue_ids=CUES, seed=3).samples(docs)
    check_batch_invariants(batch, samples)
    assert batch["position_ids"].max() <= 127
    assert sum(col.stats.values()) == 4


def test_short_documents_are_counted_never_silently_dropped():
    docs = random_docs(3, [300, 10, 3])
    col = Collator(recipe("endprompt-tail"), pad_token_id=0)
    batch = col(docs)
    assert col.stats == Counter(full=1, shrunk=1, skipped=1)  # 3 tokens < b + 1: unusable
    assert batch["input_ids"].shape[0] == 2
    short = col.samples([docs[1]])[0]
    # shrink: 10 tokens = 6 body + 4 tail; the terminal segment still ends at target_len - 1
    np.testing.assert_array_equal(short.position_ids, np.concatenate([np.arange(6), np.arange(124, 128)]))
    skip = Collator(recipe("endprompt-tail", short_docs="skip"), pad_token_id=0)
    skip(docs)
    assert skip.stats == Counter(full=1, skipped=2)
    with pytest.raises(ValueError, match="document of 10 tokens is shorter than recipe 'endprompt-tail' needs"):
        Collator(recipe("endprompt-tail", short_docs="error"), pad_token_id=0)(docs)
    with pytest.raises(ValueError, match="every document in the batch was skipped"):
        Collator(recipe("endprompt-tail"), pad_token_id=0)([docs[2]])
    assert min_doc_len(recipe("endprompt-tail")) == 5 and full_doc_len(recipe("endprompt")) == 16


def test_seeded_and_resumable():
    docs = random_docs(12, 300)
    a = Collator(recipe("endprompt-pose"), pad_token_id=0, cue_ids=CUES, seed=7)
    first = [a(docs[i : i + 4]) for i in range(0, 12, 4)]
    b = Collator(recipe("endprompt-pose"), pad_token_id=0, cue_ids=CUES, seed=7)
    b(docs[:4])
    c = Collator(recipe("endprompt-pose"), pad_token_id=0, cue_ids=CUES, seed=7)
    c.load_state_dict(b.state_dict())  # resume after one batch
    for got, want in zip([c(docs[4:8]), c(docs[8:12])], first[1:]):
        for key in want:
            assert torch.equal(got[key], want[key]), key
    other = Collator(recipe("endprompt-pose"), pad_token_id=0, cue_ids=CUES, seed=8)(docs[:4])
    assert not torch.equal(other["position_ids"], first[0]["position_ids"])


def test_packed_form():
    docs = random_docs(3, [300, 9, 50])
    col = Collator(recipe("endprompt"), pad_token_id=0, cue_ids=CUES, seed=1)
    samples = col.samples(docs)
    packed = pack_samples(samples)
    lengths = [len(s) for s in samples]
    assert packed["cu_seq_lens_q"].tolist() == [0, *np.cumsum(lengths).tolist()]
    assert packed["cu_seq_lens_q"].dtype == torch.int32 and packed["max_length_q"] == max(lengths)
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert torch.equal(packed["position_ids"][0], torch.from_numpy(np.concatenate([s.position_ids for s in samples])))
    starts = packed["cu_seq_lens_q"][:-1].long()
    assert torch.all(packed["labels"][0, starts] == -100) and torch.all(packed["loss_weights"][0, starts] == 0)
    assert (packed["labels"] == -100).sum() == len(samples)
    mask = packed_causal_mask(packed["cu_seq_lens_q"])[0, 0]
    assert mask.sum() == sum(n * (n + 1) // 2 for n in lengths)  # causal within each sample, nothing across
    assert not mask[lengths[0], lengths[0] - 1]
    additive = packed_causal_mask(packed["cu_seq_lens_q"], torch.float32)[0, 0]
    assert torch.equal(additive == 0, mask)

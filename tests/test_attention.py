"""The collator's masks on a real (tiny, random) LlamaForCausalLM under sdpa and eager.

The terminal segment must attend to the head although its positions jump by ~L; padding must change nothing; the
packed form must give the padded form's logits. We also pin what transformers does with ``attention_mask=None``.
"""

import numpy as np
import pytest
import torch

from endprompt.batching import Collator, model_inputs, pack_samples, packed_causal_mask, pad_samples
from endprompt.recipe import Recipe
from tests.conftest import random_docs, tiny_llama
from tests.tolerances import LOGITS_ATOL, LOGITS_CHANGED

BACKENDS = ["sdpa", "eager"]
TERMINAL_RECIPES = ["endprompt", "endprompt-tail", "endprompt-random", "endprompt-pose"]
CUES = [np.array([7, 8, 9]), np.array([5, 6])]


def make_recipe(name):
    return Recipe(name=name, a=24, b=4, target_len=256)


@pytest.fixture(scope="module", params=BACKENDS)
def model(request):
    return tiny_llama(request.param)


def logits(model, batch, **kw):
    """Forward as in training: no KV cache, which is when transformers infers packing from position ids."""
    kw.setdefault("use_cache", False)
    with torch.no_grad():
        return model(**model_inputs(batch), **kw).logits


@pytest.mark.parametrize("name", TERMINAL_RECIPES)
def test_terminal_segment_attends_to_the_head(model, name):
    col = Collator(make_recipe(name), pad_token_id=0, cue_ids=CUES, seed=0)
    doc = random_docs(1, 200, seed=1)[0]
    batch = col([doc])
    seg2 = batch["segment_ids"][0] == 2
    base = logits(model, batch)
    for pos in (0, 11):  # the very first token, and one in the middle of segment 1
        changed = {k: v.clone() for k, v in batch.items()}
        changed["input_ids"][0, pos] = 3 if batch["input_ids"][0, pos] != 3 else 4
        delta = (logits(model, changed)[0, seg2] - base[0, seg2]).abs().amax(-1)  # (b,)
        assert torch.all(delta > LOGITS_CHANGED), f"segment 2 does not see token {pos}: {delta.tolist()}"
    # causality: the terminal segment never leaks into segment 1
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][0, seg2] = 3
    assert (logits(model, changed)[0, ~seg2] - base[0, ~seg2]).abs().max() < LOGITS_ATOL


@pytest.mark.parametrize("name", ["endprompt", "pose", "full"])
def test_padding_changes_nothing(model, name):
    col = Collator(make_recipe(name).replace(window=40) if name == "full" else make_recipe(name), pad_token_id=0,
                   cue_ids=CUES, seed=2)
    samples = col.samples(random_docs(3, [200, 13, 30], seed=2))
    batch = pad_samples(samples, pad_token_id=0)
    padded = logits(model, batch)
    other_pad = logits(model, pad_samples(samples, pad_token_id=5))
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    for i, s in enumerate(samples):
        alone = logits(model, pad_samples([s], pad_token_id=0))[0]
        n = len(s)
        torch.testing.assert_close(padded[i, :n], alone, atol=LOGITS_ATOL, rtol=0)
        torch.testing.assert_close(other_pad[i, :n], alone, atol=LOGITS_ATOL, rtol=0)


def test_packed_equals_padded(model):
    col = Collator(make_recipe("endprompt-pose"), pad_token_id=0, cue_ids=CUES, seed=4)
    samples = col.samples(random_docs(3, [200, 9, 40], seed=4))
    padded = logits(model, pad_samples(samples, pad_token_id=0))
    packed = pack_samples(samples)
    eager = model.config._attn_implementation == "eager"
    mask = packed_causal_mask(packed["cu_seq_lens_q"], torch.float32 if eager else None)
    with torch.no_grad():
        out = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], attention_mask=mask).logits
    cu = packed["cu_seq_lens_q"].tolist()
    for i, s in enumerate(samples):
        torch.testing.assert_close(out[0, cu[i] : cu[i + 1]], padded[i, : len(s)], atol=LOGITS_ATOL, rtol=0)


def test_transformers_without_mask_splits_at_position_jumps(model):
    """Pin transformers' behaviour (5.x): with ``attention_mask=None`` and no cache (the training set-up), every
    position step != 1 starts a new "packed sequence", so the terminal segment is cut off from the head. With a cache
    (the default ``use_cache=True`` of an eval forward) no packing is inferred. If either changes, this test says so."""
    col = Collator(make_recipe("endprompt"), pad_token_id=0, cue_ids=CUES, seed=0)
    batch = col(random_docs(1, 200, seed=1))
    seg2 = batch["segment_ids"][0] == 2
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][0, 0] = 3 if batch["input_ids"][0, 0] != 3 else 4
    bare = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    bare_changed = {"input_ids": changed["input_ids"], "position_ids": changed["position_ids"]}
    with torch.no_grad():
        split = model(**bare, use_cache=False).logits
        split_changed = model(**bare_changed, use_cache=False).logits
        cached = model(**bare, use_cache=True).logits
    assert (split_changed[0, seg2] - split[0, seg2]).abs().max() < LOGITS_ATOL  # the head is invisible: a bug trap
    masked = logits(model, batch)
    assert (masked[0, seg2] - split[0, seg2]).abs().max() > LOGITS_CHANGED  # our explicit mask restores it
    torch.testing.assert_close(cached, masked, atol=LOGITS_ATOL, rtol=0)

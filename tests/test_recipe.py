"""endprompt.recipe: every recipe's content, positions, loss weights and errors, and the registry."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from endprompt import positions as P
from endprompt.batching import Collator
from endprompt.recipe import (
    DEFAULT_CUES,
    EOT_CUE,
    RECIPES,
    Recipe,
    RecipeSpec,
    build_sample,
    full_doc_len,
    min_doc_len,
    recipe_position_ids,
    register_recipe,
    tokenize_cues,
)
from tests.conftest import make_tokenizer, random_docs

CUES = [np.array([7, 8, 9]), np.array([5])]


def recipe(name, **kw):
    kw = {"a": 16, "b": 4, "target_len": 128, **kw}
    return Recipe(name=name, **kw)


def test_endprompt_paper_variant():
    r = recipe("endprompt", prompt_weight=0.25)
    doc = random_docs(1, 100)[0]
    s = build_sample(doc, r, rng=0, cue_ids=CUES)
    prompt = s.input_ids[16:]
    assert any(np.array_equal(prompt, c) for c in CUES)  # an end prompt from the cue set, appended
    np.testing.assert_array_equal(s.input_ids[:16], doc[:16])  # the text stays intact as segment 1
    np.testing.assert_array_equal(s.position_ids, P.endprompt_position_ids(16, len(prompt), 128))  # Eq. 5
    np.testing.assert_array_equal(s.loss_weights, [1.0] * 16 + [0.25] * len(prompt))  # Eq. 11
    np.testing.assert_array_equal(s.segment_ids, [1] * 16 + [2] * len(prompt))
    drawn = Counter(len(build_sample(doc, r, rng=i, cue_ids=CUES).input_ids) for i in range(200))
    assert set(drawn) == {19, 17}  # both cues are drawn


def test_tail_and_random_variants_use_the_document():
    doc = random_docs(1, 100)[0]
    s = build_sample(doc, recipe("endprompt-tail"), rng=0)
    np.testing.assert_array_equal(s.input_ids, doc[:20])  # the sample's own last b tokens become segment 2
    np.testing.assert_array_equal(s.position_ids, P.endprompt_position_ids(16, 4, 128))
    assert np.all(s.loss_weights == 1.0)  # the authors' scripts: plain cross-entropy
    s = build_sample(doc, recipe("endprompt-random"), rng=0)
    np.testing.assert_array_equal(s.input_ids, np.concatenate([doc[:16], doc[-4:]]))  # the document's real end
    t = s.position_ids[16]
    assert 16 <= t <= 124
    np.testing.assert_array_equal(s.position_ids[16:], np.arange(t, t + 4))


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 400), st.integers(1, 4), st.integers(0, 2**16))
def test_pose_content_and_positions(n, k, seed):
    r = recipe("pose", num_chunks=k)
    doc = np.arange(1000, 1000 + n)  # token = 1000 + index: content offsets are readable
    s = build_sample(doc, r, rng=seed)
    w = min(20, n)
    assert len(s) == w and s.input_ids[0] == 1000  # chunk 1 starts at the document's head
    assert np.all(np.diff(s.input_ids) >= 1)  # later chunks are later spans of the same document
    assert len(P.segment_runs(s.input_ids)) <= k and len(P.segment_runs(s.position_ids)) <= k
    assert s.position_ids[0] == 0 and s.position_ids[-1] <= 127


def test_endprompt_pose_hybrid():
    r = recipe("endprompt-pose", num_chunks=3)
    doc = np.arange(1000, 1200)
    seen_skip = False
    for seed in range(50):
        s = build_sample(doc, r, rng=seed, cue_ids=CUES)
        b = len(s) - 16
        assert s.input_ids[0] == 1000 and np.all(np.diff(s.input_ids[:16]) >= 1)
        np.testing.assert_array_equal(s.position_ids[16:], np.arange(128 - b, 128))  # anchored at the target
        assert s.position_ids[15] <= 127 - b
        np.testing.assert_array_equal(s.loss_weights[16:], np.float32(0.1))
        seen_skip |= len(P.segment_runs(s.position_ids[:16])) > 1
    assert seen_skip


def test_tokenized_cues(tokenizer):
    ids = tokenize_cues(DEFAULT_CUES, tokenizer)
    assert ids[1].tolist() == [tokenizer.convert_tokens_to_ids("<|eot_id|>")]  # EP_2: the end-of-turn token
    assert tokenizer.decode(ids[0]) == "this is the end of text , please pay attention here"
    assert tokenizer.decode(ids[2]) == "end ."
    no_eot = make_tokenizer(with_eot=False)
    assert tokenize_cues([EOT_CUE], no_eot)[0].tolist() == [no_eot.eos_token_id]
    col = Collator.from_tokenizer(recipe("endprompt", b=12), tokenizer)
    assert col.pad_token_id == tokenizer.pad_token_id and len(col.cue_ids) == 3


def test_errors_name_the_value_and_the_fix(tokenizer):
    with pytest.raises(ValueError, match="recipe.name='endprompt-fixed' is not valid; choose one of: endprompt, .*"
                                         "register_recipe"):
        Recipe(name="endprompt-fixed")
    with pytest.raises(ValueError, match=r"target_len=20 must exceed the physical length a \+ b = 16 \+ 4"):
        recipe("endprompt", target_len=20)
    with pytest.raises(ValueError, match="b .* must be >= 1, got 0"):
        recipe("endprompt-tail", b=0)
    with pytest.raises(ValueError, match="needs a non-empty cue set"):
        recipe("endprompt", cues=())
    with pytest.raises(ValueError, match="the cue set is empty"):
        tokenize_cues([], tokenizer)
    with pytest.raises(ValueError, match=r"end prompt 'This is the end of text.*' is 11 tokens, longer than the "
                                         r"allowed b=4; raise Recipe.b to >= 11"):
        Collator.from_tokenizer(recipe("endprompt"), tokenizer)
    with pytest.raises(ValueError, match="tokenizer has no pad token.*tokenizer.pad_token = tokenizer.eos_token"):
        Collator.from_tokenizer(recipe("full"), make_tokenizer(with_pad=False))
    with pytest.raises(ValueError, match="prompt_weight must be in"):
        recipe("endprompt", prompt_weight=0.0)
    with pytest.raises(ValueError, match="short_docs='drop' must be one of"):
        recipe("full", short_docs="drop")


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_layouts_match_the_builders(name):
    r = recipe(name)
    ids = recipe_position_ids(r, rng=0)
    assert ids[0] == 0 and ids.max() <= 127 and np.all(np.diff(ids) >= 1)
    assert len(ids) == r.physical_len == (128 if r.spec.physical_len is RECIPES["full"].physical_len else 20)
    if name in ("endprompt", "endprompt-tail", "endprompt-pose"):
        np.testing.assert_array_equal(ids[16:], np.arange(124, 128))


def test_jump_target_option_drops_only_the_target_across_the_position_jump():
    doc = random_docs(1, 100)[0]
    for name in ("endprompt", "endprompt-tail", "endprompt-random", "endprompt-pose"):
        kept = build_sample(doc, recipe(name), rng=0, cue_ids=CUES)
        dropped = build_sample(doc, recipe(name, jump_target=False), rng=0, cue_ids=CUES)
        jump = int(np.flatnonzero(kept.segment_ids == 2)[0])  # the first terminal token
        assert kept.position_ids[jump] - kept.position_ids[jump - 1] > 1 or name == "endprompt-random"
        assert kept.loss_weights[jump] > 0 and dropped.loss_weights[jump] == 0  # default: kept (PoSE keeps its own)
        others = np.arange(len(kept)) != jump
        np.testing.assert_array_equal(dropped.loss_weights[others], kept.loss_weights[others])
        np.testing.assert_array_equal(dropped.input_ids, kept.input_ids)
    for name in ("pose", "full"):  # no terminal segment: nothing to drop
        assert np.array_equal(build_sample(doc, recipe(name, jump_target=False), rng=0).loss_weights,
                              build_sample(doc, recipe(name), rng=0).loss_weights)
    # the weighted loss then ignores that target: padded weight 0 at the first terminal position
    batch = Collator(recipe("endprompt-tail", jump_target=False), pad_token_id=0)([doc])
    assert batch["loss_weights"][0, 16] == 0 and batch["loss_weights"][0, 15] == 1 and batch["loss_weights"][0, 17] == 1


def _continuation(doc, r, gen, prompt):
    # the document's own continuation as the terminal segment: doc[:a] then doc[a:a+b], placed on [L-b, L-1]
    body = doc[: min(r.a, len(doc) - r.b)]
    return body, doc[len(body) : len(body) + r.b], P.endprompt_position_ids(len(body), r.b, r.target_len)


@pytest.fixture
def continuation_recipe():
    ab = lambda r: r.a + r.b
    spec = register_recipe("continuation", RecipeSpec(
        cut=_continuation, physical_len=ab, full_doc_len=ab, sample_len=ab, min_doc_len=lambda r: r.b + 1,
        check=lambda r: P.endprompt_position_ids(r.a, r.b, r.target_len) is None))
    yield spec
    del RECIPES["continuation"]


def test_a_recipe_registered_outside_the_package_trains(continuation_recipe, tmp_path):
    """Adding a recipe is one register_recipe call: samples, the data pipeline, the config and train() all take it."""
    from endprompt.config import load_config
    from endprompt.data import sample_len
    from endprompt.train import train

    r = recipe("continuation")
    doc = np.arange(1000, 1300)
    s = build_sample(doc, r, rng=0)
    np.testing.assert_array_equal(s.input_ids, doc[:20])
    np.testing.assert_array_equal(s.position_ids, P.endprompt_position_ids(16, 4, 128))
    assert sample_len(r) == 20 and full_doc_len(r) == 20 and min_doc_len(r) == 5
    np.testing.assert_array_equal(recipe_position_ids(r), s.position_ids)
    with pytest.raises(ValueError, match=r"recipe 'continuation': target_len=20 must exceed"):
        recipe("continuation", target_len=20)
    cfg = load_config("tiny-cpu", overrides=[
        "recipe.name=continuation", "recipe.a=100", "recipe.b=8", f"run.out_dir={tmp_path / 'run'}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.max_documents=20", "run.progress=false", "optim.max_steps=2",
        "optim.micro_batch_size=2", "model.hidden_size=32", "run.save_every=0"])
    result = train(cfg)
    assert result.status == "completed" and result.steps == 2 and np.all(np.isfinite(result.losses))
    assert result.tokens == 2 * 2 * 108  # two steps of two full-size samples of a + b tokens
    with pytest.raises(TypeError, match="needs a RecipeSpec"):
        register_recipe("bad", {"cut": _continuation})


def test_recipe_behaviour_comes_from_the_spec_not_the_name():
    """What a recipe does to the model and the training loop is a RecipeSpec field; no module compares names."""
    import re
    from pathlib import Path

    import endprompt

    assert RECIPES["longlora"].s2_attention and RECIPES["longlora"].default_lora_r == 8
    assert not RECIPES["pretrain"].extends_positions and not RECIPES["sharedllm"].extends_positions
    assert RECIPES["sharedllm"].sharedllm and not RECIPES["full"].sharedllm
    assert all(RECIPES[n].extends_positions and not RECIPES[n].s2_attention and RECIPES[n].default_lora_r == 0
               for n in ("endprompt", "endprompt-tail", "endprompt-random", "endprompt-pose", "pose", "full"))
    name_test = re.compile(r"""\b(recipe|r)\.name\s*(==|!=|not in|in)\s*[("']""")
    found = [f"{p}:{i}" for p in Path(endprompt.__file__).parent.rglob("*.py") if p.name != "recipe.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if name_test.search(line)]
    assert not found, f"recipe-name comparisons outside the registry: {found}"

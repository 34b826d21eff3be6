"""endprompt.study: the arms are typed configurations with matched budgets, the extension's settings reach every arm,
the presets study the shipped bases, and bad settings name the fix."""

from dataclasses import replace
from pathlib import Path

import pytest

from endprompt.shipped_arms import shipped_arm
from endprompt.study import PRESETS, TRAINED, Extension, StudyConfig, extension_config


def test_bad_study_config():
    with pytest.raises(ValueError, match="unknown methods \\['yarn2'\\]"):
        StudyConfig(methods=("yarn2",))
    with pytest.raises(ValueError, match="schedule='cosin'"):
        Extension(schedule="cosin")
    with pytest.raises(ValueError, match="factor must be >= 2"):
        Extension(factor=1)


def test_extension_settings_reach_every_arm(tmp_path):
    cfg = replace(PRESETS["study"], extension=Extension(factor=4, lr=1e-4, schedule="cosine", warmup=7, docs=99))
    for method in TRAINED:
        optim = extension_config(cfg, method, tmp_path, 0, tmp_path).optim
        assert (optim.schedule, optim.warmup_steps) == ("cosine", 7) and optim.lr == (TRAINED[method].lr or 1e-4)
    one = extension_config(cfg, "endprompt", tmp_path, 0, tmp_path)
    assert one.recipe.target_len == 4 * cfg.L0 == cfg.target_len and one.data.mixture_docs == 99
    assert one.data.doc_len_range is None  # the committed study: each recipe's own document length
    shared = replace(cfg, extension=Extension(factor=4, shared_documents=True))
    ranges = {extension_config(shared, m, tmp_path, 0, tmp_path).data.doc_len_range for m in TRAINED}
    assert ranges == {(cfg.L0 // 4, 4 * cfg.L0)}  # one set of documents for every arm


def test_every_trained_arm_is_a_typed_config_with_a_matched_budget(tmp_path):
    cfg = PRESETS["study"]
    tokens = {}
    for method in TRAINED:
        train_cfg = extension_config(cfg, method, tmp_path / "base", 1, tmp_path / method)
        r = train_cfg.recipe
        assert train_cfg.model.original_len == cfg.L0
        assert train_cfg.model.path == str(tmp_path / "base") and train_cfg.run.seed == 1
        if TRAINED[method].is_sharedllm:  # an architecture: L0 + 4 chunks of L0/4, its local window L0, no PI
            s = train_cfg.sharedllm
            assert (s.chunk_size, s.window, r.target_len) == (cfg.L0 // 4, cfg.L0, cfg.L0 + 4 * cfg.L0 // 4)
            assert r.physical_len == r.target_len and not r.spec.extends_positions
        else:
            assert r.target_len == cfg.target_len
            assert r.physical_len == (cfg.target_len if r.name in ("full", "longlora") else cfg.L0)
        assert r.b == (cfg.b_cue if r.spec.uses_cues else cfg.b_tail)
        tokens[method] = train_cfg.optim.max_steps * train_cfg.optim.micro_batch_size * r.physical_len
    budget = cfg.extension.tokens
    assert max(tokens.values()) <= 1.01 * min(tokens.values()) and abs(tokens["endprompt"] - budget) < 4096
    one = extension_config(cfg, "endprompt-end", tmp_path, 0, tmp_path)
    assert one.recipe.cues == ("End.",) and one.recipe.name == "endprompt"
    longlora = extension_config(cfg, "longlora", tmp_path, 0, tmp_path).optim
    # its adapters train at their own rate; the weights it trains in full keep every arm's (LongLoRA: full FT's)
    assert (longlora.lr, longlora.adapter_lr) == (cfg.extension.lr, 2e-3)
    assert all(extension_config(cfg, m, tmp_path, 0, tmp_path).optim.adapter_lr is None for m in TRAINED
               if m != "longlora")
    ropes = {method: extension_config(cfg, method, tmp_path, 0, tmp_path).rope.rope_type for method in TRAINED}
    assert {m for m, r in ropes.items() if r != "linear"} == {"endprompt-yarn", "full-yarn"}  # PI elsewhere (paper)
    assert ropes["endprompt-yarn"] == "yarn" and TRAINED["endprompt-yarn"].recipe == TRAINED["endprompt"].recipe


def test_presets_study_shipped_bases_with_their_own_cue_budget():
    from endprompt.recipe import DEFAULT_CUES, tokenize_cues
    from endprompt.reproduce import SHIPPED
    from endprompt.tokenizer import load_tokenizer

    for name, cfg in PRESETS.items():  # a preset never pretrains its base silently (the smoke base is tiny)
        assert name == "smoke" or (SHIPPED / cfg.base.key / "config.json").exists(), (name, cfg.base.key)
    for name in ("study", "study-bpe", "demo"):
        cfg = PRESETS[name]
        tok = load_tokenizer(None, SHIPPED / cfg.base.key)
        longest = max(len(ids) for ids in tokenize_cues(DEFAULT_CUES, tok))
        assert cfg.b_cue == longest + 2, (name, longest)  # the body is as long as the longest cue allows
    bpe = PRESETS["study-bpe"]
    assert len(load_tokenizer(None, SHIPPED / bpe.base.key)) == bpe.base.vocab_size == 2048
    assert bpe.extension.shared_documents and len(bpe.curve) == 4
    demo = PRESETS["demo"]  # the main job: the study's base, documents and first curve point, and its shipped arms
    assert demo.base == bpe.base and demo.extension == replace(bpe.extension, tokens=bpe.extension.tokens // 8)
    assert demo.shipped and set(demo.seeds) == {shipped_arm(n).seed for n in demo.shipped}


def test_bad_learning_curves_name_the_fix():
    with pytest.raises(ValueError, match="ending at 1.0"):
        StudyConfig(curve=(0.5, 0.25, 1.0))
    with pytest.raises(ValueError, match="ending at 1.0"):
        StudyConfig(curve=(0.5,))
    with pytest.raises(ValueError, match="schedule='cosine'"):
        StudyConfig(curve=(0.5, 1.0), extension=Extension(schedule="cosine"))


def test_study_bpe_long_differs_from_study_bpe_only_in_its_documents():
    long, bpe = PRESETS["study-bpe-long"], PRESETS["study-bpe"]
    assert long.extension.doc_layout == "uniform-whole" and bpe.extension.doc_layout == "log-part"
    assert replace(long, name=bpe.name, out_dir=bpe.out_dir, extension=bpe.extension) == bpe
    with pytest.raises(ValueError, match=r"Extension.doc_layout='uniform-whole' lays out the shared documents; set "
                                         r"shared_documents=True"):
        Extension(doc_layout="uniform-whole")
    cfg = extension_config(long, "full", Path("base"), 0, Path("out"))
    assert cfg.data.doc_layout == "uniform-whole" and cfg.data.doc_len_range == (long.L0 // 4, long.target_len)


def test_the_end_prompt_budget_is_the_base_tokenizers():
    """b_cue unset takes the base's tokenizer's longest cue + CUE_MARGIN; a given one that contradicts the tokenizer
    is refused with the fix; an unresolved config cannot build a cue arm (extend.py once trained EndPrompt on the BPE
    base with the byte default, 52 instead of 19: a body of 204 tokens instead of 237, 82% of the budget)."""
    from endprompt.recipe import DEFAULT_CUES, tokenize_cues
    from endprompt.reproduce import SHIPPED
    from endprompt.study import CUE_MARGIN, cue_budget
    from endprompt.tokenizer import byte_tokenizer, load_tokenizer

    bpe = PRESETS["study-bpe"]
    tok = load_tokenizer(None, SHIPPED / bpe.base.key)
    longest = max(len(ids) for ids in tokenize_cues(DEFAULT_CUES, tok))
    assert cue_budget(tok) == longest + CUE_MARGIN == 19 and cue_budget(byte_tokenizer()) == 52
    unset = replace(bpe, b_cue=None)
    assert unset.for_tokenizer(tok) == bpe and bpe.for_tokenizer(tok) is bpe
    with pytest.raises(ValueError, match=r"b_cue=52, but the base's tokenizer makes the longest end prompt 17 tokens, "
                                         r"so its budget is 19: set b_cue=19 or leave it unset"):
        replace(bpe, b_cue=52).for_tokenizer(tok)
    with pytest.raises(ValueError, match=r"StudyConfig.b_cue is unset, so 'endprompt' has no end-prompt budget"):
        extension_config(unset, "endprompt", Path("base"), 0, Path("out"))
    assert extension_config(unset, "full", Path("base"), 0, Path("out")).recipe.b == unset.b_tail  # no cue: no need
    assert StudyConfig().b_cue is None and PRESETS["study"].b_cue == 52

"""endprompt.config: presets, overrides, validation with clear errors, YAML round trip, the CLI's dry run."""

import os
import subprocess
import sys

import pytest

from endprompt.config import list_presets, load_config


def test_presets_load_and_validate():
    assert {"tiny-cpu", "llama3-8b-64k", "llama2-7b-64k", "mistral-7b-64k"} <= set(list_presets())
    paper = load_config("llama3-8b-64k")
    assert (paper.recipe.a, paper.recipe.b, paper.recipe.target_len) == (8192, 20, 65536)
    assert paper.rope.rope_type == "linear" and paper.rope.factor == 8 and paper.model.original_len == 8192
    assert paper.optim.lr == 2e-5 and paper.optim.warmup_steps == 20 and paper.optim.weight_decay == 0
    assert paper.optim.schedule == "constant" and paper.model.gradient_checkpointing
    global_batch = paper.optim.micro_batch_size * paper.optim.grad_accum * paper.run.num_processes
    assert global_batch == 64 and paper.optim.train_tokens == 1_000_000_000 and paper.run.mixed_precision == "bf16"
    assert load_config("mistral-7b-64k").model.config_overrides == {"sliding_window": None}
    assert load_config("llama2-7b-64k").rope.factor == 16


def test_overrides_are_typed():
    cfg = load_config("tiny-cpu", overrides=["optim.lr=3e-4", "optim.max_steps=7", "model.lora_targets=q_proj,v_proj",
                                             "recipe.cues=[End., <eot>]", "run.resume=false", "rope.factor=null"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.max_steps == 7 and cfg.run.resume is False
    assert cfg.model.lora_targets == ("q_proj", "v_proj") and cfg.recipe.cues == ("End.", "<eot>")
    assert cfg.rope.factor is None


def test_yaml_round_trip(tmp_path):
    cfg = load_config("llama3-8b-64k", overrides=["recipe.name=endprompt-pose"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path=path) == cfg


@pytest.mark.parametrize(("overrides", "message"), [
    (["recipe.name=yarn"], "recipe.name='yarn' is not valid; choose one of: endprompt, endprompt-tail"),
    (["rope.rope_type=pi"], "unknown rope.rope_type 'pi'; valid types are: default, dynamic, linear"),
    (["recipe.a=100", "recipe.b=20", "recipe.target_len=250"],
     "recipe.target_len=250 must exceed model.original_len=256"),
    (["recipe.a=2000", "recipe.b=48"],
     r"recipe 'endprompt': target_len=2048 must exceed the physical length a \+ b = 2000 \+ 48"),
    (["optim.lr=0"], "optim.lr must be > 0"),
    (["optim.adapter_lr=0"], r"optim.adapter_lr must be > 0 \(or None: optim.lr\), got 0"),
    (["optim.adapter_lr=2e-3"], "optim.adapter_lr=0.002 is the LoRA adapters' learning rate, but this run trains no "
                                "adapters .*recipe 'endprompt' adds none.*drop optim.adapter_lr or set model.lora_r"),
    (["optim.max_steps=abc"], "optim.max_steps must be an integer, got 'abc'"),
    (["optim.nope=1"], r"unknown field\(s\) \['nope'\] in section 'optim'"),
    (["lr=1"], "must look like section.field=value"),
    (["run.strategy=horovod"], "run.strategy='horovod' is not valid"),
    (["recipe.name=pretrain"], "recipe 'pretrain' trains at the model's own length"),
    (["data.source=mixture:passkey=1", "data.doc_len_range=[2048, 64]"],
     r"data.doc_len_range=\[2048, 64\] needs 1 <= min_len <= max_len; give e.g. \[64, 2048\]"),
    (["data.source=mixture:passkey=1", "data.doc_len_range=[0, 64]"], r"give e.g. \[1, 64\]"),
    (["data.source=mixture:passkey=1", "data.doc_len_range=64"], "must be two token counts .* got \\(64,\\)"),
    (["data.doc_len_range=[64, 2048]"], "data.source='builtin' is not a mixture; set data.doc_len_range=null"),
    (["data.source=mixture:passkey=1", "data.doc_len_range=[64, 2048]", "data.doc_len=256"],
     "data.doc_len=256 and data.doc_len_range=\\[64, 2048\\] both set"),
])
def test_bad_configs_name_the_value_and_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny-cpu", overrides=overrides)


def test_a_shared_mixture_range_is_typed():
    cfg = load_config("tiny-cpu", overrides=["data.source=mixture:natural=1,passkey=1",
                                             "data.doc_len_range=[64, 2048]"])
    assert cfg.data.doc_len_range == (64, 2048) and cfg.data.concat  # cut as natural text is
    assert load_config("tiny-cpu").data.doc_len_range is None  # default: the fixed-length mixture, unchanged


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'llama4'; presets are: .*tiny-cpu"):
        load_config("llama4")


def test_cli_dry_run_prints_config_and_launch_command():
    out = subprocess.run([sys.executable, "-m", "endprompt.cli", "train", "--preset", "llama3-8b-64k", "--dry-run",
                          "--set", "run.strategy=fsdp2"], capture_output=True, text=True, check=True).stdout
    assert "target_len: 65536" in out and "factor: 8" in out
    assert ("accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 8 --num_machines 1 "
            "-m endprompt.cli train --preset llama3-8b-64k --set run.strategy=fsdp2") in out
    bad = subprocess.run([sys.executable, "-m", "endprompt.cli", "train", "--preset", "tiny-cpu", "--recipe", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "recipe.name='x' is not valid" in bad.stderr


def test_the_recipe_section_is_a_batching_recipe_validated_once():
    from endprompt.recipe import Recipe, recipe_position_ids

    cfg = load_config("tiny-cpu", overrides=["recipe.jump_target=false", "recipe.s2_group_ratio=0.5"])
    assert isinstance(cfg.recipe, Recipe) and cfg.recipe.jump_target is False and cfg.recipe.s2_group_ratio == 0.5
    assert recipe_position_ids(cfg.recipe)[-1] == cfg.recipe.target_len - 1  # usable as is by batching
    with pytest.raises(ValueError, match=r"recipe.s2_group_ratio must be in \(0, 1\], got 1.5"):
        load_config("tiny-cpu", overrides=["recipe.s2_group_ratio=1.5"])
    with pytest.raises(ValueError, match="recipe 'pose': target_len=2048 must exceed the PoSE window 4096"):
        load_config("tiny-cpu", overrides=["recipe.name=pose", "recipe.window=4096"])


def test_resume_conflicts_name_what_changed_and_allow_what_may():
    from endprompt.config import RESUMABLE_CHANGES, resume_conflicts

    cfg = load_config("tiny-cpu")
    saved = cfg.to_dict()
    assert resume_conflicts(saved, cfg) == []
    later = load_config("tiny-cpu", overrides=["optim.max_steps=999", "run.out_dir=/elsewhere", "run.stop_after=3",
                                               "data.cache_dir=/c", "run.progress=false"])
    assert resume_conflicts(saved, later) == []
    assert {"optim.max_steps", "run.out_dir"} <= RESUMABLE_CHANGES
    other = load_config("tiny-cpu", overrides=["rope.rope_type=yarn", "model.hidden_size=96", "run.seed=3"])
    assert resume_conflicts(saved, other) == ["model.hidden_size: 128 -> 96", "rope.rope_type: 'linear' -> 'yarn'",
                                              "run.seed: 0 -> 3"]
    older = {section: {k: v for k, v in fields.items() if k != "doc_layout"} for section, fields in saved.items()}
    assert resume_conflicts(older, cfg) == []  # a setting newer than the checkpoint is not compared
    cosine = load_config("tiny-cpu", overrides=["optim.schedule=cosine"])
    longer = load_config("tiny-cpu", overrides=["optim.schedule=cosine", "optim.max_steps=999"])
    assert resume_conflicts(cosine.to_dict(), longer) == ["optim.max_steps: 100 -> 999"]  # every step's rate moves
    here = load_config("tiny-cpu", overrides=["model.tokenizer=cache/tok"])
    there = load_config("tiny-cpu", overrides=[f"model.tokenizer={os.path.abspath('cache/tok')}"])
    assert resume_conflicts(here.to_dict(), there) == []  # one place, spelled two ways
    moved = load_config("tiny-cpu", overrides=["sharedllm.beta=4"])
    assert resume_conflicts(saved, moved) == []  # the sharedllm section is not read by this recipe

"""endprompt.train on the tiny model: every recipe, exact resume, reload with stock transformers, divergence, errors."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from endprompt import modeling as M
from endprompt import rope as R
from endprompt.config import load_config
from endprompt.recipe import RECIPES
from endprompt.train import TrainingDiverged, latest_checkpoint, train, weighted_cross_entropy
from tests.tolerances import BITWISE, FLOAT64_RTOL


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus-cache"))


def config(out_dir, cache_dir, *overrides):
    return load_config("tiny-cpu", overrides=[
        f"run.out_dir={out_dir}", f"data.cache_dir={cache_dir}", "data.max_documents=40", "run.progress=false",
        "optim.micro_batch_size=2", "optim.max_steps=2", "optim.warmup_steps=1", "run.log_every=1",
        "model.hidden_size=64", *overrides])


def test_weighted_cross_entropy_matches_the_definition():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, 4, -100], [0, 6, 5, -100, -100]])
    weights = torch.tensor([[1.0, 1.0, 0.1, 0.1, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    total, weight = weighted_cross_entropy(logits, labels, weights, chunk=2)
    expected = sum(w * -torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
                   for b in range(2) for t in range(1, 5) if labels[b, t] != -100 for w in [weights[b, t]])
    assert torch.isclose(total, expected) and weight == pytest.approx(1 + 0.1 + 0.1 + 1 + 1)


# sharedllm is an architecture: its final directory is a saved SharedLLM that stock transformers cannot load, so
# tests/test_sharedllm_train.py trains it through train(cfg) with its own config section.
@pytest.mark.parametrize("recipe", [name for name in RECIPES if name != "sharedllm"])
def test_every_recipe_trains_two_steps(recipe, tmp_path, cache_dir):
    overrides = ["recipe.target_len=256"] if recipe == "pretrain" else []
    if recipe == "longlora":
        overrides = ["recipe.target_len=512"]  # full-length samples: keep them short here
    result = train(config(tmp_path, cache_dir, f"recipe.name={recipe}", *overrides))
    assert result.status == "completed" and result.steps == 2 and len(result.losses) == 2
    assert all(np.isfinite(result.losses)) and result.losses[0] > 3.0  # a random byte model starts near ln(260)=5.6
    reloaded = AutoModelForCausalLM.from_pretrained(result.final_dir)
    expected = R.RopeScaling() if recipe == "pretrain" else R.for_extension("linear", 256, 512 if recipe == "longlora"
                                                                               else 2048, rope_theta=10000.0)
    np.testing.assert_allclose(R.compute_inv_freq(R.from_transformers_config(reloaded.config), 16)[0],
                               R.compute_inv_freq(expected, 16)[0], rtol=FLOAT64_RTOL)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and metrics[-1]["tokens"] == result.tokens


def test_resume_continues_exactly(tmp_path, cache_dir):
    args = ["recipe.name=endprompt-pose", "optim.max_steps=5", "optim.schedule=cosine", "run.save_every=2"]
    whole = train(config(tmp_path / "whole", cache_dir, *args))
    first = train(config(tmp_path / "split", cache_dir, *args, "run.stop_after=3"))
    assert first.status == "stopped" and first.steps == 3 and first.final_dir is None
    assert latest_checkpoint(tmp_path / "split").name == "step-00000003"
    second = train(config(tmp_path / "split", cache_dir, *args))
    assert second.status == "completed" and second.losses == whole.losses
    a = load_file(f"{whole.final_dir}/model.safetensors")
    b = load_file(f"{second.final_dir}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # identical weights on CPU
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def count_steps(monkeypatch) -> dict:
    """Count optimizer steps (micro_batch 2, grad_accum 1: one loss call per step)."""
    import endprompt.train as T

    calls, real = {"n": 0}, T.weighted_cross_entropy

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "weighted_cross_entropy", counted)
    return calls


def test_a_finished_run_given_more_steps_continues_from_its_end(tmp_path, cache_dir, monkeypatch):
    args = ["optim.schedule=constant"]  # the lr of a step does not depend on max_steps: one run of 3 is comparable
    first = train(config(tmp_path / "split", cache_dir, "optim.max_steps=2", *args))
    assert first.status == "completed" and latest_checkpoint(tmp_path / "split").name == "step-00000002"
    steps = count_steps(monkeypatch)
    longer = train(config(tmp_path / "split", cache_dir, "optim.max_steps=3", *args))
    assert steps["n"] == 1 and longer.steps == 3 and longer.losses[:2] == first.losses  # steps 1-2 are not redone
    again = train(config(tmp_path / "split", cache_dir, "optim.max_steps=3", *args))
    assert steps["n"] == 1 and again.losses == longer.losses  # a finished run run again trains nothing
    whole = train(config(tmp_path / "whole", cache_dir, "optim.max_steps=3", *args))
    assert longer.losses == whole.losses
    a, b = load_file(f"{whole.final_dir}/model.safetensors"), load_file(f"{longer.final_dir}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_cli_shows_that_a_run_resumed(tmp_path, cache_dir):
    sets = [a for o in [f"run.out_dir={tmp_path}", f"data.cache_dir={cache_dir}", "data.max_documents=40",
                        "run.progress=false", "optim.micro_batch_size=2", "optim.max_steps=2",
                        "model.hidden_size=64"] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "endprompt.cli", "train", "--preset", "tiny-cpu", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first = subprocess.run([*cmd, "--set", "run.stop_after=1"], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0 and "stopped: 1/2 steps" in first.stdout, first.stderr[-2000:]
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resumed from {tmp_path / 'checkpoints' / 'step-00000001'} at step 1" in second.stderr


def test_saved_model_reloads_with_stock_transformers(tmp_path, cache_dir):
    cfg = config(tmp_path, cache_dir)
    result = train(cfg)
    stock = AutoModelForCausalLM.from_pretrained(result.final_dir).eval()
    assert stock.config.rope_parameters["rope_type"] == "linear" and stock.config.rope_parameters["factor"] == 8.0
    assert stock.config.max_position_embeddings == 2048
    ours = M.prepare_model(cfg).model.eval()
    ours.load_state_dict(load_file(f"{result.final_dir}/model.safetensors"), strict=False)
    ours.tie_weights()
    ids = torch.arange(40)[None]
    pos = torch.cat([torch.arange(30), torch.arange(2038, 2048)])[None]  # an EndPrompt layout
    with torch.no_grad():
        a = stock(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).logits
        b = ours(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(a, b, atol=BITWISE, rtol=BITWISE)
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    assert tok("End.", add_special_tokens=False).input_ids == list(b"End.")


def test_extend_a_local_base_checkpoint(tmp_path, cache_dir):
    base = train(config(tmp_path / "base", cache_dir, "recipe.name=pretrain", "recipe.target_len=256"))
    ext = train(config(tmp_path / "ext", cache_dir, f"model.path={base.final_dir}", "model.tokenizer=null",
                       "model.original_len=null", "recipe.name=endprompt"))
    stock = AutoModelForCausalLM.from_pretrained(ext.final_dir)
    assert R.from_transformers_config(stock.config) == R.RopeScaling(rope_type="linear", factor=8.0)


def test_longlora_merges_its_adapters(tmp_path, cache_dir):
    result = train(config(tmp_path, cache_dir, "recipe.name=longlora", "recipe.target_len=512"))
    saved = load_file(f"{result.final_dir}/model.safetensors")
    assert not any("lora" in k for k in saved)  # merged into plain weights
    stock = AutoModelForCausalLM.from_pretrained(result.final_dir)
    assert stock.config._attn_implementation != "s2attn"


def test_adapters_train_at_their_own_rate_and_the_rest_at_lr(tmp_path, cache_dir):
    from endprompt.train import param_groups

    cfg = config(tmp_path, cache_dir, "recipe.name=longlora", "recipe.target_len=512", "optim.lr=1e-4",
                 "optim.adapter_lr=3e-3")
    model = M.prepare_model(cfg).model
    groups = param_groups(model, cfg.optim)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [g["lr"] for g in groups] == [1e-4, 3e-3]
    rest, adapters = ({names[id(p)] for p in g["params"]} for g in groups)
    assert adapters and all("lora_" in n for n in adapters)
    assert any("embed_tokens" in n for n in rest) and any("norm" in n for n in rest)  # LoRA+: trained in full
    assert not any("lora_" in n for n in rest)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert rest | adapters == trained and not rest & adapters
    single = param_groups(model, replace(cfg.optim, adapter_lr=None))
    assert len(single) == 1 and [id(p) for p in single[0]["params"]] == [
        id(p) for p in model.parameters() if p.requires_grad]  # as before: one group in the model's order
    result = train(cfg)
    assert result.status == "completed"
    logged = [json.loads(line) for line in open(Path(result.final_dir).parent / "metrics.jsonl")]
    assert logged[-1]["lr"] == 1e-4 and logged[-1]["adapter_lr"] == 3e-3  # both rates, after the 1-step warm-up


def test_a_run_resumes_with_its_adapter_rate_or_says_why_not(tmp_path, cache_dir):
    from endprompt.checkpoint import CheckpointError

    args = ["recipe.name=longlora", "recipe.target_len=512", "optim.adapter_lr=3e-3", "optim.max_steps=3",
            "run.save_every=1"]
    whole = train(config(tmp_path / "whole", cache_dir, *args))
    assert train(config(tmp_path / "split", cache_dir, *args, "run.stop_after=2")).status == "stopped"
    with pytest.raises(CheckpointError, match=r"written with other settings \(optim.adapter_lr: 0.003 -> None\): "
                                              r"resume with the settings.*run.resume=false"):
        train(config(tmp_path / "split", cache_dir, *args[:2], *args[3:]))  # the same run without adapter_lr
    second = train(config(tmp_path / "split", cache_dir, *args))
    assert second.status == "completed" and second.losses == whole.losses  # two groups resume exactly


def test_a_checkpoint_is_never_continued_with_other_settings(tmp_path, cache_dir):
    """A resumed run must be the run that wrote the checkpoint: a different recipe, learning rate or seed is refused
    before any state is loaded, naming each setting; more steps, places and reporting may change."""
    from endprompt.checkpoint import CheckpointError

    args = ["recipe.name=endprompt", "optim.max_steps=3", "run.save_every=1"]
    assert train(config(tmp_path, cache_dir, *args, "run.stop_after=1")).status == "stopped"
    with pytest.raises(CheckpointError, match=r"step-00000001 was written with other settings \(optim.lr: 0.001 -> "
                                              r"0.002; recipe.a: 204 -> 200; run.seed: 0 -> 1\)"):
        train(config(tmp_path, cache_dir, *args, "recipe.a=200", "optim.lr=2e-3", "run.seed=1"))
    assert json.loads((latest_checkpoint(tmp_path) / "trainer_state.json").read_text())["step"] == 1  # untouched
    state_file = latest_checkpoint(tmp_path) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "world_size": 2}))  # as if written by two processes
    from endprompt.checkpoint import write_manifest

    write_manifest(state_file.parent, 1)
    with pytest.raises(CheckpointError, match=r"other settings \(processes: 2 -> 1\)"):
        train(config(tmp_path, cache_dir, *args))
    state_file.write_text(json.dumps(state))
    write_manifest(state_file.parent, 1)
    more = train(config(tmp_path, cache_dir, *args, "optim.max_steps=4", "run.log_every=2"))
    assert more.status == "completed" and more.steps == 4


def test_divergence_saves_the_batch_and_stops(tmp_path, cache_dir, monkeypatch):
    import endprompt.train as T

    calls = {"n": 0}
    real = T.weighted_cross_entropy

    def nan_on_second_step(logits, labels, weights, chunk=4096):
        calls["n"] += 1
        total, weight = real(logits, labels, weights, chunk)
        return (total * float("nan") if calls["n"] > 1 else total), weight  # micro_batch 2, grad_accum 1: call = step

    monkeypatch.setattr(T, "weighted_cross_entropy", nan_on_second_step)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1") as err:
        train(config(tmp_path, cache_dir, "optim.max_steps=5"))
    dump = err.value.dump_dir
    assert dump.name == "diverged-step-00000001"
    batches = torch.load(dump / "batches-rank0.pt", weights_only=False)
    assert batches[0]["input_ids"].shape[0] == 2
    assert json.loads((dump / "info.json").read_text())["step"] == 1
    assert not (tmp_path / "final").exists()


def test_bad_model_inputs(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="model.path '/no/such/model' is not a directory"):
        train(config(tmp_path, cache_dir, "model.path=/no/such/model", "model.tokenizer=byte",
                     "model.original_len=256"))
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=260)).save_pretrained(gpt2)
    with pytest.raises(ValueError, match="has no RoPE parameters"):
        train(config(tmp_path, cache_dir, f"model.path={gpt2}", "model.tokenizer=byte", "model.original_len=256"))


def test_train_result_carries_the_corpus_s_skipped_lines(tmp_path, cache_dir):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i} " * 200}) + "\n" for i in range(8)) + "{broken\n")
    for run in ("first", "cached"):  # the second run reads the token cache
        result = train(config(tmp_path / run, cache_dir, f"data.source={docs}", "recipe.name=endprompt"))
        saved = json.loads((tmp_path / run / "train_result.json").read_text())
        assert saved["data_stats"]["corpus"] == {"documents": 8, "corrupt_lines": 1} == result.data_stats["corpus"]


def test_every_recipe_of_a_seed_cuts_the_same_shared_mixture(tmp_path, cache_dir):
    from endprompt.train import _Trainer

    mix = ["data.source=mixture:natural=0.2,passkey=0.4,niah=0.3,mqar=0.05,vt=0.05", "data.doc_len_range=[64, 512]",
           "data.mixture_docs=40", "recipe.target_len=512"]
    sources = {name: _Trainer(config(tmp_path / name, cache_dir, f"recipe.name={name}", *mix)).source
               for name in ("endprompt", "full")}
    ep, full = sources["endprompt"], sources["full"]
    np.testing.assert_array_equal(ep.corpus.tokens, full.corpus.tokens)  # the same documents, token for token
    assert ep.concat and full.concat and (ep.length, full.length) == (204, 512)  # cut as natural text is
    assert len(ep) == ep.corpus.num_tokens // 204 and len(full) == full.corpus.num_tokens // 512
    fixed = _Trainer(config(tmp_path / "fixed", cache_dir, *mix[:1], "data.mixture_docs=40", "recipe.target_len=512",
                            "recipe.name=full")).source  # without a range: today's documents of the recipe's length
    assert not fixed.concat and {len(fixed[i]) for i in range(len(fixed))} == {512}
    result = train(config(tmp_path / "run", cache_dir, "recipe.name=endprompt", *mix))
    assert result.status == "completed" and all(np.isfinite(result.losses))

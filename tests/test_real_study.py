"""endprompt.real_study: the GPU preset real-64k's exact code path on CPU, with a tiny random-weight Llama that uses
SmolLM2's tokenizer and the lengths scaled down 8x (256 -> 2048), two steps per method."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from endprompt import modeling as M
from endprompt import rope as R
from endprompt.cli import real_study_report
from endprompt.config import load_config
from endprompt.real_study import REAL_METHODS, REAL_PRESETS, predicted_seconds, run_real_study


@pytest.fixture(scope="module")
def tiny_smollm(tmp_path_factory):
    """SmolLM2's tokenizer and shape family (GQA, theta 1e5, tied embeddings), tiny and random, pretrained at 256."""
    path = tmp_path_factory.mktemp("tiny-smollm")
    tokenizer = AutoTokenizer.from_pretrained(M.resolve_model("smollm2-135m"))
    model = M.build_tiny_llama(vocab_size=len(tokenizer), hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                               rope=R.RopeScaling(rope_theta=100000.0), max_position_embeddings=256,
                               tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_the_gpu_preset_is_the_papers_run():
    cfg = REAL_PRESETS["real-64k"]
    assert (cfg.model, cfg.a, cfg.b, cfg.target_len) == ("smollm2-135m", 8192, 20, 65536)
    assert cfg.eval_lengths == (8192, 16384, 32768, 65536) and set(cfg.methods) == set(REAL_METHODS)
    train = load_config(cfg.train_preset)
    assert train.rope.rope_type == "linear" and train.rope.factor == 8 and train.model.original_len is None
    assert (train.optim.lr, train.optim.schedule, train.optim.warmup_steps) == (2e-5, "constant", 20)
    assert train.run.mixed_precision == "bf16" and train.model.gradient_checkpointing
    seconds = predicted_seconds(cfg)  # the FLOP model's training time on one H200: about 5.5 of the 10 minutes
    assert 200 < sum(seconds.values()) < 420 and seconds["full"] > 4 * seconds["endprompt"]


@pytest.fixture
def fresh_accelerate():
    """The preset trains under bf16 autocast; accelerate keeps one process-wide state, which other tests set up
    without it. Start from a clean state and leave one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_cpu_smoke_of_the_gpu_preset(tiny_smollm, tmp_path, fresh_accelerate):
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(f"Line {i}: the river runs to the sea and the sea is wide." for i in range(1500)))
    cfg = replace(REAL_PRESETS["real-64k"], out_dir=str(tmp_path / "out"), model=str(tiny_smollm), a=256, b=20,
                  target_len=2048, step_tokens=2048, steps=2, eval_lengths=(256, 2048),
                  tasks=("passkey", "niah_single_1"), eval_samples=1, cache_dir=str(tmp_path / "cache"),
                  progress=False, overrides=(f"data.source={text}", "run.log_every=1"))
    results, costs = run_real_study(cfg)
    assert set(results["method"]) == set(REAL_METHODS) and (results["status"] == "ok").all()
    assert set(results["length"]) == {256, 2048} and results["score"].between(0, 100).all()
    assert set(results.loc[results["task"] == "niah_single_1", "protocol"]) == {"chat"}
    trained = costs[costs["method"] != "yarn"]
    assert (trained["steps"] == 2).all() and (trained["tokens_per_s"] > 0).all()
    assert np.isfinite(trained["final_loss"]).all() and (trained["peak_memory_gb"] > 0).all()
    # the same tokens per step for every method (up to rounding and end prompts shorter than b: 7 x <= 276 ~ 1 x 2048)
    per_step = trained.set_index("method")["train_tokens"] / 2
    assert per_step.max() <= 1.2 * per_step.min()
    run = load_config(path=tmp_path / "out" / "runs" / "endprompt" / "config.yaml")
    assert (run.recipe.a, run.recipe.target_len, run.optim.lr) == (256, 2048, 2e-5)
    paths = real_study_report(cfg, results, costs)  # what `endprompt reproduce --preset real-64k` prints and draws
    assert all(p.stat().st_size > 0 for p in paths)
    # finished methods are not run again
    again, _ = run_real_study(cfg)
    pd.testing.assert_frame_equal(again, pd.read_csv(tmp_path / "out" / "results.csv"))

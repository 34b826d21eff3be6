"""endprompt.testbed: the rotary spectrum count, the training-free rotary swaps, one screened candidate end to end."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from endprompt import rope as R
from endprompt.modeling import build_tiny_llama
from endprompt.study_base import StudyBase, base_run_dir
from endprompt.testbed import (
    CRITERIA,
    append_row,
    attempts_markdown,
    criteria_met,
    rescaled_model,
    rotary_turns,
    screen,
    screen_saved,
    spectrum,
)
from tests.tolerances import LOGITS_ATOL, LOGITS_CHANGED, ROPE_RTOL


def test_spectrum_matches_the_issue_reference_points():
    # issue 13: 1 of 16 at L0 = 256 (head_dim 32, theta 1e4); about 5 of 16 at 2048; SmolLM2 at 8K about 10 of 32;
    # Llama-3 at 8K about 18 of 64
    assert spectrum(256, 32, 1e4) == {"pairs": 16, "fast_pairs": 1, "slow_pairs": 9}
    assert spectrum(2048, 32, 1e4)["fast_pairs"] == 5
    assert spectrum(8192, 64, 1e5)["fast_pairs"] in (10, 11)
    assert spectrum(8192, 128, 5e5)["fast_pairs"] in (18, 19)
    j = np.arange(16)
    np.testing.assert_allclose(rotary_turns(1024, 32, 1e4), 1024 * 1e4 ** (-2 * j / 32) / (2 * math.pi))


@pytest.fixture
def base_dir(tmp_path):
    model = build_tiny_llama(hidden_size=32, num_layers=1, num_heads=1, max_position_embeddings=64,
                             rope=R.RopeScaling(rope_theta=5e5))
    model.save_pretrained(tmp_path)
    return tmp_path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_rescaled_model_keeps_the_checkpoint_theta(base_dir):
    ids = torch.randint(0, 256, (1, 64))
    base = _logits(rescaled_model(base_dir, "dynamic", 8, 64), ids)
    from transformers import AutoModelForCausalLM

    original = _logits(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), ids)
    torch.testing.assert_close(base, original, atol=LOGITS_ATOL, rtol=0)  # dynamic NTK changes nothing within L0
    for rope_type, factor in (("linear", 2), ("yarn", 8)):
        model = rescaled_model(base_dir, rope_type, factor, 64)
        params = model.config.rope_parameters
        assert params["rope_theta"] == 5e5 and params["rope_type"] == rope_type and params["factor"] == factor
        expected, _ = R.compute_inv_freq(R.for_extension(rope_type, 64, factor * 64, rope_theta=5e5), 32)
        np.testing.assert_allclose(model.model.rotary_emb.inv_freq.numpy(), expected, rtol=ROPE_RTOL)
        assert (_logits(model, ids) - original).abs().max() > LOGITS_CHANGED


def test_criteria_and_append_row(tmp_path):
    good = {k: v + 1 for k, v in CRITERIA.items()}
    assert criteria_met(good)
    assert not criteria_met({**good, "yarn8_pk_half": 0.0}) and not criteria_met({"pk_L0": 100.0})
    append_row(tmp_path / "a.csv", {"key": "x", "pk_L0": 1.0})
    table = append_row(tmp_path / "a.csv", {"key": "y", "niah_L0": 2.0})
    assert list(table["key"]) == ["x", "y"] and table["niah_L0"].isna().tolist() == [True, False]


def test_screen_one_candidate_end_to_end_and_resume(tmp_path):
    c = StudyBase(L0=256, hidden_size=32, num_layers=1, num_heads=2, vocab_size=0, steps=2, batch=2, warmup=1,
                  docs=4, mixture="mixture:passkey=1", mixed_precision="no")
    row = screen(c, tmp_path / "out", tmp_path / "cache", samples=2, note="smoke", progress=False)
    table = pd.read_csv(tmp_path / "out" / "attempts.csv")
    assert len(table) == 1 and table["key"][0] == c.key and row["train_tokens"] == 2 * 2 * 256
    assert row["fast_pairs"] == spectrum(256, 16, 1e4)["fast_pairs"] and row["params"] > 0
    cells = [f"{p}pk_{w}" for p in ("", "dyn_", "pi2_", "pi8_", "yarn8_") for w in ("half", "L0")] + ["niah_L0"]
    assert all(0 <= row[k] <= 100 for k in cells), {k: row.get(k) for k in cells}
    assert (tmp_path / "out" / "logs" / f"{c.key}.jsonl").exists()
    evals = pd.read_csv(tmp_path / "out" / "evals" / f"{c.key}.csv")
    assert set(evals["rescaling"]) == {"base", "dyn", "pi2", "pi8", "yarn8"} and (evals["n"][evals["status"] == "ok"]
                                                                                  > 0).all()
    again = screen(c, tmp_path / "out", tmp_path / "cache", samples=2, progress=False)
    assert len(pd.read_csv(tmp_path / "out" / "attempts.csv")) == 1 and again["key"] == c.key
    saved = screen_saved(base_run_dir(c, tmp_path / "cache") / "final", 256, tmp_path / "out", samples=1)
    assert saved["key"] == "saved-final" and saved["vocab_size"] == 0 and saved["rope_theta"] == c.rope_theta
    assert saved["num_layers"] == 1 and saved["head_dim"] == 16 and 0 <= saved["yarn8_pk_half"] <= 100
    markdown = attempts_markdown(pd.read_csv(tmp_path / "out" / "attempts.csv"))
    assert markdown.count("\n") == 3 and markdown.splitlines()[-1].startswith("| 2 | 256 | 1 x 32, 16 | 10000 | byte")

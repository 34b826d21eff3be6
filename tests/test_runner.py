"""endprompt.evaluate.runner: oracle and constant models, RULER's rounding, the tidy table end to end, the CLI,
lm-eval."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from endprompt import modeling as M
from endprompt import plotting
from endprompt import rope as R
from endprompt.evaluate import evaluate, save_results, summarize
from endprompt.evaluate.ruler import RULER_TASKS
from tests.oracle import TOK, Constant, Fake, read_answer


@pytest.mark.parametrize("style", ["ruler", "compact"])
def test_oracle_scores_100_and_constant_scores_0(style):
    lengths = [1024, 4096] if style == "ruler" else [256, 1024]
    tasks = [t for t in RULER_TASKS if not t.startswith("qa")]
    for suite, kw in (("ruler", {"tasks": tasks}), ("passkey", {}), ("needle", {"depths": (0.0, 0.5, 1.0)}),
                      ("mqar", {})):
        oracle = evaluate(Fake(read_answer), TOK, suite, lengths, num_samples=3, style=style, progress=False, **kw)
        ran = oracle[(oracle["status"] == "ok") & (oracle["metric"] != "k_max")]
        assert len(ran) > 0 and (ran["score"] == 100).all(), ran[ran["score"] < 100]
        const = evaluate(Constant(), TOK, suite, lengths, num_samples=3, style=style, progress=False, **kw)
        ran = const[(const["status"] == "ok") & (const["metric"] != "k_max")]
        assert ran["score"].max() <= 10, ran
    assert oracle.columns.tolist() == ["model", "suite", "task", "length", "metric", "score", "n", "status", "reason",
                                       "depth"]


def test_ruler_task_scores_are_rounded_as_ruler():
    calls = []

    def first_right(prompt):  # right on the first of three prompts: 100 / 3 = 33.333...
        calls.append(prompt)
        return read_answer(prompt) if len(calls) == 1 else "0"

    table = evaluate(Fake(first_right), TOK, "synthetic", [256], num_samples=3, style="compact",
                     tasks=["niah_single_1"], progress=False)
    assert table.loc[0, "score"] == 33.33


def test_passkey_k_max_row():
    table = evaluate(Fake(read_answer), TOK, "passkey", [256, 512, 1024], num_samples=2, progress=False)
    row = table[table["metric"] == "k_max"].iloc[0]
    assert row["score"] == 1024 and row["length"] == 1024


def test_end_to_end_tiny_model_table_and_figures(tmp_path):
    model = M.build_tiny_llama(rope=R.for_extension("linear", 256, 2048, rope_theta=1e4), max_position_embeddings=2048)
    docs = [np.random.default_rng(i).integers(0, 256, 1200) for i in range(2)]
    frames = [evaluate(model, TOK, suite, [256, 512], num_samples=1, style="compact", progress=False,
                       model_name=name, ppl_docs=docs, **({"tasks": ["niah_single_1", "vt"]} if suite == "synthetic"
                                                           else {}))
              for suite in ("synthetic", "passkey", "needle", "perplexity", "mqar") for name in ["a"]]
    table = pd.concat(frames, ignore_index=True)
    assert set(table["status"]) <= {"ok", "not_run"} and table["score"][table["status"] == "ok"].notna().all()
    assert {"passkey", "needle", "perplexity", "mqar", "niah_single_1", "vt"} <= set(table["task"])
    csv, js = save_results(table, tmp_path)
    assert pd.read_csv(csv).shape[0] == len(table) and len(json.loads(js.read_text())) == len(table)
    summary = summarize(table)
    assert summary["length"].tolist() == [256, 512, "mean"]
    for name, fig in [("score", plotting.plot_score_by_length(table, train_len=256)),
                      ("needle", plotting.plot_needle_heatmap(table)), ("ppl", plotting.plot_perplexity(table)),
                      ("bars", plotting.plot_task_bars(table, 256))]:
        assert plotting.save(fig, name, tmp_path).stat().st_size > 1000


def test_cli_eval_on_a_saved_model(tmp_path):
    model = M.build_tiny_llama(rope=R.for_extension("linear", 256, 2048, rope_theta=1e4), max_position_embeddings=2048)
    model.save_pretrained(tmp_path / "m")
    TOK.save_pretrained(tmp_path / "m")
    out = subprocess.run([sys.executable, "-m", "endprompt.cli", "eval", "--model", str(tmp_path / "m"), "--suite",
                          "synthetic", "--tasks", "niah_single_1,qa_1", "--lengths", "256", "--num-samples", "1",
                          "--style", "compact", "--out", str(tmp_path / "res")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "res" / "eval.csv").exists() and (tmp_path / "res" / "eval_score_by_length.png").exists()
    assert "not run: qa_1: qa_1 needs a local SQuAD" in out.stdout


LM_EVAL_TASK = """task: endprompt_local_copy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_runs_a_local_json_task_on_an_in_memory_model_and_a_path(tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval is in the dev extra")  # installed with .[dev]: this runs
    from endprompt.evaluate import run_lm_eval

    docs = [{"text": f"{w} {w} {w} {w}", "choices": [" zzzz", f" {w}"], "label": 1} for w in ("abab", "cdcd", "efef")]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local.yaml").write_text(LM_EVAL_TASK.format(data=tmp_path / "docs.jsonl"))
    model = M.build_tiny_llama(vocab_size=len(TOK), hidden_size=32, num_heads=2, num_layers=1,
                               rope=R.RopeScaling(), max_position_embeddings=64)
    kw = {"include_path": tmp_path / "tasks", "include_defaults": False, "model_args": {"batch_size": 2,
                                                                                        "max_length": 64}}
    out = run_lm_eval(model, ["endprompt_local_copy"], tokenizer=TOK, **kw)
    acc = out["results"]["endprompt_local_copy"]["acc,none"]
    assert 0.0 <= acc <= 1.0 and out["n-samples"]["endprompt_local_copy"]["effective"] == 3
    model.save_pretrained(tmp_path / "m")
    TOK.save_pretrained(tmp_path / "m")
    again = run_lm_eval(tmp_path / "m", ["endprompt_local_copy"], **kw | {"model_args": "batch_size=2,max_length=64"})
    assert again["results"]["endprompt_local_copy"]["acc,none"] == acc  # the same model, from disk
    with pytest.raises(ValueError, match="needs its tokenizer"):
        run_lm_eval(model, ["endprompt_local_copy"], include_path=tmp_path / "tasks", include_defaults=False)


def test_cli_rejects_bad_lengths_before_loading_a_model(tmp_path, capsys):
    from endprompt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--model", str(tmp_path / "no-such-model"), "--lengths", "256,abc"])
    assert exit_info.value.code == 2
    assert "argument --lengths: 'abc' in '256,abc' is not a positive integer" in capsys.readouterr().err

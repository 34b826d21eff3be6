"""endprompt.evaluate: generators (seeded, fitted), RULER scoring, k_max, oracle and constant models, end to end."""

import json
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from endprompt import modeling as M
from endprompt import plotting
from endprompt import rope as R
from endprompt.evaluate import evaluate, retrieval, save_results, summarize
from endprompt.evaluate import perplexity as PPL
from endprompt.evaluate.ruler import RULER_TASKS, TaskUnavailable, make_samples
from endprompt.evaluate.scoring import digit_accuracy, k_max, postprocess, string_match_all, string_match_part
from endprompt.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
FITTING_TASKS = [t for t in RULER_TASKS if not t.startswith("qa") and t != "cwe"]


# --- generators -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", FITTING_TASKS)
@pytest.mark.parametrize("length", [2048, 8192])
def test_generators_are_seeded_and_fit_the_length(task, length):
    a = make_samples(task, length, TOK, num_samples=3, seed=5)
    b = make_samples(task, length, TOK, num_samples=3, seed=5)
    c = make_samples(task, length, TOK, num_samples=3, seed=6)
    assert [s.prompt for s in a] == [s.prompt for s in b] and [s.answers for s in a] == [s.answers for s in b]
    assert [s.prompt for s in a] != [s.prompt for s in c]
    for s in a:
        total = len(TOK(s.prompt, add_special_tokens=False).input_ids) + s.max_new_tokens
        assert total == s.prompt_tokens + s.max_new_tokens
        # prompt + generation budget never exceeds the length, and falls short by at most one haystack unit
        assert length - max(128, 0.03 * length) <= total <= length, (task, total)
        if task not in ("fwe", "vt"):
            assert all(ans in s.prompt for ans in s.answers)


def test_cwe_fits_long_lengths_and_reports_short_ones():
    s = make_samples("cwe", 16384, TOK, num_samples=1)[0]
    assert s.prompt_tokens + s.max_new_tokens <= 16384 and len(s.answers) == 10
    assert sorted(read_answer(s.prompt).split(", ")) == sorted(s.answers)  # the ten words that repeat most
    oracle = evaluate(_Fake(read_answer), TOK, "ruler", [16384], num_samples=2, tasks=["cwe"], progress=False)
    assert oracle.loc[0, "score"] == 100
    const = evaluate(_Constant(), TOK, "ruler", [16384], num_samples=2, tasks=["cwe"], progress=False)
    assert const.loc[0, "score"] == 0
    table = evaluate(_Constant(), TOK, "ruler", [1024], num_samples=1, tasks=["cwe"], progress=False)
    assert table.loc[0, "status"] == "not_run" and "without haystack" in table.loc[0, "reason"]


def test_qa_runs_on_local_files_and_is_not_run_without(tmp_path):
    squad = {"data": [{"paragraphs": [
        {"context": f"Paragraph {i}: the capital of country {i} is city {i}.",
         "qas": [{"question": f"What is the capital of country {i}?", "answers": [{"text": f"city {i}"}],
                  "is_impossible": False}]} for i in range(30)]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    samples = make_samples("qa_1", 1024, TOK, num_samples=3, squad_path=str(path))
    for s in samples:
        assert s.metric == "part" and s.answers[0] in s.prompt and s.prompt.endswith("Answer:")
    with pytest.raises(TaskUnavailable, match="needs a local SQuAD v2 dev JSON file"):
        make_samples("qa_1", 1024, TOK)
    table = evaluate(_Constant(), TOK, "ruler", [1024], num_samples=1, tasks=["qa_2"], progress=False)
    assert table.loc[0, "status"] == "not_run" and "HotpotQA" in table.loc[0, "reason"]


# --- scoring ----------------------------------------------------------------------------------------------------------


def test_scorers_follow_ruler():
    assert postprocess("  7459179\x00more \n") == "7459179\nmore"
    assert string_match_all("The numbers are 11, 22 and 44.", ["11", "22", "33", "44"]) == 0.75
    assert string_match_all("ANSWER: Paris", ["paris"]) == 1.0  # case-insensitive
    assert string_match_part("It is Lyon, I think", ["Paris", "lyon"]) == 1.0  # QA: any reference counts
    assert string_match_part("Marseille", ["Paris", "Lyon"]) == 0.0
    with pytest.raises(ValueError, match="no reference answers"):
        string_match_all("x", [])


def test_digit_accuracy_counts_places():
    assert digit_accuracy(" 12345. The", "12345") == 1.0
    assert digit_accuracy("12335", "12345") == 0.8  # one slipped digit
    assert digit_accuracy("2345", "12345") == 0.0  # place by place: a dropped first digit shifts every place
    assert digit_accuracy("key 123", "12345") == 0.6  # a short guess scores its places only
    assert digit_accuracy("no number", "12345") == 0.0
    with pytest.raises(ValueError, match="needs a number as reference, got 'abc'"):
        digit_accuracy("1", "abc")


def test_k_max_on_constructed_tables():
    assert k_max({1000: 1.0, 2000: 0.6, 4000: 0.2, 8000: 0.1, 16000: 0.9}) == 4000  # stops at the first failure
    assert k_max({1000: 0.1, 2000: 1.0}) == 0
    assert k_max(pd.Series({512: 0.5, 256: 1.0})) == 512  # sorted by distance
    assert k_max({100: 0.25, 200: 0.25}, threshold=0.3) == 0


# --- oracle and constant models ---------------------------------------------------------------------------------------


def read_answer(prompt: str) -> str:
    """Answers each task by reading its prompt, as a perfect model would."""
    if "pass key is" in prompt:
        return re.findall(r"The pass key is (\d+)\.", prompt)[-1]
    if "VAR " in prompt:
        value = re.findall(r"value (\d+)", prompt)[-1]  # the question's value (a solved example may come first)
        found, frontier = [], {value}
        assignments = re.findall(r"VAR (\w+) = (VAR (\w+)|\d+)", prompt)
        while frontier:
            new = {name for name, rhs, src in assignments if (src or rhs) in frontier and name not in found}
            found += sorted(new)
            frontier = new
        return " ".join(found)
    if "numbered list" in prompt:
        listing = prompt.split("Memorize the ones that appear most often.\n")[-1].split("\nQuestion")[0]
        counts = Counter(re.findall(r"\d+\. (\w+)", listing))
        return ", ".join(w for w, _ in counts.most_common(10))
    if "coded text" in prompt:
        context = prompt.split("coded words. ")[-1].split("\nQuestion")[0]
        counts = Counter(w for w in context.split() if w != "...")
        return ", ".join(w for w, _ in counts.most_common(3))
    question = prompt[prompt.rfind("\n") :]
    keys = re.findall(r"for (.+?)(?: mentioned|\?)", question)[0]
    keys = re.split(r", and |, ", keys)
    values = [v for key in keys for v in re.findall(rf"for {re.escape(key)} is:? ([\w-]+)\.", prompt)]
    return ", ".join(values)


class _Fake(torch.nn.Module):
    """A "model" with ``generate`` (continuation from a function of the prompt) and a forward for MQAR."""

    def __init__(self, answer):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.answer = answer

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            text = " " + self.answer(TOK.decode(ids[mask.bool()]))
            new = TOK(text, add_special_tokens=False).input_ids[:max_new_tokens]
            new += [TOK.pad_token_id] * (max_new_tokens - len(new))
            rows.append(torch.cat([ids, torch.tensor(new)]))
        return torch.stack(rows)

    def forward(self, input_ids, **kwargs):  # teacher-forced oracle: the logits point at the actual next token
        logits = torch.zeros(*input_ids.shape, len(TOK))
        logits[0, :-1] = torch.nn.functional.one_hot(input_ids[0, 1:], len(TOK)).float()
        return type("Out", (), {"logits": logits})()


class _Constant(_Fake):
    def __init__(self):
        super().__init__(lambda prompt: "0")

    def forward(self, input_ids, **kwargs):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, len(TOK))})()


@pytest.mark.parametrize("style", ["ruler", "compact"])
def test_oracle_scores_100_and_constant_scores_0(style):
    lengths = [1024, 4096] if style == "ruler" else [256, 1024]
    tasks = [t for t in RULER_TASKS if not t.startswith("qa")]
    for suite, kw in (("ruler", {"tasks": tasks}), ("passkey", {}), ("needle", {"depths": (0.0, 0.5, 1.0)}),
                      ("mqar", {})):
        oracle = evaluate(_Fake(read_answer), TOK, suite, lengths, num_samples=3, style=style, progress=False, **kw)
        ran = oracle[(oracle["status"] == "ok") & (oracle["metric"] != "k_max")]
        assert len(ran) > 0 and (ran["score"] == 100).all(), ran[ran["score"] < 100]
        const = evaluate(_Constant(), TOK, suite, lengths, num_samples=3, style=style, progress=False, **kw)
        ran = const[(const["status"] == "ok") & (const["metric"] != "k_max")]
        assert ran["score"].max() <= 10, ran
    assert oracle.columns.tolist() == ["model", "suite", "task", "length", "metric", "score", "n", "status", "reason",
                                       "depth"]


def test_passkey_k_max_row():
    table = evaluate(_Fake(read_answer), TOK, "passkey", [256, 512, 1024], num_samples=2, progress=False)
    row = table[table["metric"] == "k_max"].iloc[0]
    assert row["score"] == 1024 and row["length"] == 1024


# --- perplexity -------------------------------------------------------------------------------------------------------


def test_perplexity_forms_against_direct_computation():
    model = M.build_tiny_llama(vocab_size=64, hidden_size=32, num_heads=2, max_position_embeddings=512)
    doc = np.random.default_rng(0).integers(0, 64, 300)
    ppl, n = PPL.truncated_perplexity(model, [doc, doc[:10]], 100)
    with torch.no_grad():
        logits = model(torch.as_tensor(doc[:100])[None]).logits[0]
    direct = torch.nn.functional.cross_entropy(logits[:-1], torch.as_tensor(doc[1:100])).exp().item()
    assert n == 99 and ppl == pytest.approx(direct, rel=1e-5)
    ppl, n = PPL.sliding_perplexity(model, [doc], 100, stride=50)
    assert n == 299  # every token after the first is scored exactly once
    with pytest.raises(ValueError, match="no document has 1000 tokens"):
        PPL.truncated_perplexity(model, [doc], 1000)


# --- end to end -------------------------------------------------------------------------------------------------------


def test_end_to_end_tiny_model_table_and_figures(tmp_path):
    model = M.build_tiny_llama(rope=R.for_extension("linear", 256, 2048), max_position_embeddings=2048)
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
    model = M.build_tiny_llama(rope=R.for_extension("linear", 256, 2048), max_position_embeddings=2048)
    model.save_pretrained(tmp_path / "m")
    TOK.save_pretrained(tmp_path / "m")
    out = subprocess.run([sys.executable, "-m", "endprompt.cli", "eval", "--model", str(tmp_path / "m"), "--suite",
                          "synthetic", "--tasks", "niah_single_1,qa_1", "--lengths", "256", "--num-samples", "1",
                          "--style", "compact", "--out", str(tmp_path / "res")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "res" / "eval.csv").exists() and (tmp_path / "res" / "eval_score_by_length.png").exists()
    assert "not run: qa_1: qa_1 needs a local SQuAD" in out.stdout


def test_lm_eval_hook_says_what_is_missing():
    from endprompt.evaluate import run_lm_eval

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="lm-eval is not installed"):
            run_lm_eval("/models/x", ["hellaswag"])
    else:
        pytest.skip("lm-eval is installed here; the hook would try to run it")


def test_mqar_example_spans_point_at_values():
    text, spans = retrieval.mqar_example(6, np.random.default_rng(0))
    pairs = dict(re.findall(r"(\w\w) (\d+)", text.split("|")[0]))
    for (lo, hi), query in zip(spans, re.findall(r" (\w\w) (?=\d)", text.split("|")[1])):
        assert text[lo:hi] == pairs[query]

"""endprompt.evaluate.ruler: RULER's generators (seeded, fitted to the length, RULER's details) and `fit_units`."""

import json
import re

import pytest

from endprompt.evaluate import evaluate, ruler
from endprompt.evaluate.ruler import RULER_TASKS, TaskUnavailable, make_samples
from endprompt.tasks.text import NOISE, words
from tests.oracle import TOK, Constant, Fake, read_answer

FITTING_TASKS = [t for t in RULER_TASKS if not t.startswith("qa") and t != "cwe"]


@pytest.mark.parametrize("task", FITTING_TASKS)
@pytest.mark.parametrize("length", [2048, 8192])
def test_generators_are_seeded_and_fit_the_length(task, length):
    a = make_samples(task, length, TOK, num_samples=3, seed=5)
    b = make_samples(task, length, TOK, num_samples=3, seed=5)
    c = make_samples(task, length, TOK, num_samples=3, seed=6)
    assert [s.prompt for s in a] == [s.prompt for s in b] and [s.answers for s in a] == [s.answers for s in b]
    assert [s.prompt for s in a] != [s.prompt for s in c]
    for s in a:
        assert s.prompt_tokens == len(s.prompt.encode("utf-8"))  # the byte tokenizer: one token per byte
        total = s.prompt_tokens + s.max_new_tokens
        # prompt + generation budget never exceeds the length, and falls short by at most one haystack unit
        assert length - max(128, 0.03 * length) <= total <= length, (task, total)
        if task not in ("fwe", "vt"):
            assert all(ans in s.prompt for ans in s.answers)


# --- vt -----------------------------------------------------------------------------------------------------------


def test_vt_follows_ruler():
    s = make_samples("vt", 2048, TOK, num_samples=1)[0]
    example, main = s.prompt.split("\n\nMemorize and track", 1)
    # the answer prefix with RULER's current spelling (fixed in May 2025)
    assert "5 variables are assigned the value" in main and "assgined" not in s.prompt
    # noise and statements one per line, as RULER joins them; hops keep RULER's trailing space
    assert "again. The grass" not in s.prompt and f"{NOISE}\n{NOISE}" in main
    assert re.search(r"\nVAR [A-Z]{5} = VAR [A-Z]{5} \n", main)
    # the one-shot example: 3-letter names, fitted to 500 tokens (its answer not counted), answered
    names = re.findall(r"VAR ([A-Z]+) =", example)
    assert len(names) == 5 and all(len(n) == 3 for n in names)
    question, answer = example.rsplit("they are: ", 1)
    assert len(question.encode()) + len("they are: ") <= 500 and answer.split() == names
    assert len(s.answers) == 5 and all(len(n) == 5 for n in s.answers)


# --- cwe ----------------------------------------------------------------------------------------------------------


def test_cwe_fits_long_lengths_and_reports_short_ones():
    s = make_samples("cwe", 16384, TOK, num_samples=1)[0]
    assert s.prompt_tokens + s.max_new_tokens <= 16384 and len(s.answers) == 10
    assert sorted(read_answer(s.prompt).split(", ")) == sorted(s.answers)  # the ten words that repeat most
    oracle = evaluate(Fake(read_answer), TOK, "ruler", [16384], num_samples=2, tasks=["cwe"], progress=False)
    assert oracle.loc[0, "score"] == 100
    const = evaluate(Constant(), TOK, "ruler", [16384], num_samples=2, tasks=["cwe"], progress=False)
    assert const.loc[0, "score"] == 0
    table = evaluate(Constant(), TOK, "ruler", [1024], num_samples=1, tasks=["cwe"], progress=False)
    assert table.loc[0, "status"] == "not_run" and "without haystack" in table.loc[0, "reason"]


def test_cwe_fills_64k_past_the_shipped_word_list():
    s = make_samples("cwe", 65536, TOK, num_samples=1)[0]
    assert 0.97 * 65536 <= s.prompt_tokens + s.max_new_tokens <= 65536
    listing = s.prompt.split("Memorize the ones that appear most often.\n")[-1].split("\nQuestion")[0]
    distinct = set(re.findall(r"\d+\. (\w+)", listing))
    assert len(distinct) > len(words())  # the larger list took over, as RULER's does
    assert sorted(read_answer(s.prompt).split(", ")) == sorted(s.answers)


# --- fwe ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [2048, 8192])
def test_fwe_vocabulary_size_as_ruler(length):
    s = make_samples("fwe", length, TOK, num_samples=1)[0]
    context = s.prompt.split("coded words. ")[-1].split("\nQuestion")[0]
    vocab = (length - 50) // 50  # RULER's size; "..." is its most frequent word
    assert len(set(context.split()) - {"..."}) <= vocab - 1
    n = int(2 * 1.645 * vocab**2)  # Zipf (alpha 2) counts n k^-2 / zeta(2): enough for the rarest word to appear
    prompt, answers, _ = ruler._fwe(n, [0], length, 50)
    assert len(set(prompt.split("coded words. ")[-1].split("\nQuestion")[0].split()) - {"..."}) == vocab - 1


# --- qa -----------------------------------------------------------------------------------------------------------


def squad_file(tmp_path, articles=20, paragraphs=4):
    data = {"data": [{"title": f"a{a}", "paragraphs": [
        {"context": f"Article {a} paragraph {p}: the capital of country {a}-{p} is city {a}-{p}.",
         "qas": [{"question": f"What is the capital of country {a}-{p}?", "answers": [{"text": f"city {a}-{p}"}],
                  "is_impossible": False}]} for p in range(paragraphs)]} for a in range(articles)]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_qa_runs_on_local_files_and_is_not_run_without(tmp_path):
    samples = make_samples("qa_1", 1024, TOK, num_samples=3, squad_path=squad_file(tmp_path))
    for s in samples:
        assert s.metric == "part" and s.answers[0] in s.prompt and s.prompt.endswith("Answer:")
    with pytest.raises(TaskUnavailable, match="needs a local SQuAD v2 dev JSON file"):
        make_samples("qa_1", 1024, TOK)
    table = evaluate(Constant(), TOK, "ruler", [1024], num_samples=1, tasks=["qa_2"], progress=False)
    assert table.loc[0, "status"] == "not_run" and "HotpotQA" in table.loc[0, "reason"]


def test_qa_distractors_come_from_the_gold_article_first(tmp_path):
    qa_data = ruler._read_qa(squad_file(tmp_path), "squad")
    same = 0
    for seed in range(20):
        prompt, answers, _ = ruler._qa(3, [seed], qa_data)
        article = re.search(r"city (\d+)-", answers[0]).group(1)
        docs = re.findall(r"Document \d+:\nArticle (\d+) paragraph", prompt)
        assert len(docs) == 4
        same += docs.count(article) - 1
    assert same == 20 * 3  # all three distractors are the gold paragraph's article mates (random draws: ~0.5)
    prompt, _, _ = ruler._qa(10, [0], qa_data)  # more than the article holds: its 3 mates, then others
    assert len(re.findall(r"Document \d+:", prompt)) == 11
    prompt, _, _ = ruler._qa(200, [0], qa_data)  # more than exist: all 80 repeated, as RULER does
    assert len(re.findall(r"Document \d+:", prompt)) == 201


def test_qa_fills_long_lengths_by_repeating_documents(tmp_path):
    s = make_samples("qa_1", 16384, TOK, num_samples=1, squad_path=squad_file(tmp_path))[0]
    assert 0.97 * 16384 <= s.prompt_tokens + s.max_new_tokens <= 16384


def test_a_short_essay_is_repeated_to_fill_the_length(tmp_path):
    essay = tmp_path / "essay.txt"
    essay.write_text("The first sentence is here. A second one follows it. And a third closes the text.")
    s = make_samples("niah_single_2", 1024, TOK, num_samples=1, essay_path=str(essay))[0]
    assert 0.97 * 1024 <= s.prompt_tokens + s.max_new_tokens <= 1024 and s.answers[0] in s.prompt

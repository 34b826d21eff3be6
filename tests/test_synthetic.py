"""endprompt.tasks.synthetic: the generators shared by the training mixture and the evaluation suite."""

import re

import numpy as np
import pytest

from endprompt.tasks import NIAH, NOISE, TaskDoesNotFit, fit_units, mqar_example, niah, passkey, vt


def test_fit_units_raises_when_the_haystack_stops_growing():
    count = lambda text: len(text)
    assert fit_units(lambda n: "x" * n, count, 1000) == 1000
    with pytest.raises(TaskDoesNotFit, match="stops growing at 50 tokens"):
        fit_units(lambda n: "x" * min(n, 50), count, 1000)
    with pytest.raises(TaskDoesNotFit, match="without haystack is 5 tokens"):
        fit_units(lambda n: "x" * (n + 5), count, 4)


def test_vt_statements_go_before_distinct_noise_lines():
    for seed in range(20):
        prompt, names, _ = vt(8, [seed], "ruler")
        lines = prompt.split("\n\n", 1)[1].split("\nQuestion")[0].split("\n")
        assert len(lines) == 13 and lines[-1] == NOISE  # never after the last noise line
        assert not any(a.startswith("VAR") and b.startswith("VAR") for a, b in zip(lines, lines[1:]))


def test_mqar_example_spans_point_at_values():
    text, spans = mqar_example(6, np.random.default_rng(0))
    pairs = dict(re.findall(r"(\w\w) (\d+)", text.split("|")[0]))
    for (lo, hi), query in zip(spans, re.findall(r" (\w\w) (?=\d)", text.split("|")[1])):
        assert text[lo:hi] == pairs[query]


@pytest.mark.parametrize("task", sorted(NIAH))
def test_niah_grows_by_appending_and_holds_its_answers(task):
    short, answers, _ = niah(task, 4, [1], "compact")
    longer, answers_again, _ = niah(task, 40, [1], "compact")
    assert answers == answers_again and all(a in short and a in longer for a in answers)
    assert len(longer) > len(short)


def test_passkey_prompt_places_the_needle_by_depth():
    assert passkey(4, "12345", 0.0, "compact").startswith("The pass key is 12345.")
    assert passkey(4, "12345", 1.0, "compact").count(NOISE) == 4

"""endprompt.mixture_coverage: the examples a recipe's samples hold whole, found through stream indices and checked
against the real samples' text; the study's recipes on one shared mixture (full-length sees long distances, EndPrompt
whole short examples); a cut that separates a key from its question."""

import numpy as np
import pytest

from endprompt.data import SampleSource
from endprompt.mixture import MixtureCorpus, build_shared_mixture
from endprompt.mixture_coverage import coverage, sample_examples
from endprompt.recipe import DEFAULT_CUES, Recipe, build_sample, sample_len, tokenize_cues
from endprompt.tokenizer import byte_tokenizer

TOK = byte_tokenizer()
L0, TARGET = 256, 2048
STUDY_MIX = "mixture:natural=0.2,passkey=0.4,niah=0.3,mqar=0.05,vt=0.05"
# the study's arms (endprompt.study.extension_config): cue recipes a = L0 - 52, tail recipes b = 20
RECIPES = {"endprompt": Recipe("endprompt", a=L0 - 52, b=52, target_len=TARGET),
           "pose": Recipe("pose", a=L0 - 20, b=20, target_len=TARGET),
           "full": Recipe("full", a=L0 - 20, b=20, target_len=TARGET)}
CUES = tokenize_cues(DEFAULT_CUES, TOK, 52)


@pytest.fixture(scope="module")
def shared(study_workdir):
    return build_shared_mixture(STUDY_MIX, TOK, (L0 // 4, 8 * L0), 400, 0, str(study_workdir / "cache"),
                                progress=False)


@pytest.mark.parametrize("name", list(RECIPES))
def test_whole_examples_are_in_the_real_samples(shared, name):
    recipe = RECIPES[name]
    table, totals = sample_examples(shared, recipe, concat=True, cue_ids=CUES, seed=5)
    source = SampleSource(shared, sample_len(recipe), concat=True)
    assert totals["samples"] == len(source) and len(table)
    for i, group in list(table.groupby("sample"))[:40]:
        sample = build_sample(source[i], recipe, [5, i], CUES)  # the same rng: the sample training would cut
        text = TOK.decode(sample.input_ids)
        for e in group["example"]:
            _, key, key_end, question, end = shared.examples[e]
            assert TOK.decode(shared.tokens[key:key_end]) in text and TOK.decode(shared.tokens[question:end]) in text


def test_full_length_sees_long_distances_and_endprompt_whole_short_examples(shared):
    full, _ = sample_examples(shared, RECIPES["full"], concat=True)
    ep, _ = sample_examples(shared, RECIPES["endprompt"], concat=True, cue_ids=CUES)
    assert (full["distance"] > 2 * L0).sum() >= 5 and (full["distance"] == full["text_distance"]).all()
    assert (ep["distance"] < L0 // 4).sum() >= 50  # whole short examples inside the 204-token body
    assert ep["distance"].max() < RECIPES["endprompt"].a  # a body of a tokens holds nothing longer
    whole_full, whole_ep = coverage(shared, RECIPES["full"], True), coverage(shared, RECIPES["endprompt"], True, CUES)
    assert whole_full["whole_share"] > whole_ep["whole_share"]  # longer windows separate fewer keys from questions


def test_a_cut_separates_a_key_from_its_question():
    # 3 documents of 10 tokens; examples (doc, key, key_end, question, end) in stream indices
    examples = np.array([[0, 1, 3, 5, 8], [1, 10, 12, 16, 19], [2, 22, 24, 25, 27]])
    corpus = MixtureCorpus(np.zeros(30, dtype=np.uint32), np.array([0, 10, 20, 30]), {}, examples,
                           np.array(["passkey"] * 3))
    full = Recipe("full", a=4, b=4, target_len=64, window=12)  # windows [0, 12), [12, 24): example 1 is cut
    table, totals = sample_examples(corpus, full, concat=True)
    assert table["example"].tolist() == [0] and totals == {"samples": 2, "tokens": 24, "full": 2}
    assert coverage(corpus, full, True)["whole_share"] == pytest.approx(1 / 3)
    whole, _ = sample_examples(corpus, full, concat=False)  # whole documents: nothing is cut, all three are held
    assert whole["example"].tolist() == [0, 1, 2] and whole["distance"].tolist() == [4, 6, 3]

"""endprompt.evaluate.retrieval: passkey prompts, the needle grid, MQAR examples."""


import pytest

from endprompt.evaluate import retrieval
from tests.oracle import TOK


@pytest.mark.parametrize("style", ["ruler", "compact"])
def test_passkey_and_needle_prompts_fit_and_hold_their_answer(style):
    for s in retrieval.passkey_samples(1024, TOK, num_samples=3, style=style):
        assert s.prompt_tokens == len(s.prompt.encode()) and s.prompt_tokens + s.max_new_tokens <= 1024
        assert f"The pass key is {s.answers[0]}." in s.prompt and s.prompt.endswith("The pass key is")
    for depth in (0.0, 1.0):
        for s in retrieval.needle_grid_samples(1024, depth, TOK, num_samples=2, style=style):
            assert s.prompt_tokens + s.max_new_tokens <= 1024 and s.answers[0] in s.prompt

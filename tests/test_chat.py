"""endprompt.evaluate.chat: every generated prompt splits into RULER's task template and answer prefix."""

import pytest

from endprompt.evaluate import retrieval
from endprompt.evaluate.chat import ChatTemplate, split_answer_prefix
from endprompt.evaluate.ruler import RULER_TASKS, make_samples
from tests.conftest import make_tokenizer

TOK = make_tokenizer()


@pytest.mark.parametrize("style", ["ruler", "compact"])
def test_every_prompt_splits_into_task_and_answer_prefix(style):
    prompts = [s.prompt for task in RULER_TASKS if not task.startswith("qa")
               for s in make_samples(task, 700, TOK, num_samples=1, style=style)]
    prompts += [retrieval.passkey_samples(700, TOK, 1, style=style)[0].prompt,
                retrieval.needle_grid_samples(700, 0.5, TOK, 1, style=style)[0].prompt]
    for prompt in prompts:
        task, prefix = split_answer_prefix(prompt)
        assert task + prefix == prompt and task.rstrip().endswith(("?", ".")) and 0 < len(prefix) < 200, prefix
        assert prefix.lstrip().startswith(("Answer:", "The ")), prefix


def test_split_names_what_is_missing():
    assert split_answer_prefix("Context.\nWhat is it? It is") == ("Context.\nWhat is it?", " It is")
    assert split_answer_prefix("Q: say it. Answer: ok") == ("Q: say it.", " Answer: ok")
    with pytest.raises(ValueError, match="cannot find the answer prefix"):
        split_answer_prefix("no question here")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        ChatTemplate(TOK)

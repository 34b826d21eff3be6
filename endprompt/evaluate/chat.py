"""RULER's model template for chat models: the task as the user's turn, the answer prefix opening the reply.

RULER (Hsieh et al. 2024, Table 6) splits an input into a *model template* (the chat format) and a *task template*
(instruction, context, question) followed by the task's *answer prefix*; for chat models the task template is the
user's message and the answer prefix opens the assistant's reply. An instruct model prompted this way answers and then
ends its turn (SmolLM2: ``<|im_end|>``), so generation can stop there instead of filling the whole budget.

Every endprompt prompt (RULER tasks in both styles, passkey, needle grid) ends with a question line whose answer
prefix follows either `` Answer:`` or the question mark; `split_answer_prefix` cuts it there. The prompt's length in
tokens is counted *with* the template (as RULER counts it), through `ChatTemplate.counting`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["split_answer_prefix", "ChatTemplate"]

_MARKERS = (" Answer:", "?")


def split_answer_prefix(prompt: str) -> tuple[str, str]:
    """``(task, answer_prefix)`` with ``task + answer_prefix == prompt``: the prefix starts at the last `` Answer:``
    of the last line, or else right after its last question mark. Raises when the last line has neither."""
    head, _, last = prompt.rpartition("\n")
    for marker in _MARKERS:
        at = last.rfind(marker)
        if at >= 0:
            cut = len(head) + (1 if head else 0) + at + (len(marker) if marker == "?" else 0)
            return prompt[:cut], prompt[cut:]
    raise ValueError(f"cannot find the answer prefix in the prompt's last line {last[-120:]!r}: it must follow "
                     "' Answer:' or a question mark")


@dataclass
class ChatTemplate:
    """Wrap prompts in ``tokenizer``'s chat template (RULER's model template) and stop at its end of turn."""

    tokenizer: object

    def __post_init__(self):
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("chat=True needs a tokenizer with a chat template (tokenizer.chat_template is empty); "
                             "evaluate without chat, or give the instruct model's tokenizer")

    def wrap(self, prompt: str) -> str:
        task, prefix = split_answer_prefix(prompt)
        turn = self.tokenizer.apply_chat_template([{"role": "user", "content": task}], add_generation_prompt=True,
                                                  tokenize=False)
        return turn + prefix.lstrip()

    def stop_token_ids(self) -> list[int]:
        """The end-of-turn token the template closes a turn with, plus EOS."""
        closed = self.tokenizer.apply_chat_template([{"role": "user", "content": "x"},
                                                     {"role": "assistant", "content": "y"}], tokenize=False)
        ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        for token in self.tokenizer.all_special_tokens:
            if closed.rstrip().endswith(token) or f"y{token}" in closed:
                ids.add(self.tokenizer.convert_tokens_to_ids(token))
        return sorted(ids)

    def counting(self) -> _Counting:
        """A stand-in tokenizer for the prompt generators: counts a prompt's tokens as wrapped."""
        return _Counting(self)


class _Counting:
    def __init__(self, chat: ChatTemplate):
        self._chat = chat

    def __call__(self, text: str, add_special_tokens: bool = False, **kwargs):
        return self._chat.tokenizer(self._chat.wrap(text), add_special_tokens=False, **kwargs)

    def __getattr__(self, name):
        return getattr(self._chat.tokenizer, name)

"""endprompt.evaluate.answer_probe: teacher-forced answer accuracy and its course over a run's checkpoints."""

from types import SimpleNamespace

import pytest
import torch

from endprompt.checkpoint import CheckpointError, checkpoint_dirs
from endprompt.evaluate.answer_probe import answer_accuracy, checkpoint_curve, probe_samples
from endprompt.evaluate.ruler import EvalSample
from endprompt.modeling import load_causal_lm
from endprompt.study_base import StudyBase, pretrain_base
from endprompt.tokenizer import load_tokenizer


class Oracle(torch.nn.Module):
    """Predicts, at each position, the next token of ``ids`` (teacher forcing's targets) shifted by ``offset`` from
    answer token ``wrong_from`` on: offset 0 everywhere = a perfect model."""

    def __init__(self, vocab: int, n_prompt: int, wrong_from: int, offset: int = 1):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.n_prompt, self.wrong_from, self.offset = vocab, n_prompt, wrong_from, offset

    def forward(self, ids):
        nxt = torch.cat([ids[0, 1:], ids[0, :1]])  # (T,) the token each position should predict
        answer_index = torch.arange(len(nxt)) - (self.n_prompt - 1)  # (T,) 0 at the first answer token
        nxt = torch.where(answer_index >= self.wrong_from, (nxt + self.offset) % self.vocab, nxt)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float()[None])  # (1, T, V)


def test_accuracy_counts_the_teacher_forced_hits():
    tok = load_tokenizer("byte")
    sample = EvalSample("passkey", 64, 0, "The pass key is", ["12345"], 12)
    n = len(tok(sample.prompt, add_special_tokens=False).input_ids)
    answer_tokens = len(tok(" 12345", add_special_tokens=False).input_ids)  # " ", "1", ..., "5": 6 byte tokens
    perfect = answer_accuracy(Oracle(len(tok), n, wrong_from=answer_tokens), tok, [sample])
    assert perfect == {"token_accuracy": 100.0, "first_token_accuracy": 100.0, "n": 1}
    first_only = answer_accuracy(Oracle(len(tok), n, wrong_from=1), tok, [sample])
    assert first_only["first_token_accuracy"] == 100.0
    assert first_only["token_accuracy"] == pytest.approx(100.0 / answer_tokens)
    none = answer_accuracy(Oracle(len(tok), n, wrong_from=0), tok, [sample, sample])
    assert none == {"token_accuracy": 0.0, "first_token_accuracy": 0.0, "n": 2}


def test_probe_samples_are_the_evaluation_suites_compact_prompts():
    tok = load_tokenizer("byte")
    passkey = probe_samples("passkey", 256, tok, 3, seed=5)
    niah = probe_samples("niah_single_1", 256, tok, 3, seed=5)
    assert all("pass key" in s.prompt and s.answers[0].isdigit() and s.prompt_tokens <= 256 for s in passkey)
    assert all(" Answer: The number for " in s.prompt and s.answers[0] in s.prompt for s in niah)


def test_checkpoint_curve_reads_every_checkpoint_and_the_final_once(tmp_path):
    base = StudyBase(L0=128, hidden_size=32, num_layers=1, num_heads=2, steps=3, batch=2, warmup=1, docs=4,
                     mixture="mixture:passkey=1")
    _, final = pretrain_base(base, tmp_path / "run", tmp_path / "cache", progress=False)
    steps = [int(d.name[5:]) for d in checkpoint_dirs(tmp_path / "run")]
    curve = checkpoint_curve(tmp_path / "run", [256], tasks=("passkey", "niah_single_1"), num_samples=2)
    assert sorted(set(curve["step"])) == sorted(set(steps) | {3}) and len(curve) == 2 * len(set(steps) | {3})
    tok = load_tokenizer(None, final)
    direct = answer_accuracy(load_causal_lm(final, dtype=torch.float32), tok, probe_samples("passkey", 256, tok, 2))
    last = curve[(curve["step"] == 3) & (curve["task"] == "passkey")].iloc[0]
    assert last["token_accuracy"] == direct["token_accuracy"]  # the last checkpoint's weights are the final model's
    (checkpoint_dirs(tmp_path / "run")[0] / "model.pt").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="model.pt"):
        checkpoint_curve(tmp_path / "run", [128], tasks=("passkey",), num_samples=1)

"""Teacher-forced answer accuracy of retrieval prompts, and its course over a training run's checkpoints.

Exact match after greedy generation is all or nothing: a base whose retrieval circuit is half formed scores 0%, as one
that has none does. Feeding the true answer after the prompt and reading the greedy prediction at each answer token
shows the circuit as it forms: the share of answer tokens predicted (chance for one of ten digits is 10%, a model that
has learned only the digits' frequencies gets somewhat more) and the share of prompts whose first answer token is
right (what greedy decoding would emit first). `checkpoint_curve` reads it at every checkpoint of a run, so one can see
when retrieval forms in pretraining and whether a later stage keeps it (`results/testbed/formation/`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from endprompt.evaluate.retrieval import passkey_samples
from endprompt.evaluate.ruler import EvalSample, make_samples

__all__ = ["probe_samples", "answer_accuracy", "checkpoint_curve"]


def probe_samples(task: str, length: int, tokenizer, num_samples: int, seed: int = 0) -> list[EvalSample]:
    """The compact prompts of ``task`` ("passkey" or a RULER task, e.g. "niah_single_1") at ``length`` tokens: the
    same prompts the evaluation suite generates with ``style="compact"`` and this seed."""
    if task == "passkey":
        return passkey_samples(length, tokenizer, num_samples, seed, style="compact")
    return make_samples(task, length, tokenizer, num_samples, seed, style="compact")


def _answer_ids(tokenizer, sample: EvalSample) -> tuple[list[int], int]:
    """``(ids, n_prompt)``: prompt followed by the first answer as the model should continue it (" <answer>"), and
    how many of the ids are the prompt's. Raises when the tokenizer merges across the prompt's end (the answer's
    first token would not be the model's first prediction)."""
    prompt = tokenizer(sample.prompt, add_special_tokens=False).input_ids
    ids = tokenizer(f"{sample.prompt} {sample.answers[0]}", add_special_tokens=False).input_ids
    if ids[: len(prompt)] != prompt:
        raise ValueError(f"the tokenizer merges the end of the {sample.task} prompt with its answer "
                         f"{sample.answers[0]!r}; teacher forcing would not probe the model's first prediction")
    return ids, len(prompt)


@torch.no_grad()
def answer_accuracy(model, tokenizer, samples: list[EvalSample]) -> dict:
    """``{"token_accuracy", "first_token_accuracy", "n"}`` in percent: the greedy (argmax) prediction at each token
    of the first answer given the prompt and the answer's earlier tokens (one forward pass per prompt)."""
    device = next(model.parameters()).device
    hits, tokens, first = 0, 0, 0
    for sample in samples:
        ids, n = _answer_ids(tokenizer, sample)
        logits = model(torch.tensor([ids], device=device)).logits[0]  # (T, V)
        pred = logits[n - 1 : len(ids) - 1].argmax(-1).cpu()  # (A,) predictions of the answer's A tokens
        target = torch.tensor(ids[n:])  # (A,)
        hits += int((pred == target).sum())
        tokens += len(target)
        first += int(pred[0] == target[0])
    return {"token_accuracy": 100.0 * hits / max(tokens, 1), "first_token_accuracy": 100.0 * first / len(samples),
            "n": len(samples)}


def checkpoint_curve(run_dir: str | Path, lengths: list[int], tasks: tuple[str, ...] = ("passkey", "niah_single_1"),
                     num_samples: int = 16, seed: int = 0, model_dir: str | Path | None = None) -> pd.DataFrame:
    """`answer_accuracy` at every checkpoint of the run in ``run_dir`` (``checkpoints/step-*``) and of its final
    model: one tidy row per (step, task, length). ``model_dir`` is a saved model of the run's architecture and
    tokenizer (default ``run_dir/final``), whose weights each checkpoint's replace."""
    from endprompt.checkpoint import checkpoint_dirs, checkpoint_weights
    from endprompt.modeling import load_causal_lm
    from endprompt.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    model_dir = Path(model_dir or run_dir / "final")
    tokenizer = load_tokenizer(None, model_dir)
    model = load_causal_lm(model_dir, dtype=torch.float32).eval()
    samples = {(task, length): probe_samples(task, length, tokenizer, num_samples, seed)
               for task in tasks for length in lengths}
    points = [(int(d.name[5:]), d) for d in checkpoint_dirs(run_dir)]
    rows = []
    for step, directory in points + [(None, None)]:
        if directory is None:
            if not (run_dir / "final").exists():
                continue
            step = int(pd.read_json(run_dir / "train_result.json", typ="series")["steps"])
            if step in {s for s, _ in points}:
                continue  # the last checkpoint is the final model
            model = load_causal_lm(run_dir / "final", dtype=torch.float32).eval()
        else:
            model.load_state_dict(checkpoint_weights(directory))
        for (task, length), batch in samples.items():
            rows.append({"step": step, "task": task, "length": length, **answer_accuracy(model, tokenizer, batch)})
    return pd.DataFrame(rows)

"""``evaluate(model, tokenizer, suite, lengths) -> DataFrame``: one row per model x task x length x metric.

Rows carry ``score`` (RULER scores x100 rounded to 2 decimals as RULER's evaluation does, MQAR accuracy x100,
perplexity as is, k_max in tokens), ``n`` (samples or tokens behind it), and ``status``: "ok", or "not_run" with the
``reason`` (missing QA files, a prompt that cannot fit the length or a haystack that cannot fill it, no document long
enough). Generation is batched greedy decoding with a KV cache (``model.generate``).
A model with dynamic NTK RoPE is evaluated at each length L with the frequencies for L
(`endprompt.evaluate.dynamic_rope`), so the table does not depend on the order of the lengths.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from endprompt.evaluate import perplexity as PPL
from endprompt.evaluate import retrieval
from endprompt.evaluate.chat import ChatTemplate
from endprompt.evaluate.dynamic_rope import pin_dynamic_rope
from endprompt.evaluate.ruler import RULER_TASKS, SYNTHETIC_TASKS, EvalSample, TaskUnavailable, make_samples
from endprompt.evaluate.scoring import digit_accuracy, k_max, score_sample
from endprompt.tasks import TaskDoesNotFit, fit_units, mqar_example

__all__ = ["SUITES", "generate", "evaluate", "summarize", "save_results", "run_lm_eval"]

log = logging.getLogger(__name__)

SUITES = ("ruler", "synthetic", "passkey", "needle", "perplexity", "mqar", "all")
COLUMNS = ["model", "suite", "task", "length", "metric", "score", "n", "status", "reason", "depth"]


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 4,
             stop_token_ids: Sequence[int] | None = None) -> list[str]:
    """Greedy continuations of ``prompts``, decoded without special tokens.

    Prompts are batched in order of length (left-padded, KV cache) so a batch holds prompts of one length and pads
    little; a sequence stops at EOS or any of ``stop_token_ids`` (an instruct model's end of turn) and the batch stops
    when all have. Outputs come back in the order of ``prompts``.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("batched generation needs a pad or eos token; set tokenizer.pad_token")
    stops = sorted({*(stop_token_ids or ()), *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = [encoded[i] for i in chunk]
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for i, b in enumerate(batch):
            ids[i, width - len(b) :], mask[i, width - len(b) :] = torch.tensor(b), 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=stops or None)
        for i, text in zip(chunk, tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)):
            out[i] = text
    return out


def _row(model_name, suite, task, length, metric, score, n, status="ok", reason="", depth=np.nan) -> dict:
    return {"model": model_name, "suite": suite, "task": task, "length": length, "metric": metric, "score": score,
            "n": n, "status": status, "reason": reason, "depth": depth}


def _generate(model, tokenizer, samples: list[EvalSample], batch_size: int, chat: ChatTemplate | None) -> list[str]:
    if chat is None:
        return generate(model, tokenizer, [s.prompt for s in samples], samples[0].max_new_tokens, batch_size)
    return generate(model, tokenizer, [chat.wrap(s.prompt) for s in samples], samples[0].max_new_tokens, batch_size,
                    stop_token_ids=chat.stop_token_ids())


def _score_samples(model, tokenizer, samples: list[EvalSample], batch_size: int, chat=None) -> list[float]:
    preds = _generate(model, tokenizer, samples, batch_size, chat)
    return [score_sample(p, s.answers, s.metric) for p, s in zip(preds, samples)]


@torch.no_grad()
def _mqar(model, tokenizer, length: int, num_samples: int, seed: int) -> tuple[float, int]:
    count = lambda t: len(tokenizer(t, add_special_tokens=False).input_ids)
    correct = total = 0
    device = next(model.parameters()).device
    for i in range(num_samples):
        rng_seed = [seed, 1003, length, i]
        pairs = fit_units(lambda n, s=rng_seed: mqar_example(max(n, 1), np.random.default_rng(s))[0],
                          count, length, start=4, limit=600)
        text, spans = mqar_example(max(pairs, 1), np.random.default_rng(rng_seed))
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([enc.input_ids], device=device)
        pred = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0].argmax(-1)
        for lo, hi in spans:
            for t, (a, b) in enumerate(enc.offset_mapping):
                if t > 0 and a < hi and b > lo:  # a token of a queried value: predicted from the tokens before it
                    correct += int(pred[t - 1] == ids[0, t])
                    total += 1
    return 100.0 * correct / max(total, 1), total


def evaluate(model, tokenizer, suite: str = "ruler", lengths: Sequence[int] = (4096,), num_samples: int = 10,
             seed: int = 0, batch_size: int = 4, style: str = "ruler", tasks: Sequence[str] | None = None,
             depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), essay_path: str | None = None,
             squad_path: str | None = None, hotpotqa_path: str | None = None, ppl_docs: list | None = None,
             ppl_stride: int = 256, model_name: str = "model", progress: bool = True,
             chat: bool = False) -> pd.DataFrame:
    """Run ``suite`` at every length; returns the tidy table (see the module docstring).

    ``chat=True`` prompts an instruct model as RULER prompts chat models (`endprompt.evaluate.chat`): each generated
    task's prompt is the user turn of ``tokenizer``'s chat template, fitted to the length with the template counted,
    and generation stops at the model's end of turn. Teacher-forced suites (perplexity, mqar) are unchanged.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites are: {', '.join(SUITES)}")
    template = ChatTemplate(tokenizer) if chat else None
    prompt_tok = template.counting() if template else tokenizer  # counts prompt tokens as the model will see them
    suites = [s for s in SUITES if s not in ("all", "synthetic")] if suite == "all" else [suite]
    model.eval()
    rows = []
    jobs = []
    for s in suites:
        names = list(tasks or (SYNTHETIC_TASKS if s == "synthetic" else RULER_TASKS if s == "ruler" else [s]))
        jobs += [(s, name, length) for name in names for length in lengths]
    bar = tqdm(jobs, desc=f"evaluate {model_name}", unit="task", disable=not progress)
    for s, name, length in bar:
        bar.set_postfix(task=name, length=length, refresh=False)
        pin_dynamic_rope(model, length)  # dynamic NTK: one set of frequencies per length, whatever the order
        try:
            if s in ("ruler", "synthetic"):
                samples = make_samples(name, length, prompt_tok, num_samples, seed, style, essay_path, squad_path,
                                       hotpotqa_path)
                scores = _score_samples(model, tokenizer, samples, batch_size, template)
                rows.append(_row(model_name, s, name, length, f"string_match_{samples[0].metric}",
                                 round(sum(scores) / len(scores) * 100, 2), len(scores)))  # RULER rounds here
            elif s == "passkey":
                samples = retrieval.passkey_samples(length, prompt_tok, num_samples, seed, style)
                preds = _generate(model, tokenizer, samples, batch_size, template)
                exact = [score_sample(p, x.answers, x.metric) for p, x in zip(preds, samples)]
                digits = [digit_accuracy(p, x.answers[0]) for p, x in zip(preds, samples)]
                rows.append(_row(model_name, s, "passkey", length, "accuracy", 100 * float(np.mean(exact)), len(exact)))
                rows.append(_row(model_name, s, "passkey", length, "digit_accuracy", 100 * float(np.mean(digits)),
                                 len(digits)))
            elif s == "needle":
                for depth in depths:
                    samples = retrieval.needle_grid_samples(length, depth, prompt_tok, num_samples, seed, style)
                    scores = _score_samples(model, tokenizer, samples, batch_size, template)
                    rows.append(_row(model_name, s, "needle", length, "string_match_all",
                                     100 * float(np.mean(scores)), len(scores), depth=depth))
            elif s == "mqar":
                acc, n = _mqar(model, tokenizer, length, num_samples, seed)
                rows.append(_row(model_name, s, "mqar", length, "accuracy", acc, n))
            elif s == "perplexity":
                docs = ppl_docs if ppl_docs is not None else _default_ppl_docs(tokenizer)
                for form, fn in (("ppl_truncated", PPL.truncated_perplexity),
                                 ("ppl_sliding", lambda m, d, L: PPL.sliding_perplexity(
                                     m, d, L, min(ppl_stride, L), max_tokens_per_doc=4 * L))):
                    try:
                        value, n = fn(model, docs, length)
                        rows.append(_row(model_name, s, "perplexity", length, form, value, n))
                    except ValueError as err:
                        rows.append(_row(model_name, s, "perplexity", length, form, np.nan, 0, "not_run", str(err)))
        except (TaskUnavailable, TaskDoesNotFit) as err:
            rows.append(_row(model_name, s, name, length, "string_match_all", np.nan, 0, "not_run", str(err)))
    pin_dynamic_rope(model, None)
    table = pd.DataFrame(rows, columns=COLUMNS)
    passkey = table[(table["task"] == "passkey") & (table["metric"] == "accuracy") & (table["status"] == "ok")]
    if len(passkey):
        success = passkey.set_index("length")["score"] / 100
        extra = _row(model_name, "passkey", "passkey", int(passkey["length"].max()), "k_max", float(k_max(success)),
                     len(passkey))
        table = pd.concat([table, pd.DataFrame([extra], columns=COLUMNS)], ignore_index=True)
    return table


def _default_ppl_docs(tokenizer, max_docs: int = 64) -> list[np.ndarray]:
    """The longest documents of the built-in corpus, tokenized with the evaluated tokenizer."""
    from endprompt.data import builtin_files

    files = sorted(builtin_files(), key=lambda p: -p.stat().st_size)[:max_docs]
    return [np.asarray(tokenizer(f.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False).input_ids)
            for f in files]


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """RULER aggregation: per model and length the mean score over tasks that ran, then the mean over lengths."""
    ruler = table[table["suite"].isin(["ruler", "synthetic"]) & (table["status"] == "ok")]
    per_length = ruler.groupby(["model", "length"], as_index=False).agg(score=("score", "mean"),
                                                                        tasks=("task", "nunique"))
    overall = per_length.groupby("model", as_index=False).agg(score=("score", "mean")).assign(length="mean")
    return pd.concat([per_length, overall], ignore_index=True)


def save_results(table: pd.DataFrame, out_dir: str | Path, name: str = "eval") -> tuple[Path, Path]:
    """Write ``<name>.csv`` and ``<name>.json`` (records) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, js = out / f"{name}.csv", out / f"{name}.json"
    table.to_csv(csv, index=False)
    js.write_text(json.dumps(json.loads(table.to_json(orient="records")), indent=1))
    return csv, js


def run_lm_eval(model, tasks: Sequence[str], tokenizer=None, model_args: dict | str | None = None,
                include_path: str | Path | None = None, include_defaults: bool = True, **kwargs) -> dict:
    """Run lm-evaluation-harness (0.4.x) on ``tasks``; returns its results dict (``results[task][metric]``).

    ``model`` is a local checkpoint directory, loaded by lm-eval's ``HFLM`` with ``model_args`` (a dict or lm-eval's
    ``"key=value,..."`` string: dtype, batch_size, max_length, ...), or an in-memory transformers model (then give its
    ``tokenizer``; ``model_args`` go to ``HFLM`` too). ``include_path``: a directory of local task YAML files (lm-eval's
    ``TaskManager(include_path=...)``), e.g. a task on a local JSON file; ``include_defaults=False`` skips indexing
    lm-eval's thousands of built-in tasks (much faster when only local tasks run). Other ``kwargs`` go to
    ``lm_eval.simple_evaluate`` (``limit``, ``num_fewshot``, ...). Nothing is downloaded: tasks need local data.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise RuntimeError("lm-eval is not installed: pip install 'lm-eval>=0.4,<0.5' (part of endprompt's dev extra), "
                           "and make its task data available locally (endprompt never downloads data at run time)"
                           ) from None
    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        model_args = simple_parse_args_string(model_args)  # "max_length=64" -> {"max_length": 64}, as lm-eval's CLI
    model_args = dict(model_args or {})
    if isinstance(model, (str, Path)):
        model_args.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")  # lm-eval assumes cuda
        if "pretrained" in model_args:
            raise ValueError(f"give the model once: model={model!r} and model_args pretrained="
                             f"{model_args['pretrained']!r}")
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model {str(model)!r} is not a local checkpoint directory")
        lm = HFLM(pretrained=str(model), **({"tokenizer": tokenizer} if tokenizer is not None else {}), **model_args)
    else:
        if tokenizer is None:
            raise ValueError("an in-memory model needs its tokenizer: run_lm_eval(model, tasks, tokenizer=...)")
        lm = HFLM(pretrained=model, tokenizer=tokenizer, **model_args)
    manager = None
    if include_path is not None or not include_defaults:
        manager = TaskManager(include_path=None if include_path is None else str(include_path),
                              include_defaults=include_defaults)
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, **kwargs)

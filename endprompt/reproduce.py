"""The paper's 8K -> 64K study in miniature: a tiny Llama pretrained at ``L0`` tokens, extended to ``8 * L0``.

1. Base: pretrain a tiny Llama at ``L0`` on a mixture of natural text and synthetic retrieval (`endprompt.mixture`),
   cached under ``cache_dir`` (a rerun with the same settings reuses it), and report its scores at ``L0``.
2. Extension to ``factor * L0`` (`Extension`) with matched physical-token budgets: EndPrompt (paper variant with the
   cue set; single-cue variants compare the wording), EndPrompt own-tail, random placement, ET(PoSE), PoSE, full-length
   fine-tuning, LongLoRA (LoRA+ and S2-Attn), SharedLLM (`endprompt.sharedllm`, an architecture: trained on ``L0`` + 4
   context chunks of ``L0 / 4``, no RoPE scaling); and without training: PI, dynamic NTK, YaRN. The other trained
   methods use PI (linear, factor 8) as the paper does; each seed re-trains every method from the same base.
3. Evaluation at ``L0/2 .. 16 * L0``: passkey (exact match, digit accuracy and k_max), compact niah_single_1 (the
   shipped base scores 0% on niah_multikey_2 and vt at L0, so they are left out; ``tasks`` adds them), a needle grid,
   perplexity by length on held-out text; plus each method's training cost.

The settings (arms, extension, presets) are typed values of `endprompt.study`; this module runs them. Results:
``<out>/results.csv`` (seed, method, task, length, metric, score, n, status, cost columns) and ``<out>/costs.csv``;
figures by `endprompt.plotting` from those tables (notebook 02).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from endprompt.checkpoint import atomic_write
from endprompt.claims import judge_claims
from endprompt.evaluate import evaluate
from endprompt.modeling import extend_config
from endprompt.shipped_arms import shipped_arm
from endprompt.study import TRAINED, TRAINING_FREE, StudyConfig, extension_config
from endprompt.study_base import base_run_dir, pretrain_base
from endprompt.train import train

logger = logging.getLogger(__name__)

__all__ = ["run_study", "collect_study", "judge_study", "study_lengths", "base_scores", "load_trained", "SHIPPED"]


SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "study-bases"
"""Base models that the repository ships (made by `pretrain_base`; the directory is named by `StudyBase.key`), so the
demo need not pretrain."""


def _base(cfg: StudyConfig) -> Path:
    """Pretrain the base model, or reuse a cached or shipped one with the same settings; returns its directory."""
    if (SHIPPED / cfg.base.key / "config.json").exists():
        return SHIPPED / cfg.base.key
    return pretrain_base(cfg.base, base_run_dir(cfg.base, cfg.cache_dir), cfg.cache_dir, cfg.progress)[1]


def load_trained(method: str, path: Path):
    """The model a trained arm saved under ``path``: a SharedLLM (an architecture stock transformers cannot load) or
    a causal LM."""
    from endprompt.modeling import load_causal_lm
    from endprompt.sharedllm import load_sharedllm

    return (load_sharedllm if TRAINED[method].is_sharedllm else load_causal_lm)(path, dtype=torch.float32)


def _training_free(base: Path, method: str, cfg: StudyConfig, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base)
    extend_config(config, TRAINING_FREE[method], cfg.target_len, cfg.L0)  # as training does (prepare_model)
    return AutoModelForCausalLM.from_pretrained(base, config=config, dtype=torch.float32).to(device)


COST_COLUMNS = ("train_tokens", "wall_time_s", "peak_memory_gb", "tokens_per_s")


def _shipped(cfg: StudyConfig, name: str):
    """A shipped arm's model and its run's cost; a clear error when it extends another base or by another factor
    than ``cfg``'s (its numbers would not belong in this study's table)."""
    arm = shipped_arm(name)
    record = arm.record()
    model = load_trained(arm.method, arm.path)
    rope = getattr(model.config, "rope_parameters", None) or {}
    if record["base"] != cfg.base.key or rope.get("factor") != cfg.extension.factor:
        raise ValueError(f"shipped arm {name!r} extends base {record['base']} by {rope.get('factor')}x; this study "
                         f"extends {cfg.base.key} by {cfg.extension.factor}x: drop it from shipped= or ship one of "
                         "this study")
    cost = {"train_tokens": record["tokens"], "wall_time_s": record["wall_time_s"],
            "peak_memory_gb": record["peak_memory_bytes"] / 2**30, "tokens_per_s": record["tokens_per_s"]}
    return model, cost


def _heldout_docs(tokenizer, cfg: StudyConfig) -> list[np.ndarray]:
    """Long documents of held-out natural text (the last 10% of the built-in corpus, never used in the mixture)."""
    from endprompt.data import tokenize_corpus

    corpus = tokenize_corpus("builtin", tokenizer, cfg.cache_dir, progress=False)
    tail = np.asarray(corpus.tokens[int(0.9 * corpus.num_tokens) :], dtype=np.int64)
    size = 4 * max(cfg.eval_lengths)
    return [tail[i : i + size] for i in range(0, len(tail) - size, size)][:4]


def _evaluate(model, tokenizer, cfg: StudyConfig, name: str, seed: int, docs) -> pd.DataFrame:
    kw = {"num_samples": cfg.eval_samples, "seed": 1000 + seed, "style": "compact", "progress": False,
          "model_name": name, "batch_size": 8}
    lengths = list(cfg.eval_lengths)
    frames = [evaluate(model, tokenizer, "synthetic", lengths, tasks=list(cfg.tasks), **kw),
              evaluate(model, tokenizer, "passkey", lengths, **kw),
              evaluate(model, tokenizer, "needle", lengths, depths=cfg.needle_depths,
                       **(kw | {"num_samples": cfg.needle_samples})),
              evaluate(model, tokenizer, "perplexity", lengths, ppl_docs=docs, ppl_stride=max(lengths) // 2, **kw)]
    return pd.concat(frames, ignore_index=True)


def base_scores(table: pd.DataFrame, L0: int) -> pd.DataFrame:
    """The base model's scores at its own length."""
    base = table[(table["method"] == "base") & (table["length"] == L0) & (table["status"] == "ok")]
    return base.groupby(["task", "metric"], as_index=False)["score"].mean()


def _done(run_dir: Path) -> pd.DataFrame | None:
    file = run_dir / "eval.csv"
    return pd.read_csv(file) if file.exists() else None


def _save_run(run_dir: Path, table: pd.DataFrame) -> None:
    """A finished run's rows (`collect_study` reads them back, so a fresh and a resumed study table alike)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "eval.csv", lambda tmp: table.to_csv(tmp, index=False))  # a run's rows: all or none


CURVE_COLUMNS = ("budget_fraction", "steps")


def _trained_arm(cfg: StudyConfig, method: str, base: Path, seed: int, run_dir: Path, tokenizer, docs) -> pd.DataFrame:
    """Train one arm and evaluate it at each point of ``cfg.curve``; every point's rows, with its training cost so
    far and `CURVE_COLUMNS`. Each point is saved (``curve-<steps>.csv``) when it is done, and the run continues from
    its checkpoint, so an interrupted arm resumes at its first missing point."""
    tc = extension_config(cfg, method, base, seed, run_dir)
    points = {max(1, round(f * tc.optim.max_steps)): f for f in cfg.curve}  # steps -> fraction (last wins)
    frames = []
    for steps, fraction in points.items():
        file = run_dir / f"curve-{steps:06d}.csv"
        if not file.exists():
            result = train(replace(tc, optim=replace(tc.optim, max_steps=steps)))
            model = load_trained(method, result.final_dir)
            cost = {"train_tokens": result.tokens, "wall_time_s": result.wall_time_s,
                    "peak_memory_gb": result.peak_memory_bytes / 2**30, "tokens_per_s": result.tokens_per_s}
            table = _evaluate(model, tokenizer, cfg, method, seed, docs).assign(
                seed=seed, method=method, **cost, budget_fraction=fraction, steps=steps)
            atomic_write(file, lambda tmp, table=table: table.to_csv(tmp, index=False))
        frames.append(pd.read_csv(file))
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if not cfg.keep_weights:
        shutil.rmtree(run_dir / "final", ignore_errors=True)  # keep metrics, config and evaluations, not weights
    curve = pd.concat(frames, ignore_index=True)
    atomic_write(run_dir / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    return curve


def run_study(cfg: StudyConfig) -> pd.DataFrame:
    """Run the whole study; writes results.csv, costs.csv and study.json under ``cfg.out_dir``.

    Each (method, seed) run stores its evaluation in ``runs/<method>-seed<seed>/eval.csv`` as soon as it is done; a
    rerun with the same settings skips the runs that are complete, so an interrupted study continues where it stopped.
    The trained arms' learning curves (``cfg.curve``) go to ``curves.csv``.
    """
    from endprompt.modeling import load_causal_lm
    from endprompt.tokenizer import load_tokenizer

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = _base(cfg)
    tokenizer = load_tokenizer(None, base)  # the base's own (byte-level for the shipped base)
    if cfg.cue_methods:  # the end prompt's budget is the tokenizer's, never a default's
        cfg = cfg.for_tokenizer(tokenizer)
        _check_cue_budget(out, cfg)
    atomic_write(out / "study.json", lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=2)))
    docs = _heldout_docs(tokenizer, cfg)
    base_model = None
    for seed in cfg.seeds:  # the base is one model; its evaluation varies with the seed's prompts
        run_dir = out / "runs" / f"base-seed{seed}"
        if not (run_dir / "eval.csv").exists():
            base_model = base_model or load_causal_lm(base, dtype=torch.float32)
            table = _evaluate(base_model, tokenizer, cfg, "base", seed, docs).assign(seed=seed, method="base")
            _save_run(run_dir, table)
    for seed in cfg.seeds:  # shipped arms: evaluated with the seed's prompts, their cost is their own run's
        for name in cfg.shipped:
            run_dir = out / "runs" / f"{name}-seed{seed}"
            if not (run_dir / "eval.csv").exists():
                model, cost = _shipped(cfg, name)
                _save_run(run_dir, _evaluate(model, tokenizer, cfg, name, seed, docs).assign(
                    seed=seed, method=name, **cost))
    jobs = [(seed, method) for seed in cfg.seeds for method in cfg.methods]
    bar = tqdm(jobs, desc=f"study {cfg.name}", unit="run", disable=not cfg.progress)
    for seed, method in bar:
        bar.set_postfix(method=method, seed=seed, refresh=False)
        run_dir = out / "runs" / f"{method}-seed{seed}"
        if not (run_dir / "eval.csv").exists():
            if method in TRAINING_FREE:
                model = _training_free(base, method, cfg, "cpu")
                cost = {"train_tokens": 0, "wall_time_s": 0.0, "peak_memory_gb": 0.0, "tokens_per_s": np.nan}
                table = _evaluate(model, tokenizer, cfg, method, seed, docs).assign(seed=seed, method=method, **cost)
            else:
                curve = _trained_arm(cfg, method, base, seed, run_dir, tokenizer, docs)
                table = curve[curve["budget_fraction"] == 1.0].drop(columns=list(CURVE_COLUMNS))
            _save_run(run_dir, table)
    table = collect_study(cfg)
    (out / "wall_time.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return table


def _saved_cue_budget(out: Path) -> int | None:
    """The end prompt's budget that the study in ``out`` recorded in its ``study.json`` (None: none recorded)."""
    path = out / "study.json"
    return json.loads(path.read_text()).get("b_cue") if path.exists() else None


def _check_cue_budget(out: Path, cfg: StudyConfig) -> None:
    """Refuse to add runs to, or rewrite the settings of, a study whose cue arms were trained with another end-prompt
    budget: its ``study.json`` would describe results it did not produce."""
    saved = _saved_cue_budget(out)
    trained = [m for m in cfg.cue_methods if any((out / "runs").glob(f"{m}-seed*"))]
    if saved is not None and saved != cfg.b_cue and trained:
        raise ValueError(f"{out} holds runs of {', '.join(trained)} trained with b_cue={saved} (its study.json), and "
                         f"this study's is {cfg.b_cue}: give another out_dir (--out) for the new runs")


def study_lengths(out_dir: str | Path) -> tuple[int, int]:
    """``(L0, target_len)`` of a study saved as tables, read from its ``study.json``."""
    out = Path(out_dir)
    settings = json.loads((out / "study.json").read_text())
    # study.json as StudyConfig writes it (base.L0, extension.factor), or flat as the byte-base study wrote it
    nested = "base" in settings and "extension" in settings
    L0, factor = ((settings["base"].get("L0"), settings["extension"].get("factor")) if nested
                  else (settings.get("L0"), settings.get("factor")))
    if not (isinstance(L0, int) and isinstance(factor, int)):
        raise ValueError(f"{out / 'study.json'} names no L0 and factor (found L0={L0!r}, factor={factor!r}); it "
                         "must be the study.json that endprompt reproduce wrote")
    return L0, L0 * factor


def judge_study(out_dir: str | Path) -> pd.DataFrame:
    """The paper's claims judged on a study's ``results.csv`` (`endprompt.claims.judge_claims`), its lengths read from
    its ``study.json``; written to ``claims.csv`` beside them. For a study committed as tables only (no ``runs/``)."""
    out = Path(out_dir)
    missing = [n for n in ("results.csv", "study.json") if not (out / n).exists()]
    if missing:
        raise FileNotFoundError(f"{out} has no {' or '.join(missing)}; give the output directory of endprompt "
                                "reproduce (e.g. results/study)")
    judged = judge_claims(pd.read_csv(out / "results.csv"), *study_lengths(out))
    atomic_write(out / "claims.csv", lambda tmp: judged.to_csv(tmp, index=False))
    return judged


def collect_study(cfg: StudyConfig, require_all: bool = True) -> pd.DataFrame:
    """The study's tables from its finished runs (``runs/<name>-seed<seed>/eval.csv``): ``results.csv`` (the base,
    the shipped arms, then the arms seed by seed), ``costs.csv``, ``claims.csv`` (the paper's claims judged on them,
    `endprompt.claims.judge_claims`) and, where arms have learning curves, ``curves.csv``.

    ``require_all=False`` collects what has finished of a study still in progress (``reproduce --collect``), naming
    the runs left out; by default a missing run is an error (`run_study` has just made them all).
    """
    out = Path(cfg.out_dir)
    if cfg.b_cue is None and cfg.cue_methods:  # the budget its runs used, which run_study recorded
        saved = _saved_cue_budget(out)
        if saved is None:
            raise FileNotFoundError(f"{out / 'study.json'} records no end-prompt budget (b_cue) for the cue arms "
                                    f"{', '.join(cfg.cue_methods)}: collect the output directory of endprompt "
                                    "reproduce, or set StudyConfig.b_cue")
        cfg = replace(cfg, b_cue=saved)
    names = ([("base", seed) for seed in cfg.seeds] + [(n, seed) for seed in cfg.seeds for n in cfg.shipped]
             + [(m, seed) for seed in cfg.seeds for m in cfg.methods])
    rows, costs, curves, missing = [], [], [], []
    for name, seed in names:
        run_dir = out / "runs" / f"{name}-seed{seed}"
        done = _done(run_dir)
        if done is None:
            missing.append(run_dir.name)
            continue
        rows.append(done)
        if name != "base":
            costs.append({"seed": seed, "method": name, **{k: done[k].iloc[0] for k in COST_COLUMNS}})
        if (run_dir / "curve.csv").exists():
            curves.append(pd.read_csv(run_dir / "curve.csv"))
    if missing and (require_all or not rows):
        raise FileNotFoundError(f"{out}: no finished run for {', '.join(missing)}; run them with endprompt reproduce "
                                "(without --collect)")
    if missing:
        logger.info("collected %s without the unfinished runs %s", out, ", ".join(missing))
    atomic_write(out / "study.json", lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=2)))
    table = pd.concat(rows, ignore_index=True)
    atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))  # a killed rewrite: the old file
    atomic_write(out / "costs.csv", lambda tmp: pd.DataFrame(costs).to_csv(tmp, index=False))
    if curves:
        curve_table = pd.concat(curves, ignore_index=True)
        atomic_write(out / "curves.csv", lambda tmp: curve_table.to_csv(tmp, index=False))
    judged = judge_claims(table, cfg.L0, cfg.target_len)
    atomic_write(out / "claims.csv", lambda tmp: judged.to_csv(tmp, index=False))
    return table


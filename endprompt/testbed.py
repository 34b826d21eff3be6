"""The search for a study base that behaves like a real LLM under RoPE rescaling (issue 13): one candidate at a time.

A candidate is a `endprompt.study_base.StudyBase`: a tiny Llama pretrained from scratch at ``L0`` with the library's
own `train` (recipe ``pretrain``) on the retrieval mixture of `endprompt.mixture` (`pretrain_base`), so a candidate
that meets the criteria is handed to the study as its base (``StudyConfig(base=...)``). `screen` then measures, with
the library's evaluation suite and ``samples`` prompts per cell (compact style):

- the base: passkey exact match (and digit accuracy) at ``L0/2`` and ``L0``, compact niah_single_1 at ``L0``;
- without any training, the rotary swapped to dynamic NTK (x8), PI x2, PI x8 and YaRN x8: passkey at ``L0/2`` and
  ``L0`` (dynamic NTK also at ``2 L0``).

Reference (issue 13): SmolLM2-135M, untrained, passkey at ~560 tokens: unscaled 5/6, PI x2 0/6, PI x8 0/6, YaRN x8 3/6.
Why the spectrum matters: YaRN leaves unscaled the rotary pairs that turn more than ``beta_fast = 32`` times within
``L0`` and fully interpolates those that turn less than ``beta_slow = 1`` time; the paper's models have many of the
former (Llama-3 at 8K about 18 of 64, SmolLM2 about 10 of 32), the byte-level L0 = 256 base 1 of 16. `rotary_turns`
gives the count for each candidate, and every row records it.

`screen` is resumable: training checkpoints under ``<cache_dir>/study-bases/<key>/`` (`base_run_dir`, where the study
looks for its base) and a candidate whose key is already
in the attempts table is skipped. One tidy row per candidate goes to ``attempts.csv`` (settings, parameters, tokens,
wall times, machine and load, every score), the pretraining log to ``logs/<key>.jsonl`` and the evaluation table to
``evals/<key>.csv``.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from endprompt import rope as R
from endprompt.study_base import StudyBase, base_run_dir, pretrain_base

__all__ = ["TESTBED", "RESCALINGS", "CRITERIA", "rotary_turns", "spectrum", "rescaled_model", "screen_model", "screen",
           "screen_saved", "criteria_met", "attempts_markdown", "append_row", "machine"]

TESTBED = StudyBase(L0=1024, num_heads=2, vocab_size=2048, steps=1000, batch=8, docs=8192, mixed_precision="bf16")
"""The search's starting point (its CLI's defaults): L0 = 1024, head_dim 64, BPE 2048, bf16 autocast."""

RESCALINGS = {"dyn": ("dynamic", 8), "pi2": ("linear", 2), "pi8": ("linear", 8), "yarn8": ("yarn", 8)}
"""Training-free swaps of the rotary: column prefix -> (rope type, factor); the target is ``factor * L0``."""

BETA_FAST, BETA_SLOW = 32.0, 1.0  # YaRN's defaults (and transformers')

CRITERIA = {"pk_L0": 90.0, "pk_half": 80.0, "niah_L0": 80.0, "dyn_pk_L0": 90.0, "yarn8_pk_half": 50.0}
"""Issue 13's base criteria as thresholds on `screen`'s columns. "YaRN x8 keeps retrieval at short lengths" is read as
>= 50% at L0/2 (SmolLM2-135M: 3/6 under YaRN x8)."""


def rotary_turns(L0: int, head_dim: int, rope_theta: float) -> np.ndarray:
    """Turns of each rotary pair within ``L0`` positions: ``L0 * theta_j / (2 pi)``, ``(head_dim / 2,)``."""
    inv_freq, _ = R.compute_inv_freq(R.RopeScaling(rope_theta=rope_theta), head_dim)
    return L0 * inv_freq / (2 * math.pi)


def spectrum(L0: int, head_dim: int, rope_theta: float) -> dict:
    """Pairs YaRN keeps (> 32 turns within L0) and interpolates fully (< 1 turn), of ``head_dim / 2``."""
    turns = rotary_turns(L0, head_dim, rope_theta)
    return {"pairs": len(turns), "fast_pairs": int((turns > BETA_FAST).sum()),
            "slow_pairs": int((turns < BETA_SLOW).sum())}


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()}-core, {gpu}, torch {torch.__version__.split('+')[0]}"


def rescaled_model(base_dir: str | Path, rope_type: str, factor: float, L0: int):
    """The base with its rotary swapped to ``rope_type`` x ``factor`` (no training). The checkpoint's own rope_theta
    is carried over (never a default)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir, local_files_only=True)
    base = R.from_transformers_config(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = R.for_extension(rope_type, L0, int(factor * L0), factor=float(factor), rope_theta=base.rope_theta)
    for key, value in R.transformers_config_kwargs(rope, int(factor * L0), head_dim).items():
        setattr(config, key, value)
    return AutoModelForCausalLM.from_pretrained(base_dir, config=config, dtype=torch.float32, local_files_only=True)


def _passkey(model, tok, lengths, samples, seed, name) -> pd.DataFrame:
    from endprompt.evaluate import evaluate

    return evaluate(model, tok, "passkey", lengths, num_samples=samples, seed=seed, style="compact", batch_size=8,
                    model_name=name, progress=False)


def screen_model(base_dir: str | Path, L0: int, samples: int = 24, seed: int = 1000) -> pd.DataFrame:
    """Every cell of the screen on a saved base: the tidy evaluation table, with a ``rescaling`` column
    ("base" or a key of `RESCALINGS`)."""
    from endprompt.evaluate import evaluate
    from endprompt.modeling import load_causal_lm
    from endprompt.tokenizer import load_tokenizer

    tok = load_tokenizer(None, base_dir)
    half = L0 // 2
    model = load_causal_lm(base_dir, dtype=torch.float32)
    frames = [_passkey(model, tok, [half, L0], samples, seed, "base").assign(rescaling="base"),
              evaluate(model, tok, "synthetic", [L0], tasks=["niah_single_1"], num_samples=samples, seed=seed,
                       style="compact", batch_size=8, model_name="base", progress=False).assign(rescaling="base")]
    for name, (rope_type, factor) in RESCALINGS.items():
        lengths = [half, L0, 2 * L0] if name == "dyn" else [half, L0]
        model = rescaled_model(base_dir, rope_type, factor, L0)
        frames.append(_passkey(model, tok, lengths, samples, seed, name).assign(rescaling=name))
    return pd.concat(frames, ignore_index=True)


def _scores(table: pd.DataFrame, L0: int) -> dict:
    """The eval table as flat columns: ``<prefix>_<pk|pkd|niah>_<L0|half|2L0>``."""
    where = {L0 // 2: "half", L0: "L0", 2 * L0: "2L0"}
    out = {}
    for row in table[table["status"] == "ok"].itertuples():
        if row.metric == "k_max":
            continue
        metric = {"accuracy": "pk", "digit_accuracy": "pkd"}.get(row.metric, "niah")
        prefix = "" if row.rescaling == "base" else f"{row.rescaling}_"
        out[f"{prefix}{metric}_{where[row.length]}"] = round(float(row.score), 2)
    return out


def criteria_met(row: dict) -> bool:
    """The screen's part of issue 13's base criteria (`CRITERIA`)."""
    return all(row.get(k, -1) >= v for k, v in CRITERIA.items())


def append_row(csv: str | Path, row: dict) -> pd.DataFrame:
    """Append ``row`` to the attempts table (columns united with earlier rows), atomically."""
    csv = Path(csv)
    table = pd.read_csv(csv) if csv.exists() else pd.DataFrame()
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    first = ["key"] + [f.name for f in fields(StudyBase)]  # settings first, then whatever the rows measured
    table = table[[c for c in first if c in table] + [c for c in table if c not in first]]
    csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv.with_suffix(".csv.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(csv)
    return table


def _done_row(csv: Path, key: str) -> dict | None:
    if csv.exists():
        done = pd.read_csv(csv)
        if key in set(done["key"]):
            return done[done["key"] == key].iloc[-1].to_dict()
    return None


def _record(out: Path, key: str, settings: dict, final: Path, table: pd.DataFrame, facts: dict, log: Path | None,
            note: str, load0: float) -> dict:
    """Write the candidate's evaluation table and log, append its row to the attempts table; returns the row."""
    from safetensors import safe_open

    (out / "evals").mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "evals" / f"{key}.csv", index=False)
    if log is not None and log.exists():
        (out / "logs").mkdir(parents=True, exist_ok=True)
        shutil.copy(log, out / "logs" / f"{key}.jsonl")
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    head_dim = settings["hidden_size"] // settings["num_heads"]
    row = {"key": key, **settings, "head_dim": head_dim, **spectrum(settings["L0"], head_dim, settings["rope_theta"]),
           "params": params, **facts, "machine": machine(), "load_avg": round((load0 + os.getloadavg()[0]) / 2, 2),
           "finished": time.strftime("%Y-%m-%d %H:%M"), **_scores(table, settings["L0"]), "note": note}
    row["meets_screen"] = criteria_met(row)
    append_row(out / "attempts.csv", row)
    return row


def screen(c: StudyBase, out_dir: str | Path = "results/testbed", cache_dir: str | Path = "cache", samples: int = 24,
           note: str = "", progress: bool = True) -> dict:
    """Pretrain and screen one candidate; appends its row to ``<out_dir>/attempts.csv`` (skipped when the key is
    there already) and returns the row."""
    out = Path(out_dir)
    done = _done_row(out / "attempts.csv", c.key)
    if done is not None:
        return done
    load0 = os.getloadavg()[0]
    run = base_run_dir(c, cache_dir)
    result, final = pretrain_base(c, run, cache_dir, progress)
    start = time.perf_counter()
    table = screen_model(final, c.L0, samples)
    facts = {"train_tokens": result["tokens"], "final_loss": round(result["losses"][-1], 4),
             "train_s": round(result["wall_time_s"], 1), "tokens_per_s": round(result["tokens_per_s"], 1),
             "eval_s": round(time.perf_counter() - start, 1), "samples": samples}
    log = run / ("pretrain_metrics.jsonl" if c.short_steps else "metrics.jsonl")
    return _record(out, c.key, asdict(c), final, table, facts, log, note, load0)


def screen_saved(base_dir: str | Path, L0: int, out_dir: str | Path = "results/testbed", samples: int = 24,
                 note: str = "") -> dict:
    """Screen a base that exists already (e.g. the shipped byte-level one) as a reference row ``saved-<dir name>``;
    its settings come from its ``config.json``, its tokens from ``pretrain_metrics.jsonl`` when present."""
    import json

    from endprompt.tokenizer import is_byte_tokenizer, load_tokenizer

    base_dir, out = Path(base_dir), Path(out_dir)
    key = f"saved-{base_dir.name}"
    done = _done_row(out / "attempts.csv", key)
    if done is not None:
        return done
    config = json.loads((base_dir / "config.json").read_text())
    tok = load_tokenizer(None, base_dir)
    theta = R.from_rope_parameters(config.get("rope_parameters"), config.get("max_position_embeddings")).rope_theta
    settings = {"L0": L0, "hidden_size": config["hidden_size"], "num_layers": config["num_hidden_layers"],
                "num_heads": config["num_attention_heads"], "rope_theta": theta,
                "vocab_size": 0 if is_byte_tokenizer(tok) else len(tok)}
    log = base_dir / "pretrain_metrics.jsonl"
    facts = {"samples": samples}
    if log.exists():
        last = json.loads(log.read_text().splitlines()[-1])
        facts |= {"steps": last["step"], "train_tokens": last["tokens"], "final_loss": round(last["loss"], 4),
                  "train_s": round(last["elapsed_s"], 1), "tokens_per_s": round(last["tokens_per_s"], 1)}
    load0, start = os.getloadavg()[0], time.perf_counter()
    table = screen_model(base_dir, L0, samples)
    facts["eval_s"] = round(time.perf_counter() - start, 1)
    return _record(out, key, settings, base_dir, table, facts, log, note, load0)


def attempts_markdown(table: pd.DataFrame) -> str:
    """The attempts table as markdown: settings, spectrum, cost and passkey exact match per cell (L0/2 / L0)."""
    def pair(row, prefix):
        a, b = row.get(f"{prefix}pk_half"), row.get(f"{prefix}pk_L0")
        return f"{a:.0f} / {b:.0f}" if pd.notna(a) and pd.notna(b) else "-"

    lines = ["| # | L0 | layers x width, head_dim | rope_theta | tokenizer | params | pretrain tokens (min) "
             "| fast / slow pairs | passkey L0/2 / L0 | niah L0 | dyn NTK L0 / 2L0 | PI x2 | PI x8 | YaRN x8 | meets |",
             "| --- " * 15 + "|"]
    for i, r in enumerate(table.to_dict("records"), 1):
        tok = f"BPE {int(r['vocab_size'])}" if r["vocab_size"] else "byte"
        minutes = f"{r['train_s'] / 60:.0f}" if pd.notna(r.get("train_s")) else "-"
        tokens = f"{r['train_tokens'] / 1e6:.1f}M ({minutes})" if pd.notna(r.get("train_tokens")) else "-"
        dyn = f"{r.get('dyn_pk_L0', float('nan')):.0f} / {r.get('dyn_pk_2L0', float('nan')):.0f}"
        lines.append(f"| {i} | {int(r['L0'])} | {int(r['num_layers'])} x {int(r['hidden_size'])}, {int(r['head_dim'])} "
                     f"| {r['rope_theta']:g} | {tok} | {r['params'] / 1e6:.2f}M | {tokens} | {int(r['fast_pairs'])} / "
                     f"{int(r['slow_pairs'])} of {int(r['pairs'])} | {pair(r, '')} "
                     f"| {r.get('niah_L0', float('nan')):.0f} | {dyn} | {pair(r, 'pi2_')} | {pair(r, 'pi8_')} "
                     f"| {pair(r, 'yarn8_')} | "
                     f"{'yes' if r['meets_screen'] else 'no'} |")
    return "\n".join(lines)

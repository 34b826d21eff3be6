"""The paper's comparison at the paper's lengths on a real pretrained model: 8K -> 64K on SmolLM2-135M, one GPU.

``endprompt reproduce --preset real-64k`` trains every method from the training preset ``smollm2-135m-64k`` (PI x8,
lr 2e-5 constant, 20 warm-up steps, bf16, gradient checkpointing) with the same tokens per step and the same number
of steps, plus YaRN without training, and evaluates each at 8K, 16K, 32K and 64K on passkey and RULER's synthetic
tasks (RULER's tasks through the model's chat template, `endprompt.evaluate.chat`), recording each method's training
tokens/s and peak GPU memory (the paper's cost claim: 36.52 vs 76.00 GB, 1.41x faster than full-length).

Budgets come from the FLOP model of ``benchmarks/bench_train.py``, ``6 N + 6 n_layers T d`` per token for a physical
length ``T`` (x 4/3 with gradient checkpointing), at an assumed 150 TFLOP/s effective bf16 throughput on one H200
(15% of its dense peak; the run's measured tokens/s replaces the assumption): 40 steps of ~65.5K tokens per method
(2.6M tokens) predict ~39 s for each method at 8212 tokens and ~177 s for full-length at 65536, 5.5 minutes of
training in all (`predicted_seconds`); evaluation (4 prompts per cell, 6 models x 6 tasks x 4 lengths) and loading
take the rest of the ~10 minutes. Not yet run on a GPU.

Each method's results are written to ``<out>/runs/<method>/eval.csv`` when it finishes (a rerun skips finished ones);
``<out>/results.csv`` and ``<out>/costs.csv`` gather them. The tests run exactly this code on CPU with a tiny
random-weight Llama that uses SmolLM2's tokenizer, lengths scaled down 16x and two steps per method.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from endprompt.checkpoint import atomic_write
from endprompt.config import load_config
from endprompt.evaluate import evaluate
from endprompt.evaluate.ruler import SYNTHETIC_TASKS
from endprompt.modeling import extend_config, load_causal_lm, resolve_model
from endprompt.tokenizer import load_tokenizer
from endprompt.train import train

__all__ = ["RealStudyConfig", "REAL_PRESETS", "REAL_METHODS", "run_real_study", "flops_per_token",
           "predicted_seconds"]

REAL_METHODS = {
    "endprompt": {"name": "endprompt"},
    "endprompt-tail": {"name": "endprompt-tail"},
    "endprompt-pose": {"name": "endprompt-pose"},
    "pose": {"name": "pose"},
    "full": {"name": "full"},
    "yarn": None,  # without training
}


@dataclass
class RealStudyConfig:
    """Settings of the real-model study (defaults: the GPU run).

    Attributes:
        model: the base checkpoint (a directory or an alias); its context is the original length L0.
        train_preset: the training configuration every trained method starts from.
        overrides: ``section.field=value`` changes applied to the preset for every method (the CPU smoke uses them).
        steps: optimizer steps per trained method; every method gets the same tokens per step (``step_tokens``).
        eval_samples: prompts per task and length.
    """

    name: str = "real-64k"
    out_dir: str = "results/real-64k"
    model: str = "smollm2-135m"
    train_preset: str = "smollm2-135m-64k"
    overrides: tuple[str, ...] = ()
    target_len: int = 65536
    a: int = 8192
    b: int = 20
    step_tokens: int = 65536
    steps: int = 40
    methods: tuple[str, ...] = tuple(REAL_METHODS)
    eval_lengths: tuple[int, ...] = (8192, 16384, 32768, 65536)
    tasks: tuple[str, ...] = ("passkey", *SYNTHETIC_TASKS)
    eval_samples: int = 4
    eval_dtype: str = "bfloat16"
    batch_tokens: int = 16384
    cache_dir: str = "cache"
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        unknown = set(self.methods) - set(REAL_METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; methods are: {', '.join(REAL_METHODS)}")
        self.methods, self.tasks, self.overrides = tuple(self.methods), tuple(self.tasks), tuple(self.overrides)


REAL_PRESETS = {"real-64k": RealStudyConfig()}


def flops_per_token(n_params: int, n_layers: int, hidden: int, physical_len: int, checkpointing: bool = True) -> float:
    """Training FLOPs per token: ``6 N + 6 n_layers T d`` (causal attention over ``T``), x 4/3 when activations are
    recomputed (gradient checkpointing repeats the forward pass)."""
    return (6 * n_params + 6 * n_layers * physical_len * hidden) * (4 / 3 if checkpointing else 1)


def predicted_seconds(cfg: RealStudyConfig, n_params: int = 134_515_008, n_layers: int = 30, hidden: int = 576,
                      tflops: float = 150.0) -> dict[str, float]:
    """Training time per method predicted by `flops_per_token` at ``tflops`` effective (the defaults: SmolLM2-135M
    on one H200 at 15% of its bf16 dense peak)."""
    out = {}
    for method in cfg.methods:
        if REAL_METHODS[method] is None:
            continue
        physical = cfg.target_len if method == "full" else cfg.a + cfg.b
        tokens = cfg.steps * _micro_batch(cfg, method) * physical
        out[method] = tokens * flops_per_token(n_params, n_layers, hidden, physical) / (tflops * 1e12)
    return out


def _micro_batch(cfg: RealStudyConfig, method: str) -> int:
    physical = cfg.target_len if method == "full" else cfg.a + cfg.b
    return max(1, round(cfg.step_tokens / physical))


def _train_overrides(cfg: RealStudyConfig, method: str, out: Path) -> list[str]:
    recipe = REAL_METHODS[method]
    overrides = [f"model.path={cfg.model}", f"recipe.name={recipe['name']}", f"recipe.a={cfg.a}", f"recipe.b={cfg.b}",
                 f"recipe.target_len={cfg.target_len}", f"optim.max_steps={cfg.steps}",
                 f"optim.micro_batch_size={_micro_batch(cfg, method)}", f"run.out_dir={out}", "run.resume=false",
                 f"run.seed={cfg.seed}", f"run.progress={str(cfg.progress).lower()}", f"data.cache_dir={cfg.cache_dir}"]
    if recipe["name"] == "pose":
        overrides.append(f"recipe.window={cfg.a + cfg.b}")  # PoSE on the same physical length as EndPrompt
    return overrides + list(cfg.overrides)


def _evaluate(model, tokenizer, cfg: RealStudyConfig, method: str) -> pd.DataFrame:
    chat = bool(getattr(tokenizer, "chat_template", None))
    frames = []
    for length in cfg.eval_lengths:
        kw = {"num_samples": cfg.eval_samples, "seed": cfg.seed, "progress": False, "model_name": method,
              "batch_size": max(1, cfg.batch_tokens // length)}  # one long prompt at a time: no padding mask
        for task in cfg.tasks:
            if task == "passkey":  # the PI paper's plain continuation; the chat turn derails a small instruct model
                frames.append(evaluate(model, tokenizer, "passkey", [length], **kw).assign(protocol="plain"))
            else:
                frames.append(evaluate(model, tokenizer, "synthetic", [length], tasks=[task], chat=chat, **kw)
                              .assign(protocol="chat" if chat else "plain"))
    table = pd.concat(frames, ignore_index=True)
    return table[table["metric"] != "k_max"]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_real_study(cfg: RealStudyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate every method; returns (results, costs) and writes them under ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(asdict(cfg) | {"predicted_train_s": predicted_seconds(cfg)}, indent=2))
    base = resolve_model(cfg.model)
    tokenizer = load_tokenizer(None, base)
    dtype = getattr(torch, cfg.eval_dtype)
    rows, costs = [], []
    for method in cfg.methods:
        run_dir = out / "runs" / method
        if not (run_dir / "eval.csv").exists():
            start = time.perf_counter()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()  # each method's own peak
            if REAL_METHODS[method] is None:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(base)
                extend_config(config, method, cfg.target_len)
                model = load_causal_lm(base, dtype=dtype, config=config)
                cost = {"train_tokens": 0, "steps": 0, "wall_time_s": 0.0, "tokens_per_s": np.nan,
                        "peak_memory_gb": np.nan, "final_loss": np.nan}
            else:
                result = train(load_config(cfg.train_preset, overrides=_train_overrides(cfg, method, run_dir)))
                model = load_causal_lm(result.final_dir, dtype=dtype)
                cost = {"train_tokens": result.tokens, "steps": result.steps, "wall_time_s": result.wall_time_s,
                        "tokens_per_s": result.tokens_per_s, "peak_memory_gb": result.peak_memory_bytes / 2**30,
                        "final_loss": result.final_loss}
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # train's last checkpoint (with optimizer)
                shutil.rmtree(run_dir / "final", ignore_errors=True)  # keep metrics and config, not weights
            table = _evaluate(model.to(_device()).eval(), tokenizer, cfg, method)
            del model
            cost["eval_s"] = time.perf_counter() - start - cost["wall_time_s"]
            table = table.assign(method=method, **cost)
            tmp = run_dir / "eval.csv.tmp"
            run_dir.mkdir(parents=True, exist_ok=True)
            table.to_csv(tmp, index=False)
            tmp.replace(run_dir / "eval.csv")  # atomic: a method's results are complete or absent
        done = pd.read_csv(run_dir / "eval.csv")
        rows.append(done)
        costs.append({"method": method, **{k: done[k].iloc[0] for k in ("train_tokens", "steps", "wall_time_s",
                                                                          "tokens_per_s", "peak_memory_gb",
                                                                          "final_loss", "eval_s")}})
    results = pd.concat(rows, ignore_index=True)
    cost_table = pd.DataFrame(costs)
    atomic_write(out / "results.csv", lambda tmp: results.to_csv(tmp, index=False))  # a killed rewrite: the old file
    atomic_write(out / "costs.csv", lambda tmp: cost_table.to_csv(tmp, index=False))
    return results, cost_table

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

Results: ``<out>/results.csv`` (seed, method, task, length, metric, score, n, status, cost columns) and
``<out>/costs.csv``; figures by `endprompt.plotting` from those tables (notebook 02).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from endprompt.checkpoint import atomic_write
from endprompt.claims import judge_claims
from endprompt.config import RecipeConfig, TrainConfig, load_config
from endprompt.data import check_doc_layout
from endprompt.evaluate import evaluate
from endprompt.modeling import extend_config
from endprompt.recipe import EOT_CUE, recipe_spec
from endprompt.sharedllm.model import SharedLLMConfig
from endprompt.shipped_arms import shipped_arm
from endprompt.study_base import StudyBase, base_run_dir, pretrain_base
from endprompt.train import train

logger = logging.getLogger(__name__)

__all__ = ["StudyConfig", "Extension", "Method", "PRESETS", "METHODS", "TRAINED", "TRAINING_FREE", "extension_config",
           "run_study", "collect_study", "base_scores", "load_trained"]

@dataclass(frozen=True)
class Method:
    """A trained arm of the study: the fields of its `endprompt.config.RecipeConfig` (a, b and the target come from the
    study), its learning rate where it is tuned apart (None = ``Extension.lr``), its LoRA adapters' learning rate
    (`endprompt.config.OptimConfig.adapter_lr`; None = the same), and its position scaling (a type of
    `endprompt.rope.ROPE_SCALINGS` at the study's factor; the paper's and the other arms' is PI, "linear").

    For a recipe whose spec trains `endprompt.sharedllm` (``RecipeSpec.sharedllm``): ``sharedllm`` holds fields of
    `endprompt.sharedllm.SharedLLMConfig`; the study sets the chunk to ``L0 / 4`` and the local window to ``L0``, and
    trains on ``L0 + context_chunks`` chunks (no RoPE scaling: the upper model never reads a position past ``L0``)."""

    recipe: dict
    lr: float | None = None
    adapter_lr: float | None = None
    sharedllm: dict | None = None
    context_chunks: int = 4
    rope_type: str = "linear"

    @property
    def is_sharedllm(self) -> bool:
        """The trained model is a SharedLLM (saved by `save_sharedllm`, read back by `load_sharedllm`)."""
        return recipe_spec(self.recipe["name"]).sharedllm


TRAINED = {
    "endprompt": Method({"name": "endprompt"}),
    # YaRN instead of PI (issue 13): YaRN keeps the fast rotary pairs unscaled (sigma = 1 for them, notebook 01), so
    # the paper's smoothing argument, made for PI, does not cover it; full-yarn is its full-length reference
    "endprompt-yarn": Method({"name": "endprompt"}, rope_type="yarn"),
    "full-yarn": Method({"name": "full"}, rope_type="yarn"),
    "endprompt-end": Method({"name": "endprompt", "cues": ("End.",)}),
    "endprompt-eot": Method({"name": "endprompt", "cues": (EOT_CUE,)}),
    "endprompt-tail": Method({"name": "endprompt-tail"}),
    "endprompt-random": Method({"name": "endprompt-random"}),
    "endprompt-pose": Method({"name": "endprompt-pose"}),
    "pose": Method({"name": "pose"}),
    "full": Method({"name": "full"}),
    # a tuning choice: rank-8 adapters on the 1.1M-parameter byte base barely move at the study's 5e-4, so the
    # adapters train at 2e-3; the weights LongLoRA trains in full (embeddings, norms) keep the study's rate, as in
    # LongLoRA, where they share full fine-tuning's (until 2026-11-30 they trained at 2e-3 too: the byte study's row)
    "longlora": Method({"name": "longlora"}, adapter_lr=2e-3),
    # SharedLLM at the miniature's scale: 64-token chunks (L0/4, the paper's 1024 at 8K), trained on L0 + 4 chunks.
    # The paper's tree (height 3, beta 8) on a 1024-token chunk has 128-token leaves; on 64 byte tokens it would leave
    # 8-byte leaves keeping 2 tokens each, so height 2 (16-token leaves, about a passkey sentence's digits and words)
    # and beta 4 (alpha = 6, 3: 5 tokens kept of each of the 3 kept nodes, 15 per chunk, a ratio of 4.3 after
    # rounding). M = 2 of 4 layers, not the paper's 1/8 (M = 1): the first layer's keys and values are projections of
    # bare token embeddings, so with M = 1 the compressor would mix nothing.
    "sharedllm": Method({"name": "sharedllm"}, sharedllm={"height": 2, "beta": 4.0, "num_injected_layers": 2}),
}
TRAINING_FREE = {"pi": "linear", "dynamic-ntk": "dynamic", "yarn": "yarn"}
METHODS = tuple(TRAINED) + tuple(TRAINING_FREE)


@dataclass(frozen=True)
class Extension:
    """How every trained arm is extended: the same position scaling and the same physical-token budget for each.

    Attributes:
        factor: the extension, ``target_len = factor * L0`` (the paper's 8, 8K -> 64K); every arm uses PI at it.
        tokens: physical training tokens per run, the same for every method (matched budgets).
        batch_tokens: physical tokens per optimizer step (micro-batch = ``batch_tokens // physical length``).
        docs: documents of the base's pretraining mixture generated for the run.
        shared_documents: every method of a seed trains on one set of documents of varying length, ``L0/4`` to
            ``factor * L0`` (`endprompt.mixture.build_shared_mixture`), each recipe cutting its samples from them as
            from natural text, so that the methods differ only in what their recipes do (issue 13). False: the
            mixture is built at each recipe's own document length (the committed study; full-length then sees only
            long examples and the cue recipes only short ones).
        doc_layout: the shared documents' layout (`endprompt.data.DOC_LAYOUTS`): ``"log-part"`` (study-bpe's: few
            key-to-question distances above 4 L0) or ``"uniform-whole"`` (every distance up to ``factor * L0``).
        lr, schedule, warmup: the optimizer's schedule (a method's own ``Method.lr`` replaces ``lr``).
    """

    factor: int = 8
    tokens: int = 2_000_000
    batch_tokens: int = 4096
    docs: int = 4096
    lr: float = 5e-4
    schedule: str = "constant"
    warmup: int = 20
    shared_documents: bool = False
    doc_layout: str = "log-part"

    def __post_init__(self):
        from endprompt.config import SCHEDULES

        check_doc_layout(self.doc_layout, "Extension.doc_layout")
        if self.doc_layout != "log-part" and not self.shared_documents:
            raise ValueError(f"Extension.doc_layout={self.doc_layout!r} lays out the shared documents; set "
                             "shared_documents=True or leave doc_layout at 'log-part'")
        if self.factor < 2 or min(self.tokens, self.batch_tokens, self.docs) < 1 or self.lr <= 0 or self.warmup < 0:
            raise ValueError(f"{self}: factor must be >= 2, tokens, batch_tokens and docs >= 1, lr > 0, warmup >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")


@dataclass
class StudyConfig:
    """Settings of the small-scale study.

    Attributes:
        base: the base model and its pretraining (`endprompt.study_base.StudyBase`: the shipped byte-level base by
            default); its ``L0`` is the base's context (the paper's 8K).
        extension: the extension to ``extension.factor * L0`` (64K) and its training budget (`Extension`).
        b_cue: the largest end prompt (the byte tokenizer makes the paper's first cue 50 tokens); the text body of the
            cue recipes is ``L0 - b_cue`` so that a sample never exceeds ``L0``.
        b_tail: terminal tokens of the own-tail and random variants (the authors' 20).
        eval_samples: prompts per task and length; needle_samples per grid cell.
        curve: the fractions of the budget at which every trained arm is evaluated (learning curves). The arm trains
            once, continued from point to point (equal to one run for the constant schedule, which curves require);
            every point's rows go to ``curves.csv``, the last point's (1.0) to ``results.csv``.
        shipped: arms evaluated from the final models a study trained and the repository ships
            (`endprompt.shipped_arms.SHIPPED_ARMS`), beside the arms trained here: the demo's view of a budget it
            cannot train in its time. They must extend this study's base by this study's factor.
        keep_weights: keep each trained arm's final model in ``runs/<method>-seed<seed>/final`` (a stock checkpoint
            directory, about 6 MB at the study's scale) when the arm is done, for evaluations the study does not make
            and for shipping; the intermediate checkpoints are removed either way.
    """

    name: str = "demo"
    out_dir: str = "results/demo"
    cache_dir: str = "cache"
    base: StudyBase = field(default_factory=StudyBase)
    extension: Extension = field(default_factory=Extension)
    b_cue: int = 52
    b_tail: int = 20
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0,)
    eval_lengths: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    eval_samples: int = 16
    needle_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    needle_samples: int = 2
    tasks: tuple[str, ...] = ("niah_single_1",)
    curve: tuple[float, ...] = (1.0,)
    shipped: tuple[str, ...] = ()
    keep_weights: bool = False
    progress: bool = True

    def __post_init__(self):
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; methods are: {', '.join(METHODS)}")
        for name in self.shipped:
            shipped_arm(name)  # an unknown name: a clear error listing the shipped arms
        if self.L0 - self.b_cue < 8:
            raise ValueError(f"L0={self.L0} leaves no room for text next to a {self.b_cue}-token end prompt")
        curve = tuple(self.curve)
        if not curve or curve != tuple(sorted(set(curve))) or curve[0] <= 0 or curve[-1] != 1.0:
            raise ValueError(f"curve={curve}: give increasing fractions of the budget in (0, 1] ending at 1.0, e.g. "
                             "(0.125, 0.25, 0.5, 1.0)")
        if len(curve) > 1 and self.extension.schedule != "constant":
            raise ValueError(f"curve={curve} continues each run from point to point, which equals one run only for "
                             f"the constant schedule; extension.schedule={self.extension.schedule!r}: use 'constant' "
                             "or curve=(1.0,)")

    @property
    def L0(self) -> int:
        return self.base.L0

    @property
    def target_len(self) -> int:
        return self.L0 * self.extension.factor


PRESETS = {
    # the main job (make demo, <= 15 min on 2 CPU cores): study-bpe's base and extension, seed 1. EndPrompt and
    # full-length trained here for 1/8 of the study's budget (its first learning-curve point: retrieval has not
    # re-formed yet), beside the two arms the study trained for all of it (shipped: full-length retrieves at the
    # target), PI and YaRN without training; evaluated up to the target
    "demo": StudyConfig(name="demo", out_dir="results/demo", base=StudyBase(vocab_size=2048),
                        extension=Extension(tokens=1_024_000, shared_documents=True), b_cue=19,
                        methods=("endprompt", "full", "pi", "yarn"), shipped=("full@8M", "endprompt@8M"), seeds=(1,),
                        eval_lengths=(128, 256, 512, 1024, 2048), eval_samples=16, needle_samples=2,
                        needle_depths=(0.0, 0.5, 1.0)),
    "study": StudyConfig(name="study", out_dir="results/study", seeds=(0, 1, 2)),
    # the next study (issue 13): the shipped BPE base C3 (the byte base's settings with BPE 2048; results/testbed/), the
    # budget that re-forms retrieval under PI x8 there (8M tokens: 2M re-formed nothing), one set of documents for every
    # arm, learning curves. b_cue: the cue set's longest cue is 17 tokens at vocabulary 2048 (+2, as 50 + 2 for bytes)
    "study-bpe": StudyConfig(name="study-bpe", out_dir="results/study-bpe", base=StudyBase(vocab_size=2048),
                             extension=Extension(tokens=8_192_000, shared_documents=True), b_cue=19, seeds=(0, 1, 2),
                             curve=(0.125, 0.25, 0.5, 1.0), keep_weights=True),
    # study-bpe on documents whose retrieval examples reach every key-to-question distance up to the target: in
    # study-bpe's corpus 1.6% of the examples span more than 4 L0 and 0.1% more than 6 L0, where half of the
    # passkey prompts at the target put their key (data.DOC_LAYOUTS; experiments/study/extension_corpus_stats.py)
    "study-bpe-long": StudyConfig(name="study-bpe-long", out_dir="results/study-bpe-long",
                                  base=StudyBase(vocab_size=2048),
                                  extension=Extension(tokens=8_192_000, shared_documents=True,
                                                      doc_layout="uniform-whole"),
                                  b_cue=19, seeds=(0, 1, 2), curve=(0.125, 0.25, 0.5, 1.0), keep_weights=True),
    "smoke": StudyConfig(name="smoke", out_dir="results/smoke", base=StudyBase(steps=4, docs=64, batch=4),
                         extension=Extension(tokens=2 * 2048, batch_tokens=2048, docs=32),
                         methods=("endprompt", "pose", "full", "longlora", "pi"), seeds=(0,),
                         eval_lengths=(256, 2048), eval_samples=1, needle_samples=1, needle_depths=(0.5,),
                         tasks=("niah_single_1",), progress=False),
}


def _train_config(cfg: StudyConfig, out_dir: Path, recipe: RecipeConfig, base: Path, optim: dict,
                  seed: int, rope_type: str = "linear", **sections) -> TrainConfig:
    """An extension run of the study: the tiny-cpu preset with the base (its weights, tokenizer and context) and the
    study's data and run settings, section by section."""
    preset = load_config("tiny-cpu")
    return TrainConfig(
        model=replace(preset.model, path=str(base), tokenizer=None, original_len=cfg.L0),
        rope=replace(preset.rope, rope_type=rope_type),
        data=replace(preset.data, source=cfg.base.mixture, cache_dir=cfg.cache_dir, mixture_docs=cfg.extension.docs,
                     doc_len_range=(cfg.L0 // 4, cfg.target_len) if cfg.extension.shared_documents else None,
                     doc_layout=cfg.extension.doc_layout),
        recipe=recipe,
        optim=replace(preset.optim, **optim),
        run=replace(preset.run, out_dir=str(out_dir), log_every=50, progress=cfg.progress, save_every=0, seed=seed,
                    resume=True),  # a killed arm, or the next point of a learning curve, continues its run exactly
        **sections)


SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "study-bases"
"""Base models that the repository ships (made by `pretrain_base`; the directory is named by `StudyBase.key`), so the
demo need not pretrain."""


def _base(cfg: StudyConfig) -> Path:
    """Pretrain the base model, or reuse a cached or shipped one with the same settings; returns its directory."""
    if (SHIPPED / cfg.base.key / "config.json").exists():
        return SHIPPED / cfg.base.key
    return pretrain_base(cfg.base, base_run_dir(cfg.base, cfg.cache_dir), cfg.cache_dir, cfg.progress)[1]


def extension_config(cfg: StudyConfig, method: str, base: Path, seed: int, out: Path) -> TrainConfig:
    """The training configuration of one trained arm: matched physical-token budgets, PI at ``factor``."""
    spec = TRAINED[method]
    b = cfg.b_cue if recipe_spec(spec.recipe["name"]).uses_cues else cfg.b_tail
    target, sections = cfg.target_len, {}
    if spec.is_sharedllm:
        shared = SharedLLMConfig(**{"chunk_size": cfg.L0 // 4, "local_window": cfg.L0, **(spec.sharedllm or {})})
        target, sections = cfg.L0 + spec.context_chunks * shared.chunk_size, {"sharedllm": shared}
    recipe = RecipeConfig(a=cfg.L0 - b, b=b, target_len=target, **spec.recipe)
    ext = cfg.extension
    micro = max(1, ext.batch_tokens // recipe.physical_len)
    optim = {"micro_batch_size": micro, "max_steps": max(1, round(ext.tokens / (micro * recipe.physical_len))),
             "lr": spec.lr or ext.lr, "adapter_lr": spec.adapter_lr, "schedule": ext.schedule,
             "warmup_steps": ext.warmup}
    return _train_config(cfg, out, recipe, base, optim, seed, spec.rope_type, **sections)


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
    atomic_write(out / "study.json", lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=2)))
    start = time.perf_counter()
    base = _base(cfg)
    tokenizer = load_tokenizer(None, base)  # the base's own (byte-level for the shipped base)
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


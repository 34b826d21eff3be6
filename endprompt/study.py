"""The small-scale study's settings, typed: its arms (`Method`, the registry `TRAINED`; `TRAINING_FREE`), the extension
every trained arm gets (`Extension`: the factor, the matched physical-token budget, the shared documents, the
schedule), the study (`StudyConfig`) and its presets (`PRESETS`), and the training configuration of one arm
(`extension_config`). `endprompt.reproduce` runs a study from them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from endprompt.config import RecipeConfig, TrainConfig, load_config
from endprompt.data import check_doc_layout
from endprompt.recipe import DEFAULT_CUES, EOT_CUE, recipe_spec, tokenize_cues
from endprompt.sharedllm.model import SharedLLMConfig
from endprompt.shipped_arms import shipped_arm
from endprompt.study_base import StudyBase

__all__ = ["Method", "TRAINED", "TRAINING_FREE", "METHODS", "Extension", "StudyConfig", "PRESETS", "extension_config",
           "CUE_MARGIN", "cue_budget"]


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
        b_cue: the largest end prompt; the text body of the cue recipes is ``L0 - b_cue`` so that a sample never
            exceeds ``L0``. It depends on the base's tokenizer (the paper's first cue is 50 byte tokens, 17 BPE-2048
            tokens): None takes it from the tokenizer when the study runs (`StudyConfig.for_tokenizer`, `cue_budget`),
            and a value given must equal it.
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
    b_cue: int | None = None
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
        if self.b_cue is not None and self.L0 - self.b_cue < 8:
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
    def cue_methods(self) -> tuple[str, ...]:
        """The trained arms whose terminal segment is an end prompt of the cue set (their body is ``L0 - b_cue``)."""
        return tuple(m for m in self.methods if m in TRAINED and recipe_spec(TRAINED[m].recipe["name"]).uses_cues)

    def for_tokenizer(self, tokenizer) -> StudyConfig:
        """This study with the end prompt's budget of the base's ``tokenizer`` (`cue_budget`): ``b_cue`` filled in when
        unset; a given ``b_cue`` that contradicts the tokenizer is refused (a larger one would silently shorten every
        cue recipe's text body and its physical tokens, a smaller one fail on the longest cue)."""
        b = cue_budget(tokenizer)
        if self.b_cue is None:
            return replace(self, b_cue=b)
        if self.b_cue != b:
            raise ValueError(f"b_cue={self.b_cue}, but the base's tokenizer makes the longest end prompt "
                             f"{b - CUE_MARGIN} tokens, so its budget is {b}: set b_cue={b} or leave it unset (None) "
                             "to take it from the tokenizer")
        return self

    @property
    def target_len(self) -> int:
        return self.L0 * self.extension.factor


CUE_MARGIN = 2
"""Tokens of the end prompt's budget beyond the longest cue (the committed studies: 50 + 2 byte tokens, 17 + 2 BPE)."""


def cue_budget(tokenizer) -> int:
    """``b`` of the cue recipes with ``tokenizer``: the longest cue of the paper's cue set (`DEFAULT_CUES`, of which
    every cue arm's set is a part) plus `CUE_MARGIN`, so that the text body ``L0 - b`` is as long as it allows."""
    return max(len(ids) for ids in tokenize_cues(DEFAULT_CUES, tokenizer)) + CUE_MARGIN


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
    "study": StudyConfig(name="study", out_dir="results/study", b_cue=52, seeds=(0, 1, 2)),
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


def extension_config(cfg: StudyConfig, method: str, base: Path, seed: int, out: Path) -> TrainConfig:
    """The training configuration of one trained arm: matched physical-token budgets, PI at ``factor``."""
    spec = TRAINED[method]
    uses_cues = recipe_spec(spec.recipe["name"]).uses_cues
    if uses_cues and cfg.b_cue is None:
        raise ValueError(f"StudyConfig.b_cue is unset, so {method!r} has no end-prompt budget: resolve it from the "
                         "base's tokenizer with cfg.for_tokenizer(tokenizer) (run_study does)")
    b = cfg.b_cue if uses_cues else cfg.b_tail
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

"""Typed, validated training configuration: dataclasses, YAML presets, ``section.field=value`` overrides.

    cfg = load_config(preset="tiny-cpu", overrides=["recipe.name=endprompt", "optim.lr=1e-3"])
    result = endprompt.train.train(cfg)

Presets live in ``endprompt/presets/<name>.yaml``; a YAML file of the same shape can be given instead (``path=``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import yaml

from endprompt import rope as R
from endprompt.data import check_doc_layout, check_doc_len_range, parse_mixture
from endprompt.recipe import Recipe
from endprompt.sharedllm.model import SharedLLMConfig

__all__ = ["ModelConfig", "RopeConfig", "DataConfig", "RecipeConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "PRESETS_DIR", "list_presets", "load_config", "apply_overrides", "steps_for_budget", "RESUMABLE_CHANGES",
           "resume_conflicts"]

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
STRATEGIES = ("auto", "ddp", "fsdp2", "deepspeed")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class ModelConfig:
    """The model to train.

    Attributes:
        path: a local checkpoint directory (``from_pretrained``) or a model alias such as ``smollm2-135m``
            (`endprompt.modeling.resolve_model`); None builds a tiny Llama from the fields below.
        tokenizer: "byte" (endprompt's built-in byte-level tokenizer), a tokenizer directory or a model alias; None =
            the checkpoint's own tokenizer when ``path`` is set, else "byte". A tokenizer with more tokens than the
            checkpoint's vocabulary is an error.
        original_len: the context the base model was pretrained at; None = read from the checkpoint's config when
            ``path`` is set, else 256 (the tiny model's).
        dtype: parameter dtype; bf16 training of a float32 model goes through ``run.mixed_precision`` instead.
        attn_implementation: "sdpa" (default), "eager", or "flash_attention_2" (needs the ``gpu`` extra).
        gradient_checkpointing: recompute activations in the backward pass (the paper's run uses it).
        lora_r: LoRA rank; 0 trains every weight (the paper's full fine-tuning). ``longlora`` uses LoRA+ at r=8.
        lora_trainable: modules trained in full beside the adapters (LongLoRA's "LoRA+": embeddings and norms).
        config_overrides: fields set on the checkpoint's transformers config before loading (e.g. Mistral's
            ``sliding_window: null``).
    """

    path: str | None = None
    tokenizer: str | None = None
    original_len: int | None = None
    vocab_size: int = 260
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    rope_theta: float = 10000.0
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_trainable: tuple[str, ...] = ("embed_tokens", "norm")
    config_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        _choice("model.dtype", self.dtype, DTYPES)
        _choice("model.attn_implementation", self.attn_implementation, ATTENTION)
        if self.path is None:  # a model built from scratch: the tiny model's defaults (a checkpoint brings its own)
            self.tokenizer = "byte" if self.tokenizer is None else self.tokenizer
            self.original_len = 256 if self.original_len is None else self.original_len
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size={self.hidden_size} must be divisible by model.num_heads="
                             f"{self.num_heads}")
        if self.lora_r < 0:
            raise ValueError(f"model.lora_r must be >= 0 (0 = full fine-tuning), got {self.lora_r}")


@dataclass
class RopeConfig:
    """The RoPE scaling applied for the extension (ignored by ``pretrain``).

    Attributes:
        rope_type: a type of `endprompt.rope.ROPE_SCALINGS` ("linear" = PI, the paper's choice).
        factor: the scale s; None = ``recipe.target_len / model.original_len``. The authors' scripts use
            ``ceil(target / original)``; a given factor must satisfy ``factor * original >= target``.
        params: extra `RopeScaling` fields (e.g. ``beta_fast`` for yarn, ``short_factor`` for longrope).
    """

    rope_type: str = "linear"
    factor: float | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.rope_type not in R.ROPE_SCALINGS:
            raise ValueError(f"unknown rope.rope_type {self.rope_type!r}; valid types are: "
                             f"{', '.join(sorted(R.ROPE_SCALINGS))}")


@dataclass
class DataConfig:
    """Where the training text comes from.

    Attributes:
        source: "builtin" (the Python standard library's sources, present on every machine: see `endprompt.data`),
            a comma-separated list of local files/directories (.txt, .jsonl, .parquet), or a synthetic-retrieval
            mixture "mixture:natural=0.5,passkey=0.3,..." (`endprompt.mixture`).
        text_field: the text column of JSONL/parquet records.
        concat: concatenate documents (EOS-separated) and cut them into samples of the recipe's document length, as the
            authors' pre-tokenised 8K chunks; False samples whole documents (the "shrink" rule handles short ones).
        max_documents: use at most this many documents (None = all).
        cache_dir: where tokenized corpora are cached.
        mixture_docs: documents generated for a mixture source.
        doc_len: mixture document length; None = the document tokens of one full-size sample
            (`endprompt.recipe.full_doc_len`: the body ``a`` for the cue recipes, else the physical length), so every
            sample is one whole document. Used when ``doc_len_range`` is None.
        doc_len_range: ``(min_len, max_len)``: one shared mixture of documents of varying length for every recipe
            (`endprompt.mixture.build_shared_mixture`: log-uniform lengths, EOS-separated), cut into samples as natural
            text is (``concat``); the same seed gives every method token-identical documents. None = the fixed-length
            mixture at ``doc_len`` or the recipe's own length, one whole document per sample (the committed study).
        doc_layout: how the shared mixture lays out its documents, a key of `endprompt.data.DOC_LAYOUTS`:
            ``"log-part"`` (log-uniform lengths, examples a quarter to all of their document; study-bpe's corpus) or
            ``"uniform-whole"`` (uniform lengths, examples filling their document: long distances as common as short).
    """

    source: str = "builtin"
    text_field: str = "text"
    concat: bool = True
    max_documents: int | None = None
    cache_dir: str = "cache"
    mixture_docs: int = 4096
    doc_len: int | None = None
    doc_len_range: tuple[int, int] | None = None
    doc_layout: str = "log-part"

    def __post_init__(self):
        check_doc_layout(self.doc_layout)
        if self.source.startswith("mixture:"):
            parse_mixture(self.source)
        if self.doc_len is not None and self.doc_len < 1:
            raise ValueError(f"data.doc_len must be >= 1 (or null: the recipe's own length), got {self.doc_len}")
        if self.doc_len_range is None:
            return
        self.doc_len_range = check_doc_len_range(self.doc_len_range)
        if not self.source.startswith("mixture:"):
            raise ValueError(f"data.doc_len_range={list(self.doc_len_range)} sets the length of generated mixture "
                             f"documents, but data.source={self.source!r} is not a mixture; set "
                             "data.doc_len_range=null or a source like 'mixture:natural=0.5,passkey=0.5'")
        if self.doc_len is not None:
            raise ValueError(f"data.doc_len={self.doc_len} and data.doc_len_range={list(self.doc_len_range)} both set "
                             "the mixture's document length; keep one (set the other to null)")


@dataclass(frozen=True)
class RecipeConfig(Recipe):
    """Which samples to train on: a `endprompt.recipe.Recipe` (every field is documented there; the name is a key of
    the recipe registry `endprompt.recipe.RECIPES`), with small defaults, plus what only training needs.

    Attributes:
        s2_group_ratio: LongLoRA's S2-Attn group size as a share of the sequence (``longlora`` only).
    """

    a: int = 224
    b: int = 16
    target_len: int = 2048
    s2_group_ratio: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.s2_group_ratio <= 1:
            raise ValueError(f"recipe.s2_group_ratio must be in (0, 1], got {self.s2_group_ratio}")


@dataclass
class OptimConfig:
    """Optimisation. The paper: lr 2e-5, constant schedule with 20 warm-up steps, weight decay 0, 1 epoch of ~1B tokens.

    Attributes:
        micro_batch_size: sequences per process per forward pass.
        grad_accum: micro-batches per optimizer step; the global batch is micro_batch_size * grad_accum * processes.
        max_steps: optimizer steps; if None, derived from ``train_tokens``.
        train_tokens: token budget (physical tokens, global); used when ``max_steps`` is None.
        adapter_lr: learning rate of the LoRA adapters, apart from ``lr`` (None: ``lr`` for every trained weight, as
            LongLoRA trains its adapters, embeddings and norms). Adapters are commonly trained at a higher rate than
            full fine-tuning; a run that trains no adapters refuses it.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_steps: int = 0
    micro_batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    max_steps: int | None = 100
    train_tokens: int | None = None
    adapter_lr: float | None = None

    def __post_init__(self):
        _choice("optim.schedule", self.schedule, SCHEDULES)
        self.betas = tuple(self.betas)
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.adapter_lr is not None and self.adapter_lr <= 0:
            raise ValueError(f"optim.adapter_lr must be > 0 (or None: optim.lr), got {self.adapter_lr}")
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("optim.micro_batch_size and optim.grad_accum must be >= 1")
        if self.max_steps is None and self.train_tokens is None:
            raise ValueError("set optim.max_steps or optim.train_tokens")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"optim.max_steps must be >= 1, got {self.max_steps}")


@dataclass
class RunConfig:
    """Where and how the run executes.

    Attributes:
        out_dir: run directory (metrics.jsonl, checkpoints/, final/).
        save_every: write an atomic checkpoint every this many steps (0 = only the final model).
        resume: continue from the newest checkpoint in ``out_dir`` if there is one.
        stop_after: stop (as if interrupted) after this many steps in this invocation; the run stays resumable.
        mixed_precision: "no" or "bf16" autocast (accelerate).
        strategy: "auto" (whatever ``accelerate launch`` configured: one device, DDP, FSDP2 or DeepSpeed on GPUs),
            "ddp", "fsdp2" (on CPU endprompt shards with torch's fully_shard itself), "deepspeed".
        num_processes, num_machines: for the printed launch command.
    """

    out_dir: str = "runs/tiny"
    seed: int = 0
    save_every: int = 0
    log_every: int = 10
    resume: bool = True
    stop_after: int | None = None
    mixed_precision: str = "no"
    strategy: str = "auto"
    num_processes: int = 1
    num_machines: int = 1
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self):
        _choice("run.mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        _choice("run.strategy", self.strategy, STRATEGIES)


@dataclass
class TrainConfig:
    """A whole training run: ``train(cfg)`` takes exactly this."""

    model: ModelConfig = field(default_factory=ModelConfig)
    rope: RopeConfig = field(default_factory=RopeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # used by recipe "sharedllm" only: the tree, M, the local window (`endprompt.sharedllm.SharedLLMConfig`)
    sharedllm: SharedLLMConfig = field(default_factory=SharedLLMConfig)

    def __post_init__(self):
        r, m = self.recipe, self.model
        if self.optim.adapter_lr is not None and not (m.lora_r or r.spec.default_lora_r):
            raise ValueError(f"optim.adapter_lr={self.optim.adapter_lr} is the LoRA adapters' learning rate, but this "
                             f"run trains no adapters (model.lora_r=0 and recipe {r.name!r} adds none): drop "
                             "optim.adapter_lr or set model.lora_r")
        if r.spec.sharedllm:
            self._check_sharedllm()
            return
        if not r.spec.extends_positions:
            if m.original_len is not None and r.target_len != m.original_len:
                raise ValueError(f"recipe 'pretrain' trains at the model's own length: recipe.target_len="
                                 f"{r.target_len} must equal model.original_len={m.original_len}")
            return
        if m.original_len is not None and r.target_len <= m.original_len:
            raise ValueError(f"recipe.target_len={r.target_len} must exceed model.original_len={m.original_len} "
                             "to extend the context")
        if self.rope.rope_type == "default":
            raise ValueError("rope.rope_type 'default' does not extend the context; use linear (PI), ntk, yarn, ...")
        if r.spec.s2_attention and m.attn_implementation == "flash_attention_2":
            raise ValueError("recipe 'longlora' trains with S2-Attn (sdpa inside); set model.attn_implementation=sdpa")

    def _check_sharedllm(self) -> None:
        r, m, s = self.recipe, self.model, self.sharedllm
        if r.target_len <= s.window:
            raise ValueError(f"recipe 'sharedllm' trains on recipe.target_len={r.target_len} tokens, which must exceed "
                             f"sharedllm.local_window={s.window} so that every sample has context chunks (e.g. "
                             f"target_len = local_window + 3 * chunk_size = {s.window + 3 * s.chunk_size})")
        if m.original_len is not None and s.window > m.original_len:
            raise ValueError(f"sharedllm.local_window={s.window} exceeds the base's context model.original_len="
                             f"{m.original_len}: the upper model would read positions it was not trained on")
        if m.lora_r or m.gradient_checkpointing:
            raise ValueError("recipe 'sharedllm' trains the cross-attention and the top layers in full, without "
                             "gradient checkpointing: set model.lora_r=0 and model.gradient_checkpointing=false")
        if s.kl_coef:
            raise ValueError("sharedllm.kl_coef is applied by SharedLLM.forward(labels=...); train(cfg) computes its "
                             "loss from the logits: set sharedllm.kl_coef=0")

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- loading --------------------------------------------------------------------------------------------------------


def _choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, valid))}")


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _coerce(section: str, name: str, annotation, value):
    """Turn a YAML/CLI value into the field's type (tuples from lists, ints/floats/bools from strings)."""
    if value is None:
        return None
    origin, args = get_origin(annotation), get_args(annotation)
    if args and type(None) in args and origin is not tuple:  # Optional[X]
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(section, name, inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [v.strip() for v in str(value).split(",") if v.strip()]
        elem = args[0] if args else str
        return tuple(_coerce(section, name, elem, v) for v in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{section}.{name} must be true or false, got {value!r}")
    if annotation is int and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise ValueError(f"{section}.{name} must be an integer, got {value!r}") from None
            if not f.is_integer():
                raise ValueError(f"{section}.{name} must be an integer, got {value!r}") from None
            return int(f)
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{section}.{name} must be a number, got {value!r}") from None
    if origin is dict or annotation is dict:
        return dict(value) if isinstance(value, dict) else yaml.safe_load(str(value))
    return value


def _build(data: dict) -> TrainConfig:
    sections = {}
    hints = get_type_hints(TrainConfig)
    unknown = set(data) - set(hints)
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; sections are: {', '.join(hints)}")
    for section, cls in hints.items():
        values = dict(data.get(section) or {})
        types = get_type_hints(cls)
        bad = set(values) - set(types)
        if bad:
            raise ValueError(f"unknown field(s) {sorted(bad)} in section {section!r}; fields are: {', '.join(types)}")
        sections[section] = cls(**{k: _coerce(section, k, types[k], v) for k, v in values.items()})
    return TrainConfig(**sections)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.field=value`` strings (values parsed as YAML: ``8``, ``1e-3``, ``[a, b]``, ``null``)."""
    data = {k: dict(v or {}) for k, v in data.items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.field=value (e.g. optim.lr=1e-3)")
        key, raw = item.split("=", 1)
        section, name = key.split(".", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        data.setdefault(section, {})[name] = value
    return data


def load_config(preset: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None,
                **sections) -> TrainConfig:
    """A validated `TrainConfig` from a named preset or a YAML file, then overrides, then keyword sections.

    ``sections`` are dicts merged into the sections, e.g. ``load_config("tiny-cpu", optim={"max_steps": 2})``.
    """
    if preset and path:
        raise ValueError("give a preset name or a YAML path, not both")
    data: dict = {}
    if preset:
        file = PRESETS_DIR / f"{preset}.yaml"
        if not file.exists():
            raise ValueError(f"unknown preset {preset!r}; presets are: {', '.join(list_presets())}")
        data = yaml.safe_load(file.read_text()) or {}
    elif path:
        if not Path(path).exists():
            raise FileNotFoundError(f"no config file at {str(path)!r}")
        data = yaml.safe_load(Path(path).read_text()) or {}
    data = apply_overrides(data, overrides or [])
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return _build(data)


def steps_for_budget(cfg: TrainConfig, physical_len: int, world_size: int = 1) -> int:
    """Optimizer steps for the token budget: ``ceil(train_tokens / (global batch * physical length))``."""
    if cfg.optim.max_steps is not None:
        return cfg.optim.max_steps
    per_step = cfg.optim.micro_batch_size * cfg.optim.grad_accum * world_size * physical_len
    return max(1, math.ceil(cfg.optim.train_tokens / per_step))



RESUMABLE_CHANGES = frozenset({
    "optim.max_steps", "optim.train_tokens",  # more steps (learning curves, a longer budget): constant schedule only
    "model.path", "data.cache_dir", "run.out_dir",  # places: the weights and the data come from the checkpoint
    "run.save_every", "run.log_every", "run.resume", "run.stop_after", "run.progress", "run.tensorboard",
    "run.strategy", "run.num_processes", "run.num_machines",  # how it runs and reports, not what it computes
})
"""``section.field`` settings in which a resumed run may differ from the run that wrote its checkpoint; any other
difference (recipe, data, model shape, tokenizer, RoPE, learning rate, seed, precision) would continue the saved state
as a different run, so resuming is refused (`resume_conflicts`). The step budget may grow only under the constant
schedule: cosine and linear schedules compute every step's rate from the total."""

_PATHS = frozenset({"model.tokenizer"})
"""Settings that name a file or directory: compared as resolved paths ("cache/x" and "/abs/cache/x" are one place)."""


def resume_conflicts(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings in which ``cfg`` contradicts ``saved`` (the ``TrainConfig.to_dict()`` a checkpoint was written
    with), as ``"section.field: saved -> now"``, leaving out `RESUMABLE_CHANGES` (the step budget only under the
    constant schedule) and the ``sharedllm`` section of a run that is not a SharedLLM. Fields present on one side only
    (a checkpoint older than a setting) are not compared."""
    now = cfg.to_dict()
    free = set(RESUMABLE_CHANGES)
    if saved.get("optim", {}).get("schedule", "constant") != "constant":
        free -= {"optim.max_steps", "optim.train_tokens"}
    sections = saved.keys() & now.keys() - ({"sharedllm"} if not cfg.recipe.spec.sharedllm else set())
    conflicts = []
    for section in sections:
        old, new = saved[section], now[section]
        for name in old.keys() & new.keys():
            key, a, b = f"{section}.{name}", old[name], new[name]
            if key in _PATHS and isinstance(a, str) and isinstance(b, str):
                a, b = os.path.realpath(a), os.path.realpath(b)
            if key not in free and a != b:
                conflicts.append(f"{key}: {old[name]!r} -> {new[name]!r}")
    return sorted(conflicts)

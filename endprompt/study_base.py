"""The base model of a study: a tiny Llama pretrained from scratch at ``L0`` by the library's own `train`.

One `StudyBase` names one base: its architecture, its tokenizer, and its pretraining (recipe ``pretrain`` on the
retrieval mixture of `endprompt.mixture`). The study (`endprompt.study.StudyConfig.base`) and the search for a
base that behaves like a real LLM under RoPE rescaling (`endprompt.testbed`) both describe their bases with it, and
both pretrain through `pretrain_base`, so a candidate found by the search is the study's base by handing it over.

Pretraining is resumable (checkpoints under the output directory) and a finished base is reused. With ``short_L0``
it runs in two stages, as real LLMs are pretrained short and then long: ``short_steps`` at ``short_L0`` (the same
tokens per step: ``batch * L0 / short_L0`` sequences), then ``steps`` at ``L0`` from the first stage's weights, at
peak learning rate ``long_lr`` (real LLMs' long stage runs below the first stage's peak; measured on the testbed, a
warm restart at the first stage's 2e-3 wipes a just-formed retrieval circuit within 75 steps, `results/testbed/`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["StudyBase", "MIXTURE", "pretrain_base", "base_run_dir", "base_tokenizer_dir"]

MIXTURE = "mixture:natural=0.2,passkey=0.4,niah=0.3,mqar=0.05,vt=0.05"
"""The studies' pretraining mixture: natural text plus synthetic retrieval (`endprompt.mixture`)."""


@dataclass(frozen=True)
class StudyBase:
    """One base model and its pretraining. The defaults are the shipped byte-level study base
    (``assets/study-bases/``).

    Attributes:
        L0: pretraining length, the base's context (the paper's 8K); head_dim = hidden_size / num_heads.
        vocab_size: BPE vocabulary of `endprompt.bpe_tokenizer` (0 = the byte tokenizer).
        steps, batch, lr, warmup: pretraining (cosine schedule), ``batch`` sequences of ``L0`` tokens per step.
        docs: mixture documents of ``L0`` tokens generated for pretraining (reused over epochs).
        mixed_precision: "no" or "bf16" autocast.
        short_L0, short_steps: the optional first stage at ``short_L0`` (see the module docstring); 0 = one stage.
        long_lr: the second stage's peak learning rate (0 = ``lr``); only with a first stage.
    """

    L0: int = 256
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    rope_theta: float = 10000.0
    vocab_size: int = 0
    steps: int = 3000
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 50
    docs: int = 32768
    mixture: str = MIXTURE
    mixed_precision: str = "no"
    seed: int = 0
    short_L0: int = 0
    short_steps: int = 0
    long_lr: float = 0.0

    def __post_init__(self):
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size={self.hidden_size} / num_heads={self.num_heads} must give an even head_dim")
        if self.L0 < 64:
            raise ValueError(f"L0={self.L0} is too short for the retrieval prompts; use >= 64")
        if self.vocab_size and not 260 < self.vocab_size <= 65536:
            raise ValueError(f"vocab_size={self.vocab_size}: use 0 (byte tokenizer) or a BPE size in 261..65536")
        if min(self.steps, self.batch, self.docs) < 1 or self.lr <= 0:
            raise ValueError("steps, batch, docs must be >= 1 and lr > 0")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision={self.mixed_precision!r}: use 'no' or 'bf16'")
        if bool(self.short_L0) != bool(self.short_steps) or (self.short_L0 and (
                self.short_L0 >= self.L0 or self.L0 % self.short_L0 or self.short_L0 < 64)):
            raise ValueError(f"short_L0={self.short_L0}, short_steps={self.short_steps}: give both or neither, with "
                             f"64 <= short_L0 < L0={self.L0} dividing L0")
        if self.long_lr < 0 or (self.long_lr and not self.short_steps):
            raise ValueError(f"long_lr={self.long_lr}: the second stage's learning rate needs a first stage "
                             "(short_L0, short_steps) and must be >= 0 (0 = lr)")
        from endprompt.data import parse_mixture

        parse_mixture(self.mixture)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def key(self) -> str:
        """The base's directory name: the architecture and pretraining, then each other setting that differs from
        its default (so the shipped base keeps its name, ``base-L256-h128-l4-s3000-b16-d32768-lr0.002-<mixture>``)."""
        mix = self.mixture.split(":", 1)[1].replace("=", "").replace(",", "-").replace(".", "")
        key = (f"base-L{self.L0}-h{self.hidden_size}-l{self.num_layers}-s{self.steps}-b{self.batch}-d{self.docs}"
               f"-lr{self.lr:g}-{mix}")
        tags = {"num_heads": f"hd{self.head_dim}", "rope_theta": f"th{self.rope_theta:g}",
                "vocab_size": f"bpe{self.vocab_size}", "warmup": f"w{self.warmup}",
                "mixed_precision": self.mixed_precision, "seed": f"seed{self.seed}",
                "short_L0": f"short{self.short_L0}x{self.short_steps}", "long_lr": f"llr{self.long_lr:g}"}
        return key + "".join(f"-{tag}" for name, tag in tags.items() if getattr(self, name) != _DEFAULTS[name])

    @classmethod
    def from_overrides(cls, overrides: list[str], base: StudyBase | None = None) -> StudyBase:
        """``["L0=2048", "rope_theta=5e5"]`` -> a StudyBase (values typed from the field defaults), from ``base``'s
        settings (default: the defaults)."""
        types = {f.name: type(f.default) for f in fields(cls)}
        values = {}
        for item in overrides:
            name, sep, raw = item.partition("=")
            if not sep or name not in types:
                raise ValueError(f"base setting {item!r} must be name=value with a name in: {', '.join(types)}")
            values[name] = types[name](float(raw)) if types[name] is int else types[name](raw)
        return replace(base or cls(), **values)


_DEFAULTS = {f.name: f.default for f in fields(StudyBase)}


def base_run_dir(base: StudyBase, cache_dir: str | Path) -> Path:
    """Where ``base`` is pretrained under ``cache_dir``: one place for the study and the base search, so a candidate
    the search pretrained is the study's base without pretraining it again."""
    return Path(cache_dir) / "study-bases" / base.key


def base_tokenizer_dir(base: StudyBase, cache_dir: str | Path) -> str | None:
    """The base's tokenizer directory (trained once and cached), or None for the byte tokenizer."""
    if not base.vocab_size:
        return None
    from endprompt.bpe_tokenizer import bpe_tokenizer

    bpe_tokenizer(base.vocab_size, cache_dir)
    return str(Path(cache_dir) / "tokenizers" / f"bpe-{base.vocab_size}")


def _train_config(base: StudyBase, out: Path, cache_dir: str | Path, tokenizer_dir: str | None, progress: bool,
                  start_from: Path | None = None):
    """The `TrainConfig` of one pretraining stage, from typed sections."""
    from endprompt.config import load_config

    model = {"tokenizer": tokenizer_dir or "byte", "vocab_size": base.vocab_size or 260,
             "hidden_size": base.hidden_size, "num_layers": base.num_layers, "num_heads": base.num_heads,
             "rope_theta": base.rope_theta, "original_len": base.L0}
    if start_from is not None:  # the second stage: the first stage's weights and tokenizer, the context set to L0
        model |= {"path": str(start_from), "tokenizer": None,
                  "config_overrides": {"max_position_embeddings": base.L0}}
    return load_config(
        "tiny-cpu", model=model, rope={"rope_type": "linear", "factor": None},
        data={"source": base.mixture, "cache_dir": str(cache_dir), "mixture_docs": base.docs},
        recipe={"name": "pretrain", "target_len": base.L0},
        optim={"max_steps": base.steps, "micro_batch_size": base.batch, "lr": base.lr, "schedule": "cosine",
               "warmup_steps": base.warmup},
        run={"out_dir": str(out), "seed": base.seed, "mixed_precision": base.mixed_precision, "resume": True,
             "save_every": max(1, base.steps // 8), "log_every": 25, "progress": progress})


def pretrain_base(base: StudyBase, out: str | Path, cache_dir: str | Path = "cache",
                  progress: bool = True) -> tuple[dict, Path]:
    """Pretrain (or resume, or reuse) ``base`` into ``out``; returns the run's facts (`train_result.json`, both
    stages' tokens and wall time summed) and the final model directory ``out/final``. With two stages the log of
    both, with a ``stage`` field, is ``out/pretrain_metrics.jsonl``."""
    from endprompt.train import train

    out = Path(out)
    tokenizer_dir = base_tokenizer_dir(base, cache_dir)
    if base.short_steps and not (out / "short" / "final" / "config.json").exists():
        ratio = base.L0 // base.short_L0
        short = replace(base, L0=base.short_L0, steps=base.short_steps, batch=base.batch * ratio,
                        docs=base.docs * ratio, short_L0=0, short_steps=0, long_lr=0.0)
        train(_train_config(short, out / "short", cache_dir, tokenizer_dir, progress))
    if not (out / "final" / "config.json").exists():
        start = out / "short" / "final" if base.short_steps else None
        train(_train_config(replace(base, lr=base.long_lr or base.lr), out, cache_dir, tokenizer_dir, progress, start))
    result = json.loads((out / "train_result.json").read_text())
    if base.short_steps:
        first = json.loads((out / "short" / "train_result.json").read_text())
        result = {**result, "tokens": first["tokens"] + result["tokens"],
                  "wall_time_s": first["wall_time_s"] + result["wall_time_s"]}
        result["tokens_per_s"] = result["tokens"] / max(result["wall_time_s"], 1e-9)
        records = [{**json.loads(line), "stage": stage}
                   for stage, run in (("short", out / "short"), ("long", out))
                   for line in (run / "metrics.jsonl").read_text().splitlines()]
        (out / "pretrain_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return result, out / "final"

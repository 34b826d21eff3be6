"""``train(cfg) -> TrainResult``: one training loop for every recipe, on one CPU or many GPUs.

- Devices and distribution through accelerate (one device, DDP, FSDP2 or DeepSpeed ZeRO-3 as ``accelerate launch``
  configures; ``configs/accelerate/``). On CPU, where accelerate has no FSDP, ``run.strategy=fsdp2`` shards the model
  with torch's ``fully_shard`` itself.
- Loss: per-token weighted cross-entropy (Eq. 11), normalised by the total weight of the whole optimizer step over all
  micro-batches and processes, so the gradient does not depend on how the global batch is split.
- Data order: `endprompt.data.EpochSampler` (deterministic, sharded by rank); each sample's randomness is keyed by its
  place in that order, so 1 process x 2 sequences and 2 processes x 1 sequence see the same samples.
- Checkpoints every ``run.save_every`` steps, written to a temporary directory and renamed (atomic); resuming restores
  model, optimizer, scheduler, RNG and data position, and continues exactly.
- A non-finite loss stops the run: the batch and step are saved, `TrainingDiverged` is raised.
- The final model is saved with ``save_pretrained`` (LoRA merged), so stock ``AutoModelForCausalLM.from_pretrained``
  reloads it with its RoPE configuration.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from endprompt import batching, data, modeling, s2attn
from endprompt.config import TrainConfig, steps_for_budget

__all__ = ["TrainResult", "TrainingDiverged", "train", "weighted_cross_entropy", "batch_recipe", "lr_lambda",
           "latest_checkpoint"]

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A non-finite loss; ``dump_dir`` holds the offending batch and step."""

    def __init__(self, step: int, loss: float, dump_dir: Path):
        super().__init__(f"loss became {loss} at step {step}; the batch and step are saved in {dump_dir}")
        self.step, self.loss, self.dump_dir = step, loss, dump_dir


@dataclass
class TrainResult:
    """What a run did. ``status`` is "completed" or "stopped" (``run.stop_after``: resumable)."""

    out_dir: str
    status: str
    steps: int
    total_steps: int
    tokens: int
    losses: list[float] = field(default_factory=list)
    final_dir: str | None = None
    checkpoint: str | None = None
    wall_time_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_memory_bytes: int = 0
    data_stats: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


def batch_recipe(cfg: TrainConfig) -> batching.Recipe:
    """The batching recipe of a run: ``cfg.recipe`` is a `endprompt.batching.Recipe` (plus training-only fields), whose
    registered spec says how samples are cut (``longlora`` and ``pretrain`` cut ``full``'s samples)."""
    return cfg.recipe


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                           chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_l w_l * CE_l, sum_l w_l)`` over next-token targets (Eq. 11), in float32, ``chunk`` positions at a time.

    ``logits`` (B, T, V) predict ``labels[:, 1:]``; ``weights[:, l]`` weighs target ``l``; label -100 is ignored.
    """
    targets, w = labels[:, 1:], weights[:, 1:].float() * (labels[:, 1:] != -100)  # (B, T-1)
    predicting = logits[:, :-1]  # (B, T-1, V): position l predicts token l + 1
    total = logits.new_zeros((), dtype=torch.float32)
    for s in range(0, targets.shape[1], chunk):
        lg = predicting[:, s : s + chunk].float()  # (B, c, V)
        ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), targets[:, s : s + chunk].reshape(-1), ignore_index=-100,
                             reduction="none")
        total = total + (ce * w[:, s : s + chunk].reshape(-1)).sum()
    return total, w.sum()


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the base lr at a step: linear warm-up, then constant (the paper), cosine or linear decay to 0."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1 - progress)

    return f


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``out_dir/checkpoints`` (temporary directories are ignored)."""
    root = Path(out_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.count(".tmp")
                  and (p / "trainer_state.json").exists())
    return done[-1] if done else None


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if _rank_world()[1] > 1:
        torch.distributed.all_reduce(x)
    return x


def _peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Trainer:
    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator

        self.cfg = cfg
        kwargs = {"mixed_precision": cfg.run.mixed_precision, "gradient_accumulation_steps": cfg.optim.grad_accum}
        self.acc = Accelerator(cpu=not torch.cuda.is_available(), **kwargs)
        self.rank, self.world = _rank_world()
        self.out = Path(cfg.run.out_dir)
        self.main = self.acc.is_main_process
        torch.manual_seed(cfg.run.seed)  # same initial weights on every rank
        prepared = modeling.prepare_model(cfg)
        self.model, self.tokenizer, self.rope = prepared.model, prepared.tokenizer, prepared.rope
        self.recipe = batch_recipe(cfg)
        pad8 = 8 if cfg.recipe.name == "longlora" else None
        self.collator = batching.Collator.from_tokenizer(self.recipe, self.tokenizer, seed=cfg.run.seed,
                                                         pad_to_multiple_of=pad8)
        if cfg.recipe.name == "longlora":
            self.model.set_attn_implementation(s2attn.register(cfg.recipe.s2_group_ratio))
        with self.acc.main_process_first():
            if cfg.data.source.startswith("mixture:"):
                from endprompt.mixture import build_mixture

                doc_len = cfg.data.doc_len or batching.full_doc_len(self.recipe)
                corpus = build_mixture(cfg.data.source, self.tokenizer, doc_len, cfg.data.mixture_docs,
                                       cfg.run.seed, cfg.data.cache_dir, progress=cfg.run.progress and self.main)
                self.source = data.SampleSource(corpus, concat=False)
            else:
                corpus = data.tokenize_corpus(cfg.data.source, self.tokenizer, cfg.data.cache_dir,
                                              cfg.data.text_field, cfg.data.max_documents,
                                              progress=cfg.run.progress and self.main)
                self.source = data.SampleSource(corpus, data.sample_len(self.recipe), cfg.data.concat)
        self.sampler = data.EpochSampler(len(self.source), cfg.run.seed)
        self.total_steps = steps_for_budget(cfg, self.recipe.physical_len, self.world)
        o = cfg.optim
        self.manual_fsdp = cfg.run.strategy == "fsdp2" and self.acc.distributed_type.value != "FSDP"
        if self.manual_fsdp:
            self._fully_shard()  # before the optimizer exists: sharding replaces the parameters with DTensors
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_lambda(o.schedule, o.warmup_steps, self.total_steps))
        if self.manual_fsdp:
            self.optimizer = self.acc.prepare(self.optimizer)
        else:
            if self.acc.state.deepspeed_plugin is not None:
                ds = self.acc.state.deepspeed_plugin.deepspeed_config
                ds["train_micro_batch_size_per_gpu"] = o.micro_batch_size
                ds["gradient_accumulation_steps"] = o.grad_accum
            self.model, self.optimizer = self.acc.prepare(self.model, self.optimizer)
        self.step, self.tokens, self.losses, self.elapsed = 0, 0, [], 0.0

    def _fully_shard(self) -> None:
        from torch.distributed.fsdp import fully_shard

        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        for layer in inner.model.layers:
            fully_shard(layer)
        fully_shard(self.model)

    # --- checkpoints -------------------------------------------------------------------------------------------------

    def _state_dicts(self, with_optimizer: bool = True) -> tuple[dict, dict | None]:
        """Full (unsharded) state dicts, on the main process (others get empty dicts when distributed)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=self.world > 1)
        model = self.model if self.manual_fsdp else self.acc.unwrap_model(self.model)
        if not with_optimizer:
            return get_model_state_dict(model, options=opts), None
        return get_state_dict(model, getattr(self.optimizer, "optimizer", self.optimizer), options=opts)

    def save_checkpoint(self) -> Path:
        final = self.out / "checkpoints" / f"step-{self.step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        if self.acc.state.deepspeed_plugin is not None:
            self.acc.save_state(str(tmp))
        else:
            model_sd, optim_sd = self._state_dicts()
            if self.main:
                torch.save(model_sd, tmp / "model.pt")
                torch.save(optim_sd, tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        torch.save(rng, tmp / f"rng-rank{self.rank}.pt")
        self.acc.wait_for_everyone()
        if self.main:
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            state = {"step": self.step, "tokens": self.tokens, "losses": self.losses, "elapsed": self.elapsed,
                     "sampler": self.sampler.state_dict(), "collator": self.collator.state_dict(),
                     "world_size": self.world, "config": self.cfg.to_dict()}
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            os.replace(tmp, final)  # atomic: a checkpoint directory is complete or absent
        self.acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = json.loads((path / "trainer_state.json").read_text())
        if self.acc.state.deepspeed_plugin is not None:
            self.acc.load_state(str(path))
        else:
            model = self.model if self.manual_fsdp else self.acc.unwrap_model(self.model)
            optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
            # every rank reads the full state and keeps its own shard
            set_state_dict(model, optimizer, model_state_dict=torch.load(path / "model.pt", weights_only=False),
                           optim_state_dict=torch.load(path / "optimizer.pt", weights_only=False),
                           options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        rng_file = path / f"rng-rank{self.rank}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=False)
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self.sampler.load_state_dict(state["sampler"])
        self.collator.load_state_dict(state["collator"])
        self.step, self.tokens, self.losses = state["step"], state["tokens"], state["losses"]
        self.elapsed = state["elapsed"]

    def save_final(self) -> Path:
        final = self.out / "final"
        if self.acc.state.deepspeed_plugin is not None:
            state_dict = self.acc.get_state_dict(self.model)
        else:
            state_dict, _ = self._state_dicts(with_optimizer=False) if self.world > 1 else (None, None)
        if self.main:
            model = self.model if self.manual_fsdp else self.acc.unwrap_model(self.model)
            if state_dict is not None and hasattr(model, "merge_and_unload"):
                model.load_state_dict(state_dict)
                state_dict = None
            model = modeling.merge_lora(model)
            if self.cfg.recipe.name == "longlora":
                model.set_attn_implementation("sdpa")  # S2-Attn is for training; evaluate with full attention
            tmp = final.with_name("final.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "endprompt_config.yaml").write_text(self.cfg.to_yaml())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        self.acc.wait_for_everyone()
        return final

    # --- the loop ----------------------------------------------------------------------------------------------------

    def _micro_batches(self) -> list[dict]:
        o = self.cfg.optim
        items = self.sampler.next_global(o.micro_batch_size * o.grad_accum * self.world)
        mine = data.EpochSampler.shard(items, self.rank, self.world)
        batches = []
        for i in range(0, len(mine), o.micro_batch_size):
            chunk = mine[i : i + o.micro_batch_size]
            batches.append(self.collator([self.source[j] for j, _ in chunk], keys=[key for _, key in chunk]))
        return batches

    def _dump_batch(self, batches: list[dict], loss: float) -> Path:
        dump = self.out / f"diverged-step-{self.step:08d}"
        dump.mkdir(parents=True, exist_ok=True)
        torch.save(batches, dump / f"batches-rank{self.rank}.pt")
        if self.main:
            (dump / "info.json").write_text(json.dumps({"step": self.step, "loss": loss,
                                                        "lr": self.scheduler.get_last_lr()[0]}))
        return dump

    def run(self) -> TrainResult:
        cfg = self.cfg
        resumed = latest_checkpoint(self.out) if cfg.run.resume else None
        if resumed is not None:
            self.load_checkpoint(resumed)
            log.info("resumed from %s at step %d", resumed, self.step)
        metrics = self.out / "metrics.jsonl"
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(cfg.to_yaml())
            kept = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= self.step] \
                if metrics.exists() else []
            metrics.write_text("".join(ln + "\n" for ln in kept))  # drop steps of an interrupted attempt
        writer = self._tensorboard() if self.main and cfg.run.tensorboard else None
        stop_at = self.total_steps if cfg.run.stop_after is None else min(self.total_steps,
                                                                           self.step + cfg.run.stop_after)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {cfg.recipe.name}", unit="step",
                   mininterval=1.0, disable=not (cfg.run.progress and self.main))
        self.model.train()
        start, checkpoint = time.perf_counter() - self.elapsed, resumed
        while self.step < stop_at:
            batches = self._micro_batches()
            weight = torch.tensor(0.0)
            for b in batches:
                weight += (b["loss_weights"][:, 1:] * (b["labels"][:, 1:] != -100)).sum()
            weight = _all_reduce_sum(weight.to(self.acc.device))
            loss_sum = torch.zeros((), device=self.acc.device)
            step_tokens = torch.tensor(float(sum(int(b["attention_mask"].sum()) for b in batches)))
            for b in batches:
                b = {k: v.to(self.acc.device) if torch.is_tensor(v) else v for k, v in b.items()}
                with self.acc.accumulate(self.model), self.acc.autocast():
                    logits = self.model(**batching.model_inputs(b), use_cache=False).logits
                    part, _ = weighted_cross_entropy(logits, b["labels"], b["loss_weights"])
                    # accelerate divides by grad_accum and DDP/FSDP average over processes: undo both, so the step's
                    # gradient is that of (sum of w * CE over the global batch) / (its total weight)
                    self.acc.backward(part * self.world * self.cfg.optim.grad_accum / weight)
                loss_sum += part.detach()
            loss = float(_all_reduce_sum(loss_sum) / weight)
            self.tokens += int(_all_reduce_sum(step_tokens.to(self.acc.device)))
            if not math.isfinite(loss):
                raise TrainingDiverged(self.step, loss, self._dump_batch(batches, loss))
            grad_norm = None
            if cfg.optim.max_grad_norm:
                grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.losses.append(loss)
            self.elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{self.tokens / max(self.elapsed, 1e-9):.0f}", refresh=False)
            if self.main and (self.step % cfg.run.log_every == 0 or self.step == stop_at):
                record = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                          "grad_norm": grad_norm, "tokens": self.tokens, "elapsed_s": self.elapsed,
                          "tokens_per_s": self.tokens / max(self.elapsed, 1e-9)}
                with metrics.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for k in ("loss", "lr", "tokens_per_s"):
                        writer.add_scalar(f"train/{k}", record[k], self.step)
            if cfg.run.save_every and self.step % cfg.run.save_every == 0 and self.step < self.total_steps:
                checkpoint = self.save_checkpoint()
        bar.close()
        done = self.step >= self.total_steps
        final = self.save_final() if done else None
        if not done and (checkpoint is None or checkpoint.name != f"step-{self.step:08d}"):
            checkpoint = self.save_checkpoint()  # stopped early: keep the place
        result = TrainResult(out_dir=str(self.out), status="completed" if done else "stopped", steps=self.step,
                             total_steps=self.total_steps, tokens=self.tokens, losses=self.losses,
                             final_dir=str(final) if final else None,
                             checkpoint=str(checkpoint) if checkpoint else None,
                             wall_time_s=self.elapsed, tokens_per_s=self.tokens / max(self.elapsed, 1e-9),
                             peak_memory_bytes=_peak_memory(), data_stats=dict(self.collator.stats))
        if self.main:
            (self.out / "train_result.json").write_text(json.dumps(asdict(result), indent=2))
        return result

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("run.tensorboard needs the tensorboard package (pip install tensorboard); logging to "
                        "metrics.jsonl only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def train(cfg: TrainConfig) -> TrainResult:
    """Train as ``cfg`` says (see the module docstring); serves the CLI, scripts and tests alike."""
    return _Trainer(cfg).run()

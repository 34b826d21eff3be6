"""``train(cfg) -> TrainResult``: one training loop for every recipe, on one CPU or many GPUs.

- Devices and distribution through accelerate (one device, DDP, FSDP2 or DeepSpeed ZeRO-3 as ``accelerate launch``
  configures; ``configs/accelerate/``). On CPU, where accelerate has no FSDP, ``run.strategy=fsdp2`` shards the model
  with torch's ``fully_shard`` itself.
- Loss: per-token weighted cross-entropy (Eq. 11), normalised by the total weight of the whole optimizer step over all
  micro-batches and processes, so the gradient does not depend on how the global batch is split.
- Data order: `endprompt.data.EpochSampler` (deterministic, sharded by rank); each sample's randomness is keyed by its
  place in that order, so 1 process x 2 sequences and 2 processes x 1 sequence see the same samples.
- Checkpoints (`endprompt.checkpoint`) every ``run.save_every`` steps and at the end of every run (completed or
  stopped), atomic and verified by a manifest; resuming restores model, optimizer, scheduler, RNG and data position
  and continues exactly, also when a finished run is given more steps. The run directory is locked while a run lives.
- A non-finite loss stops the run: the batch and step are saved, `TrainingDiverged` is raised.
- The final model is saved with ``save_pretrained`` (LoRA merged), so stock ``AutoModelForCausalLM.from_pretrained``
  reloads it with its RoPE configuration.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from endprompt import batching, data, modeling, s2attn
from endprompt.checkpoint import Checkpointer, CheckpointError, RunDirLocked, RunLock, atomic_write, latest_checkpoint
from endprompt.config import OptimConfig, TrainConfig, resume_conflicts, steps_for_budget
from endprompt.recipe import Recipe, full_doc_len

__all__ = ["TrainResult", "TrainingDiverged", "train", "weighted_cross_entropy", "batch_recipe", "lr_lambda",
           "latest_checkpoint", "CheckpointError", "RunDirLocked", "TrainStep", "StepOutcome", "MetricsLog",
           "log_record", "param_groups"]

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


def batch_recipe(cfg: TrainConfig) -> Recipe:
    """The batching recipe of a run: ``cfg.recipe`` is a `endprompt.recipe.Recipe` (plus training-only fields), whose
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


def param_groups(model, optim: OptimConfig) -> list[dict]:
    """The optimizer's parameter groups: every trained weight at ``optim.lr``, except the LoRA adapters (PEFT's
    ``lora_`` parameters) at ``optim.adapter_lr`` when it is set. One group, in the model's order, when it is not, so
    that the optimizer state of earlier checkpoints still lines up."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if optim.adapter_lr is None:
        return [{"params": [p for _, p in named], "lr": optim.lr}]
    adapters = [p for n, p in named if "lora_" in n]
    if not adapters:
        raise ValueError(f"optim.adapter_lr={optim.adapter_lr} is set but the model has no trained LoRA parameters")
    rest = [p for n, p in named if "lora_" not in n]
    return [g for g in ({"params": rest, "lr": optim.lr}, {"params": adapters, "lr": optim.adapter_lr}) if g["params"]]


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


class _NonFiniteLoss(Exception):
    def __init__(self, loss: float):
        super().__init__(loss)
        self.loss = loss


@dataclass
class StepOutcome:
    """What one optimizer step did, over all its micro-batches and processes."""

    loss: float
    grad_norm: float | None
    tokens: int


class TrainStep:
    """One optimizer step: forward, weighted loss (Eq. 11), backward, clip, optimizer and scheduler update.

    A non-finite loss raises before the update, so the weights stay those of the last good step.
    """

    def __init__(self, acc, model, optimizer, scheduler, optim: OptimConfig, world: int):
        self.acc, self.model, self.optimizer, self.scheduler = acc, model, optimizer, scheduler
        self.grad_accum, self.max_grad_norm, self.world = optim.grad_accum, optim.max_grad_norm, world

    def __call__(self, batches: list[dict]) -> StepOutcome:
        weight = torch.tensor(0.0)
        for batch in batches:
            weight += (batch["loss_weights"][:, 1:] * (batch["labels"][:, 1:] != -100)).sum()
        weight = _all_reduce_sum(weight.to(self.acc.device))
        loss_sum = torch.zeros((), device=self.acc.device)
        for batch in batches:
            loss_sum += self._backward(batch, weight)
        loss = float(_all_reduce_sum(loss_sum) / weight)
        tokens = torch.tensor(float(sum(int(batch["attention_mask"].sum()) for batch in batches)))
        tokens = int(_all_reduce_sum(tokens.to(self.acc.device)))
        if not math.isfinite(loss):
            raise _NonFiniteLoss(loss)
        grad_norm = None
        if self.max_grad_norm:
            grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(loss, grad_norm, tokens)

    def _backward(self, batch: dict, weight: torch.Tensor) -> torch.Tensor:
        batch = {k: v.to(self.acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with self.acc.accumulate(self.model), self.acc.autocast():
            logits = self.model(**batching.model_inputs(batch), use_cache=False).logits
            part, _ = weighted_cross_entropy(logits, batch["labels"], batch["loss_weights"])
            # accelerate divides by grad_accum and DDP/FSDP average over processes: undo both, so the step's
            # gradient is that of (sum of w * CE over the global batch) / (its total weight)
            self.acc.backward(part * self.world * self.grad_accum / weight)
        return part.detach()


def log_record(step: int, outcome: StepOutcome, rates: dict, tokens: int, elapsed: float) -> dict:
    """One line of ``metrics.jsonl``; ``rates``: ``lr`` and, for a run with ``optim.adapter_lr``, ``adapter_lr``."""
    return {"step": step, "loss": outcome.loss, **rates, "grad_norm": outcome.grad_norm, "tokens": tokens,
            "elapsed_s": elapsed, "tokens_per_s": tokens / max(elapsed, 1e-9)}


class MetricsLog:
    """``out_dir/metrics.jsonl`` (one `log_record` per logged step) and optionally TensorBoard; main process only.

    Opening it keeps the records up to the step the run starts from: those of an interrupted attempt go, and so does a
    last line cut short by a kill.
    """

    def __init__(self, out_dir: Path, start_step: int, enabled: bool, tensorboard: bool):
        self.path, self.enabled = out_dir / "metrics.jsonl", enabled
        self.writer = _tensorboard(out_dir) if enabled and tensorboard else None
        if enabled:
            kept = [line for line in self._records() if json.loads(line)["step"] <= start_step]
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def _records(self) -> list[str]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        whole = []
        for line in lines:
            try:
                json.loads(line)
                whole.append(line)
            except ValueError:
                log.warning("%s: dropping a line cut short by an interrupted run: %r", self.path, line[:60])
        return whole

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k in ("loss", "lr", "tokens_per_s"):
                self.writer.add_scalar(f"train/{k}", record[k], record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("run.tensorboard needs the tensorboard package (pip install tensorboard); logging to "
                    "metrics.jsonl only")
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


class _Trainer:
    """Sets up model, data and optimizer for ``cfg``, then runs `TrainStep` in a loop with `MetricsLog` and
    `Checkpointer`."""

    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator

        self.cfg = cfg
        kwargs = {"mixed_precision": cfg.run.mixed_precision, "gradient_accumulation_steps": cfg.optim.grad_accum}
        self.acc = Accelerator(cpu=not torch.cuda.is_available(), **kwargs)
        self.rank, self.world = _rank_world()
        self.out = Path(cfg.run.out_dir)
        self.is_main = self.acc.is_main_process
        torch.manual_seed(cfg.run.seed)  # same initial weights on every rank
        prepared = modeling.prepare_model(cfg)
        self.model, self.tokenizer, self.rope = prepared.model, prepared.tokenizer, prepared.rope
        self.recipe = batch_recipe(cfg)
        s2 = cfg.recipe.spec.s2_attention
        pad8 = 8 if s2 else None
        self.collator = batching.Collator.from_tokenizer(self.recipe, self.tokenizer, seed=cfg.run.seed,
                                                         pad_to_multiple_of=pad8)
        if s2:
            self.model.set_attn_implementation(s2attn.register(cfg.recipe.s2_group_ratio))
        with self.acc.main_process_first():
            self.source = self._sample_source()
        self.sampler = data.EpochSampler(len(self.source), cfg.run.seed)
        self.total_steps = steps_for_budget(cfg, self.recipe.physical_len, self.world)
        self._prepare_optimization()
        self.step, self.tokens, self.losses, self.elapsed = 0, 0, [], 0.0

    def _sample_source(self) -> data.SampleSource:
        cfg, progress = self.cfg, self.cfg.run.progress and self.is_main
        if cfg.data.source.startswith("mixture:") and cfg.data.doc_len_range is not None:
            from endprompt.mixture import build_shared_mixture

            # one corpus for every recipe of this seed, cut as natural text is (DataConfig.doc_len_range)
            corpus = build_shared_mixture(cfg.data.source, self.tokenizer, cfg.data.doc_len_range,
                                          cfg.data.mixture_docs, cfg.run.seed, cfg.data.cache_dir, progress=progress,
                                          layout=cfg.data.doc_layout)
            return data.SampleSource(corpus, data.sample_len(self.recipe), cfg.data.concat)
        if cfg.data.source.startswith("mixture:"):
            from endprompt.mixture import build_mixture

            doc_len = cfg.data.doc_len or full_doc_len(self.recipe)
            corpus = build_mixture(cfg.data.source, self.tokenizer, doc_len, cfg.data.mixture_docs, cfg.run.seed,
                                   cfg.data.cache_dir, progress=progress)
            return data.SampleSource(corpus, concat=False)
        corpus = data.tokenize_corpus(cfg.data.source, self.tokenizer, cfg.data.cache_dir, cfg.data.text_field,
                                      cfg.data.max_documents, progress=progress)
        return data.SampleSource(corpus, data.sample_len(self.recipe), cfg.data.concat)

    def _prepare_optimization(self) -> None:
        o = self.cfg.optim
        self.manual_fsdp = self.cfg.run.strategy == "fsdp2" and self.acc.distributed_type.value != "FSDP"
        if self.manual_fsdp:
            self._fully_shard()  # before the optimizer exists: sharding replaces the parameters with DTensors
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o), lr=o.lr, betas=o.betas, eps=o.eps,
                                           weight_decay=o.weight_decay)
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
        module = self.model if self.manual_fsdp else self.acc.unwrap_model(self.model)
        self.checkpointer = Checkpointer(self.out, self.acc, self.model, module, self.optimizer, self.scheduler,
                                         self.rank, self.world)
        self.train_step = TrainStep(self.acc, self.model, self.optimizer, self.scheduler, o, self.world)

    def _fully_shard(self) -> None:
        from torch.distributed.fsdp import fully_shard

        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        for layer in inner.model.layers:
            fully_shard(layer)
        fully_shard(self.model)

    # --- checkpoints -------------------------------------------------------------------------------------------------

    def _save(self) -> Path:
        state = {"step": self.step, "tokens": self.tokens, "losses": self.losses, "elapsed": self.elapsed,
                 "sampler": self.sampler.state_dict(), "collator": self.collator.state_dict(),
                 "world_size": self.world, "config": self.cfg.to_dict()}
        return self.checkpointer.save(self.step, state)

    def _rates(self) -> dict:
        """The learning rates now: ``lr`` of the trained weights and, when set, ``adapter_lr`` of the LoRA adapters
        (one schedule scales both; the optimizer's first group is the adapters' when nothing else trains)."""
        o = self.cfg.optim
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        return {"lr": o.lr * factor, **({"adapter_lr": o.adapter_lr * factor} if o.adapter_lr is not None else {})}

    def _resume(self) -> Path | None:
        """Restore the newest whole checkpoint when ``run.resume``; a run that starts over drops older checkpoints
        (it must never resume from another run's state later)."""
        self.checkpointer.clean()
        if not self.cfg.run.resume:
            self.checkpointer.discard_all()
            return None
        path = self._from_main(lambda: latest_checkpoint(self.out))
        if path is None:
            return None
        self._from_main(lambda: self._check_settings(path))
        state = self.checkpointer.load(path)
        self.sampler.load_state_dict(state["sampler"])
        self.collator.load_state_dict(state["collator"])
        self.step, self.tokens, self.losses = state["step"], state["tokens"], state["losses"]
        self.elapsed = state["elapsed"]
        log.info("resumed from %s at step %d", path, self.step)
        return path

    def _check_settings(self, path: Path) -> None:
        """Refuse to continue a checkpoint written with other settings (`endprompt.config.resume_conflicts`): its
        state would go on as a different run than either, silently."""
        state = json.loads((path / "trainer_state.json").read_text())
        conflicts = resume_conflicts(state["config"], self.cfg) if state.get("config") else []
        if state.get("world_size", self.world) != self.world:  # the global batch is micro * accum * processes
            conflicts.append(f"processes: {state['world_size']} -> {self.world}")
        if conflicts:
            raise CheckpointError(f"{path} was written with other settings ({'; '.join(conflicts)}): resume with the "
                                  "settings the run was written with, or start over with run.resume=false or another "
                                  "run.out_dir")

    def _from_main(self, find):
        """``find()`` on the main process only (it reads and checksums files); its answer or error on every rank."""
        box, failure = [None], None
        if self.is_main:
            try:
                box = [("ok", find())]
            except Exception as err:  # any failure reaches every rank, which would otherwise wait in the broadcast
                box, failure = [("error", str(err) if isinstance(err, CheckpointError)
                                 else f"{type(err).__name__}: {err}")], err
        if self.world > 1:
            torch.distributed.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if failure is not None:
            raise failure
        if kind == "error":
            raise CheckpointError(value)
        return value

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
        if self.is_main:
            (dump / "info.json").write_text(json.dumps({"step": self.step, "loss": loss, **self._rates()}))
        return dump

    def run(self) -> TrainResult:
        cfg = self.cfg
        checkpoint = self._resume()
        metrics = MetricsLog(self.out, self.step, self.is_main, cfg.run.tensorboard)
        if self.is_main:
            atomic_write(self.out / "config.yaml", lambda tmp: tmp.write_text(cfg.to_yaml()))
        stop_at = min(self.total_steps, self.total_steps if cfg.run.stop_after is None else
                      self.step + cfg.run.stop_after)
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {cfg.recipe.name}", unit="step",
                   mininterval=1.0, disable=not (cfg.run.progress and self.is_main))
        self.model.train()
        start = time.perf_counter() - self.elapsed
        while self.step < stop_at:
            batches = self._micro_batches()
            try:
                outcome = self.train_step(batches)
            except _NonFiniteLoss as err:
                raise TrainingDiverged(self.step, err.loss, self._dump_batch(batches, err.loss)) from None
            self.step, self.tokens = self.step + 1, self.tokens + outcome.tokens
            self.elapsed = time.perf_counter() - start
            self.losses.append(outcome.loss)
            bar.update(1)
            bar.set_postfix(loss=f"{outcome.loss:.4f}", tok_s=f"{self.tokens / max(self.elapsed, 1e-9):.0f}",
                            refresh=False)
            if self.step % cfg.run.log_every == 0 or self.step == stop_at:
                metrics.write(log_record(self.step, outcome, self._rates(), self.tokens,
                                         self.elapsed))
            if cfg.run.save_every and self.step % cfg.run.save_every == 0:
                checkpoint = self._save()
        bar.close()
        metrics.close()
        return self._finish(checkpoint)

    def _finish(self, checkpoint: Path | None) -> TrainResult:
        """A checkpoint of the last step (so that a stopped run, or a finished one given more steps, continues from
        here), the final model if the run is complete, and ``train_result.json``."""
        done = self.step >= self.total_steps
        if checkpoint is None or checkpoint.name != f"step-{self.step:08d}":
            checkpoint = self._save()
        final = self.checkpointer.save_final(self.tokenizer, self.cfg) if done else None
        result = TrainResult(out_dir=str(self.out), status="completed" if done else "stopped", steps=self.step,
                             total_steps=self.total_steps, tokens=self.tokens, losses=self.losses,
                             final_dir=str(final) if final else None, checkpoint=str(checkpoint),
                             wall_time_s=self.elapsed, tokens_per_s=self.tokens / max(self.elapsed, 1e-9),
                             peak_memory_bytes=_peak_memory(),
                             data_stats={**self.collator.stats, "corpus": self.source.corpus.meta.get("stats", {})})
        if self.is_main:
            text = json.dumps(asdict(result), indent=2)
            atomic_write(self.out / "train_result.json", lambda tmp: tmp.write_text(text))
        return result


def train(cfg: TrainConfig) -> TrainResult:
    """Train as ``cfg`` says (see the module docstring); serves the CLI, scripts and tests alike.

    The main process holds `RunLock` on ``run.out_dir`` for the whole run: a second run there is refused.
    """
    with RunLock(cfg.run.out_dir, enabled=int(os.environ.get("RANK", "0")) == 0):
        return _Trainer(cfg).run()

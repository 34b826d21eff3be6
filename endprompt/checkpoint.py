"""A training run's checkpoints, its final model, and the lock on its directory.

A checkpoint is the directory ``out_dir/checkpoints/step-NNNNNNNN``: model, optimizer, scheduler, every rank's RNG state
and the trainer's state (``trainer_state.json``). It is written into ``step-NNNNNNNN.tmp``; a manifest with the size and
SHA-256 of every file is written last, the files are synced, and the directory is renamed. So a checkpoint directory is
whole or absent, and damage after the fact (a truncated or flipped byte) is caught by the manifest:
`latest_checkpoint` returns the newest checkpoint that matches its manifest, warns about each newer one it passes over,
and raises `CheckpointError` when checkpoints exist but none is whole. Nothing is loaded without that check.

Files are read with ``torch.load(..., weights_only=True)``: a checkpoint holds tensors and plain Python values only (the
RNG states as tensors and lists), so a planted pickle cannot run code.

A write that fails (a full disk, ENOSPC) stops the run with a `CheckpointError` naming the directory; the unfinished
directory is removed and the previous checkpoint stays the latest. `RunLock` keeps a second run out of a directory that
a live run holds; the kernel drops the lock when its process dies, so a crashed run leaves no stuck lock.

Fault injection for tests: ``ENDPROMPT_FAULT=kill:<point>[@<step>]`` SIGKILLs the process at that point of a save:
``<point>`` is ``model`` (after the weights), ``optimizer`` (after the optimizer state), ``manifest`` (all files
written, before the manifest) or ``rename`` (manifest written, before the rename); ``@<step>``: only that step's save.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["Checkpointer", "CheckpointError", "RunLock", "RunDirLocked", "latest_checkpoint", "verify_checkpoint",
           "write_manifest", "checkpoint_weights", "checkpoint_dirs", "atomic_write", "fault_point", "FAULT_ENV",
           "MANIFEST"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FAULT_ENV = "ENDPROMPT_FAULT"
FAULT_POINTS = ("model", "optimizer", "manifest", "rename")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or no checkpoint under a run directory is whole."""


class RunDirLocked(RuntimeError):
    """Another live run holds the run directory."""


def fault_point(point: str, step: int) -> None:
    """SIGKILL this process here if ``ENDPROMPT_FAULT`` asks for it (tests inject crashes this way, not by timing)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, _, where = spec.partition(":")
    name, _, at = where.partition("@")
    if action != "kill" or name not in FAULT_POINTS:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected kill:<point>[@<step>] with <point> one of "
                         f"{', '.join(FAULT_POINTS)}")
    if name == point and (not at or int(at) == step):
        os.kill(os.getpid(), signal.SIGKILL)


# --- durable files ----------------------------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` into a temporary file next to ``path``, sync it and rename it over ``path``: readers see the old
    file or the new one, never half of one. The temporary name is unique (``mkstemp``), so two processes rewriting the
    same file (two ``reproduce`` chains sharing a study directory) never rename or delete each other's half-written
    file: the last complete write wins."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        os.fsync(f.fileno())  # the bytes we hash are the bytes on disk before the rename publishes them
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(directory: Path, step: int) -> None:
    """Record size and SHA-256 of every file under ``directory`` in its manifest (written last, then synced)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"format": 1, "step": step,
                "files": {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _digest(p)}
                          for p in files}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _digest(directory / MANIFEST)
    _fsync_dir(directory)


def verify_checkpoint(directory: Path) -> str | None:
    """None if every file matches the manifest, else what is wrong."""
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (unfinished, or written by an older endprompt)"
    except (ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is unreadable ({err})"
    for name, want in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size} bytes, the manifest says {want['bytes']} (truncated?)"
        if _digest(path) != want["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest (damaged)"
    return None


def _step_dirs(root: Path) -> list[Path]:
    """Published checkpoint directories, newest first (``.tmp``/``.old`` names are unfinished or being replaced)."""
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest whole checkpoint under ``out_dir/checkpoints``, or None if there is none at all.

    A checkpoint that does not match its manifest is passed over with a warning; if checkpoints exist but none is
    whole, `CheckpointError` says so (a run never continues silently from a damaged one).
    """
    root = Path(out_dir) / "checkpoints"
    problems = []
    for path in _step_dirs(root):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        log.warning("checkpoint %s is damaged: %s; falling back to the previous checkpoint", path, problem)
        problems.append(f"{path.name}: {problem}")
    if problems:
        raise CheckpointError(f"no whole checkpoint under {root} ({'; '.join(problems)}); restore one, move the "
                              "directory away, or set run.resume=false to start over")
    return None


def checkpoint_weights(directory: str | Path) -> dict:
    """The model weights (a full state dict) of the checkpoint ``directory``, after its manifest check: never from a
    damaged or unfinished checkpoint. For reading a run's course (`endprompt.evaluate.answer_probe`), not resuming."""
    directory = Path(directory)
    problem = verify_checkpoint(directory)
    if problem:
        raise CheckpointError(f"checkpoint {directory}: {problem}")
    return _load(directory / "model.pt")


def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """A run's published checkpoint directories, oldest first."""
    return _step_dirs(Path(out_dir) / "checkpoints")[::-1]


# --- the lock ---------------------------------------------------------------------------------------------------------

class RunLock:
    """An exclusive lock on ``out_dir`` (the file ``out_dir/.lock``) for as long as a run lives.

    It is an ``flock``: the kernel releases it when the holding process dies, so the lock of a crashed run is taken over
    by the next run (with a warning naming the dead holder, whose note is still in the file). A clean exit empties the
    note. ``enabled=False`` (the other ranks of a distributed run) makes it a no-op.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True):
        self.out_dir, self.enabled, self.fd = Path(out_dir), enabled, None

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "a process"
            os.close(fd)
            raise RunDirLocked(f"run.out_dir {self.out_dir} is in use by a live run ({holder}); wait for it to "
                               "finish, stop it, or choose another run.out_dir") from None
        except OSError as err:  # a file system without flock: run unguarded rather than not at all
            log.warning("cannot lock %s (%s); make sure no other run uses this directory", path, err)
        stale = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if stale:
            log.warning("taking over the lock of %s from a run that is no longer alive (%s)", self.out_dir, stale)
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


# --- RNG state as tensors and plain values (loadable with weights_only=True) ------------------------------------------

def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "gauss": gauss},
            "python": [version, list(internal), py_gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load(path: Path):
    return torch.load(path, weights_only=True)


# --- the checkpointer -------------------------------------------------------------------------------------------------

class Checkpointer:
    """Writes and restores the checkpoints of one run (every rank holds one; collective calls on all of them).

    ``model`` is the prepared (possibly wrapped) model, ``module`` the one whose state dict is saved (unwrapped, or the
    FSDP-sharded model itself).
    """

    def __init__(self, out_dir: Path, acc, model, module, optimizer, scheduler, rank: int = 0, world: int = 1):
        self.out_dir, self.root = Path(out_dir), Path(out_dir) / "checkpoints"
        self.acc, self.model, self.module, self.optimizer, self.scheduler = acc, model, module, optimizer, scheduler
        self.rank, self.world = rank, world
        self.is_main = acc.is_main_process
        self.deepspeed = acc.state.deepspeed_plugin is not None

    def _state_dicts(self, with_optimizer: bool = True) -> tuple[dict, dict | None]:
        """Full (unsharded) state dicts, on the main process (others get empty dicts when distributed)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=self.world > 1)
        if not with_optimizer:
            return get_model_state_dict(self.module, options=opts), None
        return get_state_dict(self.module, getattr(self.optimizer, "optimizer", self.optimizer), options=opts)

    def _agree(self, error: OSError | None, what: Path) -> None:
        """Raise `CheckpointError` on every rank if writing failed on any (no rank is left waiting at a barrier)."""
        failed = torch.tensor(float(error is not None), device=self.acc.device)
        if self.world > 1:
            torch.distributed.all_reduce(failed)
        if not failed.item():
            return
        if self.is_main:
            shutil.rmtree(what.with_name(what.name + ".tmp"), ignore_errors=True)  # free what the failed write took
        latest = [p.name for p in _step_dirs(self.root)][:1] or ["none"]
        reason = ("disk full (ENOSPC)" if getattr(error, "errno", None) == errno.ENOSPC else str(error) if error
                  else "the write failed on another rank")
        raise CheckpointError(f"could not write {what}: {reason}; free space under {what.parent} (or choose another "
                              f"run.out_dir) and rerun to resume; the latest checkpoint is still {latest[0]}"
                              ) from error

    def _guarded(self, what: Path, write: Callable[[], None]) -> None:
        error = None
        try:
            write()
        except OSError as err:
            error = err
        self._agree(error, what)

    def save(self, step: int, trainer_state: dict) -> Path:
        """Write checkpoint ``step-<step>`` atomically; the state of every rank goes in."""
        final = self.root / f"step-{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        self._guarded(final, lambda: self._fresh_dir(tmp))
        if self.deepspeed:
            self._guarded(final, lambda: self.acc.save_state(str(tmp)))
        else:
            model_sd, optim_sd = self._state_dicts()
            self._guarded(final, lambda: self._write_weights(tmp, step, model_sd, optim_sd))
        self._guarded(final, lambda: torch.save(rng_state(), tmp / f"rng-rank{self.rank}.pt"))
        self._guarded(final, lambda: self._publish(tmp, final, step, trainer_state))
        return final

    def _fresh_dir(self, tmp: Path) -> None:
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)

    def _write_weights(self, tmp: Path, step: int, model_sd: dict, optim_sd: dict) -> None:
        if self.is_main:
            torch.save(model_sd, tmp / "model.pt")
            fault_point("model", step)
            torch.save(optim_sd, tmp / "optimizer.pt")
            fault_point("optimizer", step)

    def _publish(self, tmp: Path, final: Path, step: int, trainer_state: dict) -> None:
        if self.is_main:  # every rank's files are in (`_agree` after each phase is a collective)
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state))
            fault_point("manifest", step)
            write_manifest(tmp, step)
            fault_point("rename", step)
            if final.exists():  # the same step again (after a fallback): replace it
                old = final.with_name(final.name + ".old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)  # atomic: a checkpoint directory is whole or absent
            _fsync_dir(final.parent)

    def load(self, path: Path) -> dict:
        """Restore model, optimizer, scheduler and this rank's RNG from ``path``; returns the trainer's state."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        state = json.loads((path / "trainer_state.json").read_text())
        if self.deepspeed:
            self.acc.load_state(str(path))
        else:  # every rank reads the full state and keeps its own shard
            optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
            optim_state = _load(path / "optimizer.pt")
            saved, built = len(optim_state.get("param_groups", [])), len(optimizer.param_groups)
            if saved != built:  # set_state_dict would pair the groups up wrongly and the scheduler fail later
                raise CheckpointError(f"{path} holds an optimizer with {saved} parameter group(s) and this run builds "
                                      f"{built} (optim.adapter_lr gives LoRA adapters a group of their own): resume "
                                      "with the settings the run was written with, or start over with "
                                      "run.resume=false")
            set_state_dict(self.module, optimizer, model_state_dict=_load(path / "model.pt"),
                           optim_state_dict=optim_state, options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(_load(path / "scheduler.pt"))
        rng_file = path / f"rng-rank{self.rank}.pt"
        if rng_file.exists():
            set_rng_state(_load(rng_file))
        return state

    def clean(self) -> None:
        """Remove what killed saves left behind (``*.tmp``, ``*.old``); call under the run's lock."""
        if self.is_main:
            for leftover in [*self.root.glob("step-*.tmp"), *self.root.glob("step-*.old"),
                             self.out_dir / "final.tmp"]:
                shutil.rmtree(leftover, ignore_errors=True)

    def discard_all(self) -> None:
        """Remove every checkpoint (a run that starts over must never resume from an older run's state)."""
        if self.is_main and self.root.exists():
            log.warning("run.resume=false: removing the checkpoints of a previous run under %s", self.root)
            shutil.rmtree(self.root)
        self.acc.wait_for_everyone()

    def save_final(self, tokenizer, cfg) -> Path:
        """The final model with ``save_pretrained`` (LoRA merged), its tokenizer and config, renamed into place."""
        final = self.out_dir / "final"
        if self.deepspeed:
            state_dict = self.acc.get_state_dict(self.model)
        else:
            state_dict, _ = self._state_dicts(with_optimizer=False) if self.world > 1 else (None, None)
        self._guarded(final, lambda: self._write_final(final, state_dict, tokenizer, cfg))
        return final

    def _write_final(self, final: Path, state_dict: dict | None, tokenizer, cfg) -> None:
        from endprompt import modeling

        if not self.is_main:
            return
        model = self.module
        if state_dict is not None and hasattr(model, "merge_and_unload"):
            model.load_state_dict(state_dict)
            state_dict = None
        model = modeling.merge_lora(model)
        if cfg.recipe.spec.s2_attention:
            model.set_attn_implementation("sdpa")  # S2-Attn is for training; evaluate with full attention
        tmp = final.with_name("final.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "endprompt_config.yaml").write_text(cfg.to_yaml())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

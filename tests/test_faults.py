"""Faults survived: each test injects one fault into a real run of the tiny model (SIGKILL in the middle of a checkpoint
save, a damaged checkpoint, a full disk, a second run in the same directory, a torn metrics line, an interrupted study)
and checks what the README's "Faults survived" table promises. Kills go through ``ENDPROMPT_FAULT`` or a patched
function in a subprocess, never through timing."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from endprompt import cli
from endprompt.checkpoint import CheckpointError, RunDirLocked, RunLock, latest_checkpoint
from endprompt.config import load_config
from endprompt.train import train

ROOT = Path(__file__).resolve().parent.parent
RUN = ["recipe.name=endprompt-pose", "optim.max_steps=6", "optim.schedule=cosine", "run.save_every=2",
       "data.max_documents=40", "run.progress=false", "optim.micro_batch_size=2", "optim.warmup_steps=1",
       "run.log_every=1", "model.hidden_size=64"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("faults-cache")


@pytest.fixture(scope="module")
def whole(tmp_path_factory, cache):
    """The uninterrupted run every faulty run must end up identical to."""
    out = tmp_path_factory.mktemp("whole")
    return train(config(out, cache))


def overrides(out, cache, *extra):
    return [f"run.out_dir={out}", f"data.cache_dir={cache}", *RUN, *extra]


def config(out, cache, *extra):
    return load_config("tiny-cpu", overrides=overrides(out, cache, *extra))


def subprocess_env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def cli_train(out, cache, *extra, **env):
    args = [a for o in overrides(out, cache, *extra) for a in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "endprompt.cli", "train", "--preset", "tiny-cpu", *args],
                          capture_output=True, text=True, env=subprocess_env(**env), timeout=300)


def assert_same_run(result, reference):
    assert result.status == "completed" and result.losses == reference.losses
    a = load_file(f"{reference.final_dir}/model.safetensors")
    b = load_file(f"{result.final_dir}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # identical weights on CPU


@pytest.mark.parametrize("point", ["model", "optimizer", "manifest", "rename"])
def test_kill_during_a_checkpoint_save(point, tmp_path, cache, whole):
    proc = cli_train(tmp_path, cache, ENDPROMPT_FAULT=f"kill:{point}@4")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "step-00000004.tmp").is_dir()  # the save was cut short
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    resumed = train(config(tmp_path, cache))
    assert_same_run(resumed, whole)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000004", "step-00000006"]  # the leftover is cleaned up


def damage(path: Path, how: str) -> None:
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.parametrize(("file", "how"), [("model.pt", "truncate"), ("optimizer.pt", "flip")])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(file, how, tmp_path, cache, whole, caplog):
    train(config(tmp_path, cache, "run.stop_after=4"))
    damage(tmp_path / "checkpoints" / "step-00000004" / file, how)
    with caplog.at_level(logging.WARNING, logger="endprompt.checkpoint"):
        resumed = train(config(tmp_path, cache))
    assert f"step-00000004 is damaged: {file}" in caplog.text and "falling back" in caplog.text
    assert_same_run(resumed, whole)
    assert latest_checkpoint(tmp_path).name == "step-00000006"


def test_no_whole_checkpoint_stops_with_a_clear_error(tmp_path, cache):
    train(config(tmp_path, cache, "run.stop_after=2"))
    damage(tmp_path / "checkpoints" / "step-00000002" / "model.pt", "flip")
    with pytest.raises(CheckpointError, match="no whole checkpoint under .*step-00000002: model.pt does not match .*"
                                              "set run.resume=false to start over"):
        train(config(tmp_path, cache))
    assert train(config(tmp_path, cache, "run.resume=false", "optim.max_steps=2")).status == "completed"


def test_a_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path, cache, monkeypatch, capsys):
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if Path(path).parent.name == "step-00000004.tmp" and Path(path).name == "optimizer.pt":
            Path(path).write_bytes(b"\0" * 1000)  # what fitted before the disk filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["train", "--preset", "tiny-cpu", *[a for o in overrides(tmp_path, cache) for a in ("--set", o)]])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert (f"error: could not write {tmp_path / 'checkpoints' / 'step-00000004'}: disk full (ENOSPC); free space "
            f"under {tmp_path / 'checkpoints'}") in err and "the latest checkpoint is still step-00000002" in err
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert not (tmp_path / "checkpoints" / "step-00000004.tmp").exists()  # the partial write is freed
    assert not (tmp_path / "final").exists()


def test_a_second_run_in_a_held_directory_is_refused_and_a_dead_holder_is_taken_over(tmp_path, cache, caplog):
    with RunLock(tmp_path), pytest.raises(RunDirLocked, match=f"run.out_dir {tmp_path} is in use by a live run"):
        train(config(tmp_path, cache))
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before touching anything
    proc = cli_train(tmp_path, cache, ENDPROMPT_FAULT="kill:model@2")
    assert proc.returncode == -signal.SIGKILL
    with caplog.at_level(logging.WARNING, logger="endprompt.checkpoint"):
        assert train(config(tmp_path, cache, "optim.max_steps=2")).status == "completed"
    assert f"taking over the lock of {tmp_path} from a run that is no longer alive" in caplog.text


def test_a_line_torn_by_a_kill_in_metrics_is_dropped_on_resume(tmp_path, cache, whole):
    train(config(tmp_path, cache, "run.stop_after=4"))
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 3.1')  # killed while appending step 5's record
    assert_same_run(train(config(tmp_path, cache)), whole)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_starting_over_never_resumes_an_older_runs_checkpoint(tmp_path, cache, whole):
    train(config(tmp_path, cache, "run.stop_after=4", "optim.lr=1e-2"))  # another run's step-00000004 stays behind
    train(config(tmp_path, cache, "run.resume=false", "run.stop_after=2"))
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert_same_run(train(config(tmp_path, cache)), whole)


# --- an interrupted study -----------------------------------------------------------------------------------------

STUDY = """
import os, signal, sys
from dataclasses import replace
import pandas as pd
import endprompt.reproduce as rep
from endprompt.study import PRESETS

out, cache, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = replace(PRESETS["smoke"], out_dir=out, cache_dir=cache, methods=("pi", "endprompt"), eval_lengths=(256,))
real, calls = rep.evaluate, [0]

def evaluate(*args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # in the middle of a run's evaluation
    return real(*args, **kwargs)

rep.evaluate = evaluate
rep.run_study(cfg)
print("evaluate calls", calls[0])
"""


def study(out, cache, kill_at=0, **env):
    return subprocess.run([sys.executable, "-c", STUDY, str(out), str(cache), str(kill_at)], capture_output=True,
                          text=True, env=subprocess_env(**env), timeout=600)


def test_an_interrupted_study_resumes_without_redoing_or_duplicating(tmp_path, monkeypatch):
    out, cache = tmp_path / "out", tmp_path / "cache"
    # each (method, seed) run evaluates 4 suites: base calls 1-4, pi 5-8; kill inside pi's evaluation
    assert study(out, cache, kill_at=6).returncode == -signal.SIGKILL
    runs = out / "runs"
    assert sorted(p.parent.name for p in runs.glob("*/eval.csv")) == ["base-seed0"]
    base = runs / "base-seed0" / "eval.csv"
    finished = {base: base.stat().st_mtime_ns}
    # then kill inside endprompt's training (the save at its last step, 2)
    assert study(out, cache, ENDPROMPT_FAULT="kill:optimizer@2").returncode == -signal.SIGKILL
    pi = runs / "pi-seed0" / "eval.csv"
    assert pi.exists() and not (runs / "endprompt-seed0" / "eval.csv").exists()
    finished[pi] = pi.stat().st_mtime_ns
    done = study(out, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluate calls 4" in done.stdout  # only the unfinished run is evaluated
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished runs are not redone
    table = pd.read_csv(out / "results.csv")
    key = ["seed", "method", "task", "length", "metric", "depth"]
    assert not table.duplicated([k for k in key if k in table]).any()
    assert sorted(table["method"].unique()) == ["base", "endprompt", "pi"]
    parts = pd.concat([pd.read_csv(p) for p in sorted(runs.glob("*/eval.csv"))])
    assert len(table) == len(parts)
    # a kill while results.csv is rewritten leaves the previous file whole, never half of one
    before = (out / "results.csv").read_text()
    real_to_csv = pd.DataFrame.to_csv

    def torn(self, path=None, *args, **kwargs):
        if path is not None and "results.csv" in str(path):
            text = real_to_csv(self, None, *args, **kwargs)
            Path(path).write_text(text[: len(text) // 2])
            raise KeyboardInterrupt  # the process dies here
        return real_to_csv(self, path, *args, **kwargs)

    import endprompt.reproduce as rep
    from endprompt.study import PRESETS

    monkeypatch.setattr(pd.DataFrame, "to_csv", torn)
    with pytest.raises(KeyboardInterrupt):
        rep.run_study(replace(PRESETS["smoke"], out_dir=str(out), cache_dir=str(cache),
                              methods=("pi", "endprompt"), eval_lengths=(256,)))
    assert (out / "results.csv").read_text() == before

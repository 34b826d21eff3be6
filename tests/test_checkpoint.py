"""endprompt.checkpoint without training: manifests, picking the newest whole checkpoint, atomic writes, the run
directory lock, RNG state through weights_only loading, and no unsafe loading anywhere in the package."""

import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from endprompt import checkpoint as C
from endprompt.checkpoint import MANIFEST, CheckpointError, RunDirLocked, RunLock, latest_checkpoint

PACKAGE = Path(__file__).resolve().parent.parent / "endprompt"


def fake_checkpoint(root: Path, step: int) -> Path:
    path = root / "checkpoints" / f"step-{step:08d}"
    path.mkdir(parents=True)
    torch.save({"w": torch.arange(1000.0) + step}, path / "model.pt")
    torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(f'{{"step": {step}}}')
    C.write_manifest(path, step)
    return path


def flip_byte(path: Path, at: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_manifest_catches_truncation_bit_flips_and_missing_files(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    assert C.verify_checkpoint(path) is None
    flip_byte(path / "model.pt")
    assert "model.pt does not match its SHA-256" in C.verify_checkpoint(path)
    path = fake_checkpoint(tmp_path, 4)
    (path / "optimizer.pt").write_bytes((path / "optimizer.pt").read_bytes()[:-10])
    assert "optimizer.pt has" in C.verify_checkpoint(path) and "(truncated?)" in C.verify_checkpoint(path)
    path = fake_checkpoint(tmp_path, 6)
    (path / "trainer_state.json").unlink()
    assert C.verify_checkpoint(path) == "trainer_state.json is missing"
    path = fake_checkpoint(tmp_path, 8)
    (path / MANIFEST).unlink()
    assert C.verify_checkpoint(path).startswith("no manifest.json")


def test_latest_checkpoint_falls_back_with_a_warning_or_stops_when_none_is_whole(tmp_path, caplog):
    assert latest_checkpoint(tmp_path) is None
    older, newer = fake_checkpoint(tmp_path, 2), fake_checkpoint(tmp_path, 10)
    (tmp_path / "checkpoints" / "step-00000012.tmp").mkdir()  # a save that was killed: never a candidate
    assert latest_checkpoint(tmp_path) == newer  # 10 sorts after 2 by number
    flip_byte(newer / "model.pt")
    with caplog.at_level(logging.WARNING, logger="endprompt.checkpoint"):
        assert latest_checkpoint(tmp_path) == older
    assert "step-00000010 is damaged: model.pt does not match" in caplog.text
    (older / "optimizer.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no whole checkpoint under .*checkpoints \\(step-00000010: model.pt "
                                              "does not match .*; step-00000002: optimizer.pt has 0 bytes"):
        latest_checkpoint(tmp_path)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "results.csv"
    C.atomic_write(target, lambda tmp: tmp.write_text("a,b\n1,2\n"))

    def half_then_crash(tmp):
        tmp.write_text("a,b\n1,")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.atomic_write(target, half_then_crash)
    assert target.read_text() == "a,b\n1,2\n" and os.listdir(tmp_path) == ["results.csv"]


def test_atomic_write_survives_a_second_writer_of_the_same_file(tmp_path):
    """Two processes rewriting one file (two `reproduce` chains writing study.json) must not share a temporary name:
    the inner write below lands while the outer one is half done, as the second process's would."""
    target = tmp_path / "study.json"

    def outer(tmp):
        tmp.write_text("outer")
        C.atomic_write(target, lambda inner_tmp: inner_tmp.write_text("inner"))
        assert tmp.read_text() == "outer"  # the other writer neither replaced nor deleted this half

    C.atomic_write(target, outer)
    assert target.read_text() == "outer" and os.listdir(tmp_path) == ["study.json"]


def test_rng_state_round_trips_through_weights_only_loading(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    torch.save(C.rng_state(), tmp_path / "rng.pt")
    expected = torch.rand(3), np.random.standard_normal(3), random.random()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    C.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = torch.rand(3), np.random.standard_normal(3), random.random()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PLANTED_MARK"]),))


def test_a_planted_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    mark = tmp_path / "code-ran"
    monkeypatch.setenv("PLANTED_MARK", str(mark))
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"w": _Planted()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        C._load(tmp_path / "model.pt")
    assert not mark.exists()


def test_the_package_never_loads_unsafely():
    offenders = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if "weights_only=False" in line.replace(" ", "") or "trust_remote_code" in line]
    assert offenders == []


def test_a_bad_fault_spec_is_an_error(monkeypatch):
    monkeypatch.setenv("ENDPROMPT_FAULT", "kill:weights")
    with pytest.raises(ValueError, match="expected kill:<point>\\[@<step>\\] with <point> one of model, optimizer"):
        C.fault_point("model", 2)
    monkeypatch.setenv("ENDPROMPT_FAULT", "kill:model@3")
    C.fault_point("model", 2)  # another step's save: nothing happens


HOLD = "import sys, time; from endprompt.checkpoint import RunLock; RunLock(sys.argv[1]).__enter__(); print('held', " \
       "flush=True); {then}"


def hold_lock(out: Path, then: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(then=then), str(out)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_run_keeps_its_directory_and_a_dead_one_does_not(tmp_path, caplog):
    with RunLock(tmp_path), pytest.raises(RunDirLocked, match=f"run.out_dir {tmp_path} is in use by a live run "
                                                               f"\\(pid {os.getpid()} on "):
        RunLock(tmp_path).__enter__()
    live = hold_lock(tmp_path, "time.sleep(60)")
    try:
        with pytest.raises(RunDirLocked, match=f"in use by a live run \\(pid {live.pid} on .*choose another "
                                               "run.out_dir"):
            RunLock(tmp_path).__enter__()
    finally:
        live.kill()
        live.wait()
    # the holder died (SIGKILL: no clean-up ran); its note is still in the file, its lock is gone
    dead = hold_lock(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert dead.wait() == -signal.SIGKILL
    with caplog.at_level(logging.WARNING, logger="endprompt.checkpoint"), RunLock(tmp_path):
        time.sleep(0)
    assert f"taking over the lock of {tmp_path} from a run that is no longer alive (pid {dead.pid}" in caplog.text
    with RunLock(tmp_path):  # a clean exit leaves nothing to take over
        pass

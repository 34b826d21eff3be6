"""Two processes on CPU with gloo, launched by torchrun: DDP and FSDP2 (torch fully_shard) train exactly like one
process on the same global batch: same losses and gradient norms every step, same final weights up to float rounding."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.tolerances import DISTRIBUTED_WEIGHTS_ATOL, REDUCTION_RTOL

ARGS = ["--preset", "tiny-cpu", "--set", "optim.max_steps=3", "--set", "run.progress=false", "--set",
        "data.max_documents=40", "--set", "optim.warmup_steps=0", "--set", "optim.max_grad_norm=1e9", "--set",
        "run.log_every=1", "--set", "model.hidden_size=64", "--set", "recipe.name=endprompt-random"]


def run(out, cache, *extra, procs=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)] if procs > 1 else \
        [sys.executable]
    cmd = [*launcher, "-m", "endprompt.cli", "train", *ARGS, "--set", f"run.out_dir={out}", "--set",
           f"data.cache_dir={cache}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    return root, run(root / "single", root / "cache", "--set", "optim.micro_batch_size=2")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_match_one(single, strategy):
    root, reference = single
    metrics = run(root / strategy, root / "cache", "--set", "optim.micro_batch_size=1", "--set",
                  f"run.strategy={strategy}", procs=2)
    for got, want in zip(metrics, reference, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=REDUCTION_RTOL)
        # the gradient norm exposes any gradient scaling error
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=REDUCTION_RTOL)
        assert got["tokens"] == want["tokens"]
    a = load_file(root / "single" / "final" / "model.safetensors")
    b = load_file(root / strategy / "final" / "model.safetensors")
    assert set(a) == set(b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < DISTRIBUTED_WEIGHTS_ATOL

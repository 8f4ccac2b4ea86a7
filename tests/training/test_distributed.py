"""`torchrun -m training`: two CPU processes (gloo) train one model and resume with one."""

from __future__ import annotations

import os
import subprocess
import sys

from app import cli
from engine.checkpoint import read_checkpoint
from training.runfiles import read_metrics, read_state


def _torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(processes), "-m", "training", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_two_processes_train_together_and_the_run_resumes_in_one(landscapes, tmp_path):
    out = tmp_path / "run"
    done = _torchrun(2, "--data", str(landscapes), "--preset", "tiny", "--out", str(out),
                     "--steps", "2", "--batch", "2", "--device", "cpu",
                     "--sample-every", "0", "--metric-every", "0", "--log-every", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    state = read_state(out)
    assert state.info["world_size"] == 2
    assert state.info["images_seen"] == 2 * 2 * 2  # steps x batch x processes
    assert {"data", "latent", "data@1", "latent@1"} <= state.rng.keys()
    assert [r["step"] for r in read_metrics(out)] == [1, 2]  # written once, by rank 0
    read_checkpoint(out / "checkpoints" / "latest.safetensors")

    argv = ["train", "--out", str(out), "--resume", "--steps", "3", "--metric-every", "0"]
    assert cli.main(argv) == 0
    resumed = read_state(out)
    assert resumed.info["step"] == 3 and resumed.info["world_size"] == 1

"""`python -m training.bench`: training speed on random data, as the official anchor measures it.

Runs the real training iteration (D step, lazy R1, G step, lazy path length, EMA update)
of `training.loop` on a bank of random images and reports images/s over a whole number of
R1 periods (16 iterations by default), so that the lazy regularisers are counted at their
true share. `--phases` times each part of the iteration separately (with a device
synchronisation around each, so the total is a little slower than the plain run);
`--profile` prints the operators that take the most device time. `--count-ops` counts the
tensor operations one iteration dispatches (forward, backward and optimiser): small models
train at the speed the host issues operations, so on a GPU the count sets the pace.

    python -m training.bench --preset paper --batch 16 --device cuda --phases --json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.device import resolve_device
from training.config import TrainConfig, default_train_config
from training.data import DatasetReport, ImageBank
from training.loop import _Trainer

R1_PERIOD = 16  # iterations over which every lazy regulariser runs its share
PHASES = ("_real_batch", "_d_step", "_r1_step", "_g_step", "_path_step", "_ema_update")
RANDOM_IMAGES = 16


def random_bank(config: TrainConfig, images: int = RANDOM_IMAGES, seed: int = 0) -> ImageBank:
    """A bank of uniform-noise images twice the full size, with scale crops as a small set."""
    model = config.model
    side = 2 * model.full_size
    generator = torch.Generator().manual_seed(seed)
    pixels = [
        torch.randint(0, 256, (3, side, side), generator=generator, dtype=torch.uint8)
        for _ in range(images)
    ]
    report = DatasetReport("random", images, (side,) * images, ())
    return ImageBank(pixels, model.full_size, model.patch_size, True, report)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_phases(trainer: _Trainer, device: torch.device) -> dict[str, float]:
    """Wrap the trainer's phase methods so that each call adds its seconds to the result."""
    totals: dict[str, float] = defaultdict(float)

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync(device)
            start = time.perf_counter()
            out = method(*args, **kwargs)
            _sync(device)
            totals[name.strip("_").removesuffix("_step")] += time.perf_counter() - start
            return out

        return timed

    for name in PHASES:
        setattr(trainer, name, wrap(name, getattr(trainer, name)))
    return totals


def run_bench(
    preset: str = "paper",
    batch: int = 16,
    iterations: int = 64,
    warmup: int = 16,
    device: str = "auto",
    phases: bool = False,
    profile: int = 0,
    count_ops: bool = False,
    compile: bool | None = None,
) -> dict[str, Any]:
    """Train `warmup` then `iterations` iterations; the measured numbers as a dict.
    `compile`: TrainConfig.compile (None: on CUDA); its compilation falls in the warm-up."""
    dev = resolve_device(device)
    cfg = default_train_config(preset, batch=batch, device=str(dev), compile=compile)
    trainer = _Trainer(cfg, random_bank(cfg), dev, loss_hook=None)
    start = time.perf_counter()
    for _ in range(warmup):
        trainer.iteration()
    _sync(dev)
    warmup_s = time.perf_counter() - start
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    totals = _timed_phases(trainer, dev) if phases else {}
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.iteration()
    _sync(dev)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "preset": preset,
        "batch": batch,
        "iterations": iterations,
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "mixed_precision": trainer.amp,
        "compiled": trainer.compiled,
        "warmup_s": round(warmup_s, 1),
        "images_per_s": round(iterations * batch / seconds, 2),
        "ms_per_iteration": round(seconds / iterations * 1e3, 2),
    }
    if phases:
        result["phase_ms_per_iteration"] = {
            name: round(total / iterations * 1e3, 2) for name, total in totals.items()
        }
    if dev.type == "cuda":
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    if count_ops:
        result["ops_per_iteration"] = _ops_per_iteration(trainer, R1_PERIOD)
    if profile:
        result["profile"] = _profile(trainer, dev, profile)
    return result


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_per_iteration(trainer: _Trainer, iterations: int) -> float:
    """Mean number of aten operations dispatched per iteration over `iterations`."""
    with _OpCounter() as counter:
        for _ in range(iterations):
            trainer.iteration()
    return counter.count / iterations


def _profile(trainer: _Trainer, device: torch.device, iterations: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        for _ in range(iterations):
            trainer.iteration()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    kernels = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    return f"device kernels per iteration: {kernels / iterations:.0f}\n{table}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__)
    parser.add_argument("--preset", default="paper", choices=("tiny", "lite", "paper"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=64, help="a multiple of 16")
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--phases", action="store_true", help="time each part of an iteration")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="profile N more iterations"
    )
    parser.add_argument(
        "--count-ops", action="store_true", help="count the operations of 16 more iterations"
    )
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto", help="auto: on CUDA"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = parser.parse_args(argv)
    result = run_bench(
        args.preset,
        args.batch,
        args.iterations,
        args.warmup,
        args.device,
        args.phases,
        args.profile,
        args.count_ops,
        None if args.compile == "auto" else args.compile == "on",
    )
    table = result.pop("profile", None)
    if table:
        print(table)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line of training: `infinity-canvas train ...` and `python -m training ...` alike.

    train --data DIR --preset tiny|lite|paper --out RUN_DIR [--steps N] [--batch B]
          [--device D] [--seed S] [--augment auto|on|off] [...]
    train --data DIR --init CHECKPOINT --out RUN_DIR [...]      (fine-tune a model)
    train --out RUN_DIR --resume [--steps N] [--device D]
    train --evaluate CHECKPOINT --data DIR [--metric-images N] [--scales 1,4,16]

A run stops cleanly (full state saved, exit status 0) on SIGINT/SIGTERM or when a file
named STOP appears in the run folder; `--resume` continues it exactly. `--evaluate` prints
the ScaleInv-SWD metrics of any checkpoint as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.checkpoint import read_checkpoint
from engine.model import PRESETS
from training.config import TrainConfig, default_train_config
from training.loop import Progress, train
from training.runfiles import read_config

DEFAULT_PRESET = "lite"
USAGE_ERROR = 2
_USER_ERRORS = (ValueError, FileNotFoundError, PermissionError)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `train` sub-command."""
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="folder of training images (searched recursively)"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"model size (default for a new run: {DEFAULT_PRESET})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="RUN_DIR",
        help="run folder (config, metrics, samples, checkpoints)",
    )
    parser.add_argument(
        "--steps", type=_positive_int, help="total training iterations (default: 100000)"
    )
    parser.add_argument("--batch", type=_positive_int, help="batch size, even (default: 16)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--seed", type=int, help="random seed (default: 0)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out where it stopped"
    )
    parser.add_argument(
        "--init",
        type=Path,
        metavar="CHECKPOINT",
        help="start a new run from this checkpoint's weights (fine-tuning; its preset is used)",
    )
    parser.add_argument(
        "--augment",
        choices=("auto", "on", "off"),
        help="DiffAugment and random-scale crops (auto: on below 1,000 images)",
    )
    parser.add_argument(
        "--diversity", choices=("paper", "official"), help="diversity loss variant (default: paper)"
    )
    parser.add_argument(
        "--mixed-precision", choices=("auto", "on", "off"), help="bf16 autocast (auto: on CUDA)"
    )
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        help="torch.compile the D and G steps (auto: on CUDA; up to 2.5 minutes at the start)",
    )
    for name, default in (("log", 10), ("sample", 1000), ("checkpoint", 5000), ("metric", 5000)):
        parser.add_argument(
            f"--{name}-every",
            type=_non_negative_int,
            metavar="N",
            help=f"steps between {name}s (default: {default}; 0: never)",
        )
    parser.add_argument(
        "--metric-images", type=_positive_int, metavar="N", help="images per SWD set (default: 64)"
    )
    parser.add_argument(
        "--scales", type=_scales, metavar="S,S", help="ScaleInv scales (default: 1,4)"
    )
    parser.add_argument(
        "--evaluate",
        type=Path,
        metavar="CHECKPOINT",
        help="print the SWD metrics of CHECKPOINT against --data as JSON, then exit",
    )


def run(args: argparse.Namespace) -> int:
    """Train (or evaluate); returns 0. User errors raise ValueError / FileNotFoundError."""
    if args.evaluate is not None:
        return _evaluate(args)
    if args.out is None:
        raise ValueError("--out RUN_DIR is required")
    cfg = _resumed_config(args) if args.resume else _new_config(args)
    with _stop_on_signals() as stop:
        latest = train(
            cfg, args.out, resume=args.resume, on_progress=_print_progress, should_stop=stop.is_set
        )
    print(f"latest checkpoint: {latest}", file=sys.stderr)
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Schedule options given on the command line (the ones a resume may change too)."""
    out: dict[str, Any] = {}
    if args.steps is not None:
        out["steps"] = args.steps
    if args.device is not None:
        out["device"] = args.device
    if args.data is not None:
        out["data_dir"] = str(args.data.expanduser().resolve())
    for name in ("mixed_precision", "compile"):
        choice = getattr(args, name)
        if choice is not None:
            out[name] = None if choice == "auto" else choice == "on"
    for name in ("log", "sample", "checkpoint", "metric"):
        value = getattr(args, f"{name}_every")
        if value is not None:
            out[f"{name}_every"] = value
    if args.metric_images is not None:
        out["metric_images"] = args.metric_images
    if args.scales is not None:
        out["metric_scales"] = args.scales
    return out


def _learning_options(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.batch is not None:
        out["batch"] = args.batch
    if args.seed is not None:
        out["seed"] = args.seed
    if args.diversity is not None:
        out["diversity"] = args.diversity
    if args.augment is not None:
        value = None if args.augment == "auto" else args.augment == "on"
        out["diff_augment"] = out["scale_crops"] = value
    return out


def _new_config(args: argparse.Namespace) -> TrainConfig:
    if args.data is None:
        raise ValueError("--data DIR is required for a new run")
    preset, initial = args.preset or DEFAULT_PRESET, {}
    if args.init is not None:
        model = read_checkpoint(args.init).generator.config
        if args.preset is not None and args.preset != model.preset:
            raise ValueError(f"--init {args.init} is a {model.preset} model, not {args.preset}")
        preset = model.preset
        initial = {"model": model, "init_from": str(args.init.expanduser().resolve())}
    return default_train_config(preset, **initial, **_learning_options(args), **_overrides(args))


def _resumed_config(args: argparse.Namespace) -> TrainConfig:
    stored = read_config(args.out)
    changed = {k: v for k, v in _learning_options(args).items() if getattr(stored, k) != v}
    if args.preset is not None and args.preset != stored.model.preset:
        changed["preset"] = args.preset
    if args.init is not None and str(args.init.expanduser().resolve()) != stored.init_from:
        changed["init"] = str(args.init)
    if changed:
        raise ValueError(
            f"{args.out} was trained with other settings ({', '.join(sorted(changed))}); "
            "a resumed run keeps its config"
        )
    return dataclasses.replace(stored, **_overrides(args))


def _evaluate(args: argparse.Namespace) -> int:
    from training.metrics import evaluate_checkpoint

    if args.data is None:
        raise ValueError("--evaluate needs --data DIR (the real images to compare with)")
    results = evaluate_checkpoint(
        args.evaluate,
        args.data,
        images=args.metric_images or 64,
        scales=args.scales or (1, 4),
        device=args.device or "auto",
        seed=args.seed or 0,
    )
    print(json.dumps(results, indent=2))
    return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while training (a second SIGINT interrupts at once)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (state will be saved) ...", file=sys.stderr)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_SHOWN = ("d_total", "g_total", "g_diversity", "r1", "path_length", "swd")


def _print_progress(p: Progress) -> None:
    """One line per event on stderr: the CLI's progress display."""
    if p.event == "log":
        shown = "  ".join(
            f"{k} {p.values[k]:.4g}" for k in _SHOWN if isinstance(p.values.get(k), float)
        )
        rate = f"{p.images_per_s:.1f} img/s  {p.elapsed_s:.0f} s"
        line = f"step {p.step}/{p.total_steps}  {shown}  {rate}"
    elif p.event in ("sample", "checkpoint", "done"):
        line = f"step {p.step}: {p.event} {p.path}"
    elif p.event in ("guard", "rollback"):
        action, term = p.values.get("action", p.event), p.values.get("term", "")
        line = f"step {p.step}: NaN guard: {action} {term}"
    elif p.event == "metrics":
        return  # shown with the log record of the same step
    else:
        line = f"step {p.step}: {p.event}" + (f": {p.message}" if p.message else "")
    print(line, file=sys.stderr, flush=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _scales(text: str) -> tuple[int, ...]:
    try:
        scales = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"scales must be integers like 1,4,16, got {text}"
        ) from None
    if not scales or any(s < 1 for s in scales):
        raise argparse.ArgumentTypeError(f"scales must be positive integers, got {text}")
    return scales


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training ...`: the same options and exit statuses as `infinity-canvas train`."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug)"
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    level = (
        logging.WARNING
        if args.verbose <= 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except _USER_ERRORS as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130

"""`infinity-canvas bench`: measure rendering speed on this machine (see engine.bench)."""

from __future__ import annotations

import argparse
import sys

from engine import load_generator
from engine.bench import format_result, result_json, run_bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="lite", help="model preset with random weights (default: lite)"
    )
    parser.add_argument("--checkpoint", help="benchmark this checkpoint instead of a preset")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="measure the throughput through the compiled generator, as export --compile renders",
    )
    parser.add_argument(
        "--window",
        type=_window,
        help="throughput render windows, WxH px (default: a gigapixel export's on this device)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput measurement time")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")


def run(args: argparse.Namespace) -> int:
    generator = load_generator(
        args.checkpoint, preset=None if args.checkpoint else args.preset, device=args.device
    )
    result = run_bench(
        generator,
        precision=args.precision,
        compile=args.compile,
        window=args.window,
        throughput_seconds=args.seconds,
        on_progress=lambda message: print(f"... {message}", file=sys.stderr, flush=True),
    )
    print(format_result(result))
    if args.json:
        print(result_json(result))
    return 0


def _window(text: str) -> tuple[int, int]:
    try:
        w, h = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 2048x512, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"a window is at least 16 x 16 px, got {text!r}")
    return w, h

"""`infinity-canvas gui`: open the explorer window and run until it closes.

Qt and qasync are imported inside `run`, not at module level, so that `--help` and argument
errors stay fast and the arguments are validated before any window appears.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from pathlib import Path

from app.about import APP_NAME, ORGANIZATION, app_version

DEVICES = ("auto", "cpu", "cuda", "mps")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `gui` sub-command."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="model checkpoint (*.safetensors) to open",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--device",
        choices=DEVICES,
        help="where the model runs; auto picks CUDA, then MPS, then the CPU "
        "(default: the last choice made in the window, else auto)",
    )
    where.add_argument(
        "--devices",
        metavar="LIST",
        help="render on several devices, one worker each: cuda:0,cuda:1,... or all (every "
        "CUDA GPU); tiles and exports are the same as on one device. Choosing a device in "
        "the World dock goes back to one",
    )
    parser.add_argument(
        "--seed", type=int, help="world seed (default: a random one; the seed box shows it)"
    )
    parser.add_argument(
        "project", nargs="?", type=Path, help="project file (*.icanvas) to open", default=None
    )
    # Hidden: lets the smoke test start the real GUI and have it close itself.
    parser.add_argument("--quit-after-ms", type=_positive_int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Show the main window and run the Qt/asyncio event loop until the application quits.

    Raises FileNotFoundError / ValueError for a checkpoint that is missing or not a file (the
    CLI reports those as user errors). Returns 0 once the loop has been closed cleanly.
    """
    _check_checkpoint(args.checkpoint)
    if args.project is not None and not args.project.is_file():
        raise FileNotFoundError(errno.ENOENT, "project not found", str(args.project))
    log.info("device: %s, checkpoint: %s", args.device, args.checkpoint or "default")

    import qasync
    import torch
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.project import ModelRef
    from app.session import load_model
    from app.settings import Settings
    from app.world_panel import available_devices

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setApplicationName(APP_NAME)
    qt_app.setOrganizationName(ORGANIZATION)
    qt_app.setApplicationVersion(app_version())
    # Leave a core to the UI thread: rendering runs on worker threads in parallel with it.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))

    settings = Settings()
    devices = None
    if args.devices is not None:
        from engine.device import resolve_devices

        devices = [str(d) for d in resolve_devices(args.devices)]  # ValueError: a user error
        device = devices[0]
    else:
        device = args.device or settings.device
        if device not in available_devices():  # e.g. a GPU chosen last time is gone
            device = "auto"
    ref = ModelRef.default() if args.checkpoint is None else ModelRef.of_file(args.checkpoint)
    model = load_model(ref, device)  # CheckpointError (a ValueError) reaches the CLI

    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    quitting = asyncio.Event()
    qt_app.aboutToQuit.connect(quitting.set)

    window = MainWindow(model, seed=args.seed, device=device, devices=devices, settings=settings)
    window.show()
    if args.project is not None:
        window.open_project(args.project)
    else:
        window.offer_recovery()
    if args.quit_after_ms is not None:
        QTimer.singleShot(args.quit_after_ms, window.close)
    # Ctrl+C in the terminal closes the window as File > Quit does (Python runs the handler
    # between Qt events, which the window's timers keep coming).
    interrupt = signal.signal(signal.SIGINT, lambda *_: QTimer.singleShot(0, window.close))
    log.info("window open; Ctrl+C in this terminal closes it")

    # Leaving the `with` closes the loop and joins its executor threads; a loop or QThread
    # still alive at interpreter exit makes Qt abort the process.
    try:
        with loop:
            loop.run_until_complete(quitting.wait())
    finally:
        signal.signal(signal.SIGINT, interrupt)
    asyncio.set_event_loop(None)
    return 0


def _check_checkpoint(path: Path | None) -> None:
    if path is None:
        return
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "checkpoint not found", str(path))
    if not path.is_file():
        raise ValueError(f"checkpoint is not a file: {path}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value

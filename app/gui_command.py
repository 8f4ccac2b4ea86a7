"""`infinity-canvas gui`: open the explorer window and run until it closes.

Qt and qasync are imported inside `run`, not at module level, so that `--help` and argument
errors stay fast and the arguments are validated before any window appears.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
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
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the model runs; auto picks CUDA, then MPS, then the CPU (default: auto)",
    )
    # Hidden: lets the smoke test start the real GUI and have it close itself.
    parser.add_argument("--quit-after-ms", type=_positive_int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Show the main window and run the Qt/asyncio event loop until the application quits.

    Raises FileNotFoundError / ValueError for a checkpoint that is missing or not a file (the
    CLI reports those as user errors). Returns 0 once the loop has been closed cleanly.
    """
    _check_checkpoint(args.checkpoint)
    log.info("device: %s, checkpoint: %s", args.device, args.checkpoint or "default")

    import qasync
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setApplicationName(APP_NAME)
    qt_app.setOrganizationName(ORGANIZATION)
    qt_app.setApplicationVersion(app_version())

    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    quitting = asyncio.Event()
    qt_app.aboutToQuit.connect(quitting.set)

    window = MainWindow()
    window.show()
    if args.quit_after_ms is not None:
        QTimer.singleShot(args.quit_after_ms, window.close)

    # Leaving the `with` closes the loop and joins its executor threads; a loop or QThread
    # still alive at interpreter exit makes Qt abort the process.
    with loop:
        loop.run_until_complete(quitting.wait())
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

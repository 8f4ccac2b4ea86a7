"""The `infinity-canvas` console entry point and its sub-command registry.

A sub-command is one line in `SUBCOMMANDS`, `(name, module, one-line help)`, plus its module,
which exposes

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int          # the process exit status

Only the module of the sub-command named on the command line is imported, so for example
`infinity-canvas render ...` never imports Qt. With no sub-command the GUI starts.

User errors (`ValueError`, `FileNotFoundError`, `PermissionError` raised by `run`) are printed
as `infinity-canvas: error: <message>` with exit status 2, the same as argparse's usage errors;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from app.about import APP_NAME, DESCRIPTION, app_version

PROG = "infinity-canvas"
DEFAULT_COMMAND = "gui"

# (name, module, one-line help), in the order `--help` lists them.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("gui", "app.gui_command", "open the explorer window (the default)"),
    ("train", "app.train_command", "train a model from a folder of images (or --evaluate one)"),
    ("render", "app.render_command", "render a rectangle of a world to an image file"),
    ("outpaint", "app.outpaint_command", "place a photo in a world by inversion (a project)"),
    ("export", "app.export_command", "export a rectangle of any size to disk, resumable"),
    ("bench", "app.bench_command", "measure rendering speed on this machine"),
    ("convert-official", "app.convert_command", "convert an official InfinityGAN checkpoint"),
)

USAGE_ERROR = 2
INTERRUPTED = 130
_USER_ERRORS = (ValueError, FileNotFoundError, PermissionError)
_NO_DEFAULT_WITH = frozenset({"-h", "--help", "--version"})

log = logging.getLogger(__name__)


class SubcommandModule(Protocol):
    """What a module registered in `SUBCOMMANDS` provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def selected_command(argv: Sequence[str]) -> str | None:
    """The sub-command token of `argv` (registered or not), or None when there is none.

    Global options take no values, so the sub-command is the first token not starting with "-".
    """
    return next((token for token in argv if not token.startswith("-")), None)


def with_default_command(argv: Sequence[str]) -> list[str]:
    """`argv` with `DEFAULT_COMMAND` appended when it names no sub-command and asks for no help."""
    argv = list(argv)
    if selected_command(argv) is None and not _NO_DEFAULT_WITH.intersection(argv):
        argv.append(DEFAULT_COMMAND)
    return argv


def load_subcommand(module_path: str) -> SubcommandModule:
    """Import a sub-command module; fails loudly if it lacks `add_arguments` or `run`."""
    module = importlib.import_module(module_path)
    for attribute in ("add_arguments", "run"):
        if not callable(getattr(module, attribute, None)):
            raise TypeError(f"sub-command module {module_path} has no {attribute}()")
    return cast(SubcommandModule, module)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The full parser. Every sub-command is listed, but only `selected` is imported and given
    its arguments (and `run` as the `run` default), so parsing stays cheap and Qt-free."""
    parser = argparse.ArgumentParser(prog=PROG, description=f"{APP_NAME}: {DESCRIPTION}")
    parser.add_argument("--version", action="version", version=f"%(prog)s {app_version()}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    commands.required = True
    for name, module_path, help_text in SUBCOMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = load_subcommand(module_path)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `infinity-canvas` with `argv` (default: `sys.argv[1:]`); returns the exit status:
    0 success, 2 usage or user error, 130 interrupted, otherwise what the sub-command returned."""
    argv = with_default_command(sys.argv[1:] if argv is None else argv)
    parser = build_parser(selected_command(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits for --help, --version and usage errors
        return _exit_status(exit_.code)
    _configure_logging(args.verbose)
    log.debug("running sub-command %s", args.command)
    if args.command != "gui":  # the window keeps glibc's defaults (see engine.allocator)
        from engine.allocator import reuse_freed_memory

        reuse_freed_memory()
    try:
        return int(args.run(args))
    except _USER_ERRORS as error:
        print(f"{PROG}: error: {_describe(error)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return INTERRUPTED


def run() -> None:
    """The console script: `main`, then exit with its status.

    A process that used a GPU skips the interpreter's teardown once its threads have ended
    and the other exit handlers have run: tearing the CUDA libraries down allocated about
    110 MiB, so a gigapixel export on an H200 peaked at 1,606-1,615 MiB with it and at
    1,467-1,505 MiB without. Nothing of ours is left to release by then."""
    status = [1]  # what a bug's traceback exits with
    # Exit handlers run last-registered first; the ones of modules imported before this
    # (logging's) would run after this one, so it calls them itself.
    atexit.register(_end_without_gpu_teardown, status)
    try:
        status[0] = main()
    except SystemExit as exit_:  # a sub-command that exits by itself
        status[0] = _exit_status(exit_.code)
        raise
    raise SystemExit(status[0])


def _end_without_gpu_teardown(status: list[int]) -> None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status[0])


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _describe(error: Exception) -> str:
    """A one-line message for the user; OS errors name the file they are about."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    return str(error) or type(error).__name__


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    run()

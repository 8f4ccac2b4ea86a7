"""Files written whole or not at all: a temporary file beside the target, then a rename;
and files kept on their way to the disk while they grow (`BackgroundSync`)."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SYNC_SECONDS = 2.0  # how often a BackgroundSync fsyncs a file that has changed


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` for a temporary file in `path`'s folder, flush it to disk, then rename
    it over `path`; on any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    return replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_bytes_atomically(path, text.encode("utf-8"))


class BackgroundSync:
    """fsyncs a growing file every SYNC_SECONDS from a thread of its own while `changed()` is
    called, so that no writer waits for the disk, and the fsync that ends the file finds
    little left to write. `stop()` ends the thread (idempotent); call it before closing."""

    def __init__(self, fileno: int, name: str) -> None:
        self._fileno, self._name = fileno, name
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sync {name}", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        self._dirty.set()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(SYNC_SECONDS):
            if self._dirty.is_set():
                self._dirty.clear()
                try:
                    os.fsync(self._fileno)
                except OSError:
                    log.warning("could not fsync %s", self._name, exc_info=True)

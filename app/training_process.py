"""The training subprocess and the run folder it writes, as the training tab sees them.

`TrainingProcess` runs `python -m training ...` through QProcess, never inside the GUI
process: a crash or an out-of-memory kill of training cannot take the window down, and the
window never waits for a training step. It stops a run the way the trainer expects (see
training.loop): a file named STOP in the run folder, which the trainer honours after the
current step by saving its full state and exiting with status 0. A run that has not exited
`stop_timeout_ms` later gets SIGTERM (on POSIX also a graceful stop), then, after
`kill_timeout_ms`, a kill; the state folder is swapped in atomically, so even a kill leaves
the last complete state behind.

The readers below (`MetricsTail`, `RunSummary`, `list_runs`, `newest_sample`,
`run_checkpoints`) are Qt-free and read only files the trainer writes atomically
(training.runfiles), so polling a live run folder is safe.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal, Slot

from training.runfiles import CONFIG_FILE, METRICS_FILE, STATE_DIR, STOP_FILE, read_config

log = logging.getLogger(__name__)

TAIL_LINES = 40  # lines of the trainer's output kept for the error panel
STOP_TIMEOUT_MS = 120_000  # a paper-preset step plus a state save on a slow CPU fits in this
KILL_TIMEOUT_MS = 10_000


# The command line --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainRequest:
    """One launch of the trainer; `arguments()` is its command line (training.cli).

    A new run needs `data_dir` and `preset`, and may start from the weights of a checkpoint
    of that preset (`init`: fine-tuning); a resumed one (`resume=True`) keeps its stored
    config, so only the schedule (`steps`, `device`, the intervals) may be given. None
    leaves an option to the trainer (its default, or the stored value on resume).
    """

    run_dir: Path
    resume: bool = False
    data_dir: Path | None = None
    preset: str | None = None
    init: Path | None = None
    batch: int | None = None
    steps: int | None = None
    device: str | None = None
    log_every: int | None = None
    sample_every: int | None = None
    checkpoint_every: int | None = None
    metric_every: int | None = None

    def __post_init__(self) -> None:
        if not self.resume and (self.data_dir is None or self.preset is None):
            raise ValueError("a new training run needs a data folder and a preset")
        if self.resume and (
            self.preset is not None or self.batch is not None or self.init is not None
        ):
            raise ValueError("a resumed run keeps its preset, batch size and initial weights")

    def arguments(self) -> list[str]:
        """The arguments after `python -m training`."""
        args = ["--out", str(self.run_dir)]
        if self.resume:
            args.append("--resume")
        else:
            args += ["--data", str(self.data_dir), "--preset", str(self.preset)]
            if self.init is not None:
                args += ["--init", str(self.init)]
        options = (
            ("--batch", self.batch),
            ("--steps", self.steps),
            ("--device", self.device),
            ("--log-every", self.log_every),
            ("--sample-every", self.sample_every),
            ("--checkpoint-every", self.checkpoint_every),
            ("--metric-every", self.metric_every),
        )
        for flag, value in options:
            if value is not None:
                args += [flag, str(value)]
        return args


@dataclass(frozen=True, slots=True)
class ProcessEnd:
    """How one launch ended. `exit_code` is None when the process died of a signal or
    never started (`error` says why)."""

    request: TrainRequest
    exit_code: int | None
    stop_requested: bool  # Pause / Stop / shutdown asked it to stop
    killed: bool  # it did not stop within the timeout and was killed
    output_tail: tuple[str, ...]  # the last TAIL_LINES lines of stdout and stderr
    error: str = ""

    @property
    def ok(self) -> bool:
        """Finished or stopped as asked, with its state saved."""
        return self.exit_code == 0 and not self.killed and not self.error

    def describe(self) -> str:
        """One sentence for the status line or the error panel's title."""
        if self.error:
            return f"Training could not start: {self.error}"
        if self.killed:
            return "Training did not stop in time and was killed; the last saved state is kept"
        if self.exit_code == 0:
            return "Training stopped; its state is saved" if self.stop_requested else "Done"
        if self.exit_code is None:
            return "Training crashed (killed by a signal)"
        return f"Training failed (exit status {self.exit_code})"


def source_root() -> Path | None:
    """The folder that holds the `training` package (put on the child's PYTHONPATH so that
    `-m training` works from a source tree too), found without importing anything."""
    spec = importlib.util.find_spec("training")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


# The process -------------------------------------------------------------------------------


class TrainingProcess(QObject):
    """At most one trainer process at a time, started and stopped without blocking.

    Signals (UI thread): `started(TrainRequest)` once the process runs; `finished(ProcessEnd)`
    once it has exited and been reaped (also when it never started). `shutdown` is the only
    method that blocks. `environment` adds variables to the child's environment (e.g.
    OMP_NUM_THREADS).
    """

    started = Signal(object)  # TrainRequest
    finished = Signal(object)  # ProcessEnd

    def __init__(
        self,
        python: str = sys.executable,
        *,
        stop_timeout_ms: int = STOP_TIMEOUT_MS,
        kill_timeout_ms: int = KILL_TIMEOUT_MS,
        environment: Mapping[str, str] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.python = python
        self.environment = dict(environment or {})
        self.stop_timeout_ms = stop_timeout_ms
        self.kill_timeout_ms = kill_timeout_ms
        self._proc: QProcess | None = None
        self._request: TrainRequest | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial = ""
        self._stop_requested = False
        self._terminated = False
        self._killed = False
        self._pid = 0
        self._escalation = QTimer(self)
        self._escalation.setSingleShot(True)
        self._escalation.timeout.connect(self._escalate)

    @property
    def running(self) -> bool:
        """A process exists (starting, running or stopping)."""
        return self._proc is not None

    @property
    def stopping(self) -> bool:
        return self._proc is not None and self._stop_requested

    @property
    def request(self) -> TrainRequest | None:
        """What the current process was started with (None when none runs)."""
        return self._request if self._proc is not None else None

    @property
    def pid(self) -> int:
        """Process id of the current or last process (0 before the first start)."""
        return self._pid

    def output_tail(self) -> tuple[str, ...]:
        return (*self._tail, self._partial) if self._partial else tuple(self._tail)

    def command(self, request: TrainRequest) -> list[str]:
        """The full command line, program first."""
        return [self.python, "-m", "training", *request.arguments()]

    def start(self, request: TrainRequest) -> None:
        """Launch the trainer for `request`; RuntimeError if one is already running."""
        if self._proc is not None:
            raise RuntimeError("a training process is already running")
        request = dataclasses.replace(
            request,
            run_dir=request.run_dir.absolute(),
            data_dir=request.data_dir.absolute() if request.data_dir is not None else None,
        )
        self._request = request
        self._tail.clear()
        self._partial = ""
        self._stop_requested = self._terminated = self._killed = False
        proc = QProcess(self)
        self._proc = proc
        try:
            # The runs folder is the child's working directory: never a folder whose own
            # `training` package could shadow ours (`-m` puts the working directory first).
            request.run_dir.parent.mkdir(parents=True, exist_ok=True)
            # A STOP file left behind (a crash, or a stop that came too late) would end this
            # run after its first step.
            (request.run_dir / STOP_FILE).unlink(missing_ok=True)
        except OSError as exc:
            self._end(None, error=str(exc))
            return
        proc.setWorkingDirectory(str(request.run_dir.parent))
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.setProcessEnvironment(_child_environment(self.environment))
        proc.readyReadStandardOutput.connect(self._read_output)
        proc.started.connect(self._on_started)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        program, *args = self.command(request)
        log.info("starting training: %s", " ".join(self.command(request)))
        proc.start(program, args)
        # Known at once on success; `started` comes later, through the event loop.
        self._pid = int(proc.processId())

    def stop(self) -> None:
        """Ask the run to stop after its current step (state saved); returns at once."""
        proc = self._proc
        if proc is None or self._stop_requested:
            return
        self._stop_requested = True
        assert self._request is not None
        try:
            run_dir = self._request.run_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / STOP_FILE).touch()
        except OSError as exc:  # no STOP file: fall back to the signal at once
            log.warning("cannot write the STOP file (%s); terminating the trainer", exc)
            self._terminated = True
            proc.terminate()
            self._escalation.start(self.kill_timeout_ms)
            return
        self._escalation.start(self.stop_timeout_ms)

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Stop the process and wait for it (blocking, at most about `timeout_ms` plus
        `kill_timeout_ms`): for the window's close, so that no trainer outlives it."""
        proc = self._proc
        if proc is None:
            return
        self.stop()
        if not proc.waitForFinished(timeout_ms) and self._proc is proc:
            self._killed = True
            proc.kill()
            proc.waitForFinished(self.kill_timeout_ms)

    # QProcess callbacks ----------------------------------------------------------------------

    @Slot()
    def _escalate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if not self._terminated:
            log.warning("training did not stop within %d ms; terminating", self.stop_timeout_ms)
            self._terminated = True
            proc.terminate()
            self._escalation.start(self.kill_timeout_ms)
        else:
            log.warning("training did not terminate; killing it")
            self._killed = True
            proc.kill()

    @Slot()
    def _on_started(self) -> None:
        if self._proc is not None:
            self._pid = int(self._proc.processId())
            self.started.emit(self._request)

    @Slot()
    def _read_output(self) -> None:
        if self._proc is None:
            return
        text = bytes(self._proc.readAllStandardOutput().data()).decode("utf-8", "replace")
        lines = (self._partial + text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
        self._partial = lines.pop()
        self._tail.extend(lines)

    @Slot(int, QProcess.ExitStatus)
    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        crashed = status == QProcess.ExitStatus.CrashExit
        self._end(None if crashed else int(exit_code))

    @Slot(QProcess.ProcessError)
    def _on_error(self, error: QProcess.ProcessError) -> None:
        # Only a failed start ends without `finished`; other errors are followed by it.
        if error == QProcess.ProcessError.FailedToStart and self._proc is not None:
            self._end(None, error=f"{self.python}: {self._proc.errorString()}")

    def _end(self, exit_code: int | None, *, error: str = "") -> None:
        proc, request = self._proc, self._request
        if proc is None or request is None:
            return
        self._read_output()
        self._escalation.stop()
        self._proc = None
        proc.deleteLater()
        with contextlib.suppress(OSError):  # never leave a STOP file for a resume
            (request.run_dir / STOP_FILE).unlink(missing_ok=True)
        end = ProcessEnd(
            request=request,
            exit_code=exit_code,
            stop_requested=self._stop_requested,
            killed=self._killed,
            output_tail=self.output_tail(),
            error=error,
        )
        log.info("training process ended: %s", end.describe())
        self.finished.emit(end)


def _child_environment(extra: Mapping[str, str]) -> QProcessEnvironment:
    env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONUNBUFFERED", "1")  # progress lines arrive as they are printed
    root = source_root()
    if root is not None:
        paths = [str(root), *filter(None, [env.value("PYTHONPATH")])]
        env.insert("PYTHONPATH", os.pathsep.join(paths))
    for name, value in extra.items():
        env.insert(name, value)
    return env


# Reading a run folder ----------------------------------------------------------------------


class MetricsTail:
    """The records appended to RUN_DIR/metrics.jsonl since the last `read`.

    Keeps the offset of the first unread byte and reads only what follows it; an incomplete
    last line stays unread until its newline arrives. A file that shrank or was replaced (a
    resume rewrites it without the records newer than the resumed state) is read again from
    its start, and `read` says so: the caller then drops what it had.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._offset = 0
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file read

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """(new complete records, whether earlier records must be dropped first)."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            restarted = self._offset > 0
            self._offset, self._identity = 0, None
            return [], restarted
        with f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            restarted = self._identity is not None and (
                identity != self._identity or st.st_size < self._offset
            )
            if restarted:
                self._offset = 0
            self._identity = identity
            if st.st_size <= self._offset:
                return [], restarted
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # complete lines only
        self._offset += end
        return _parse_lines(data[:end]), restarted


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # as training.runfiles.read_metrics
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run folder at a glance: its config and how far its saved state got."""

    path: Path
    preset: str = "?"
    steps: int = 0  # total steps the config asks for
    batch: int = 0
    data_dir: str = ""
    saved_step: int | None = None  # step of the saved state; None: no state saved yet
    error: str = ""  # config.json unreadable

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def done(self) -> bool:
        return self.saved_step is not None and self.saved_step >= self.steps > 0

    @property
    def resumable(self) -> bool:
        return not self.error and self.saved_step is not None and not self.done

    def status(self) -> str:
        if self.error:
            return "unreadable"
        if self.done:
            return "done"
        if self.saved_step is not None:
            return f"paused at {self.saved_step}"
        return "no saved state"


def read_run(run_dir: Path) -> RunSummary:
    """The summary of one run folder; never raises for a damaged one."""
    run_dir = Path(run_dir)
    try:
        cfg = read_config(run_dir)
    except (OSError, ValueError) as exc:
        return RunSummary(run_dir, error=str(exc))
    return RunSummary(
        run_dir,
        preset=cfg.model.preset,
        steps=cfg.steps,
        batch=cfg.batch,
        data_dir=cfg.data_dir,
        saved_step=_saved_step(run_dir),
    )


def _saved_step(run_dir: Path) -> int | None:
    # As training.runfiles.read_state: `state`, or `state.previous` if a swap was interrupted.
    for name in (STATE_DIR, STATE_DIR + ".previous"):
        try:
            info = json.loads((run_dir / name / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        step = info.get("step") if isinstance(info, dict) else None
        if isinstance(step, int):
            return step
    return None


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """The runs (sub-folders holding a config.json) of `runs_dir`, most recently active first."""
    if not runs_dir.is_dir():
        return []
    found = []
    for folder in runs_dir.iterdir():
        config = folder / CONFIG_FILE
        if folder.is_dir() and config.is_file():
            found.append((_last_activity(folder), folder))
    found.sort(key=lambda item: (item[0], item[1].name), reverse=True)
    return [read_run(folder) for _, folder in found]


def _last_activity(run_dir: Path) -> int:
    times = []
    for name in (CONFIG_FILE, METRICS_FILE):
        try:
            times.append((run_dir / name).stat().st_mtime_ns)
        except OSError:
            pass
    return max(times, default=0)


def newest_sample(run_dir: Path, max_step: int | None = None) -> Path | None:
    """The sample grid of the highest step (samples/step_XXXXXX.png), at most `max_step`
    if given: after a resume, grids of steps beyond the resumed state may remain."""
    best: tuple[int, str] | None = None
    newest = None
    for path in Path(run_dir, "samples").glob("*.png"):
        step = _step_of(path)
        if max_step is not None and step > max_step:
            continue
        if best is None or (step, path.name) > best:
            best, newest = (step, path.name), path
    return newest


def _step_of(path: Path) -> int:
    """The step in a name such as step_000200.png; -1 when there is none."""
    digits = path.stem.rpartition("_")[2]
    return int(digits) if digits.isdigit() else -1


def run_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoints/*.safetensors: latest.safetensors first, then by step, newest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.safetensors") if p.is_file()]

    def key(path: Path) -> tuple[int, int, str]:
        if path.name == "latest.safetensors":
            return (0, 0, "")
        return (1, -_step_of(path), path.name)

    return sorted(files, key=key)

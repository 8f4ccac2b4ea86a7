"""The training tab: pick a folder of images, train a model on it, watch it learn.

The tab never trains and never waits: training runs as a child process
(app.training_process.TrainingProcess), and the tab follows the run folder that process
writes. A QTimer polls the viewed run every `poll_ms`: it reads only the bytes appended to
metrics.jsonl since the last poll, the newest sample grid when a new one appears, and the
checkpoints. Pause and Stop both ask the trainer to save its state and exit (a STOP file);
Resume starts it again with `--resume` on the same folder. A process that fails shows the
last lines of its output in a panel of the tab.

The data folder is checked on a Python thread (`DatasetScanner`): the image files
training.data would find, each one decoded as the trainer will (unreadable ones and those
smaller than the preset's patch are listed as problems), and a few thumbnails. Results come
back to the UI thread by a queued signal, stamped with the scan's epoch; a newer scan
drops older results.
"""

from __future__ import annotations

import logging
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from PIL import Image
from PySide6.QtCore import QObject, QRectF, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QImage, QImageReader, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.about import APP_NAME
from app.dialogs import choose_file
from app.plots import MetricsPlots
from app.training_process import (
    STOP_TIMEOUT_MS,
    MetricsTail,
    ProcessEnd,
    RunSummary,
    TrainingProcess,
    TrainRequest,
    list_runs,
    newest_sample,
    read_run,
    run_checkpoints,
)
from app.units import human_time
from engine.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, read_checkpoint
from engine.device import resolve_device
from engine.model import PRESETS, preset_config
from training.config import SMALL_DATASET, TrainConfig
from training.data import (
    IMAGE_SUFFIXES,
    UNREADABLE_IMAGE_ERRORS,
    DatasetReport,
    find_image_files,
)
from training.runfiles import CONFIG_FILE, METRICS_FILE, STATE_DIR

log = logging.getLogger(__name__)

PRESET_ORDER = ("tiny", "lite", "paper")  # smallest first
DEFAULT_PRESET = "lite"  # as training.cli
THUMB_COUNT = 8
CHOOSE_CHECKPOINT = "choose"  # the "Checkpoint file…" entry of Start from
THUMB_PX = 72
PROGRESS_EVERY_S = 0.25  # a running scan reports at most this often
ERROR_COLOR = "#c62828"


def default_runs_dir() -> Path:
    """The user's runs folder: `<user data>/Infinity Canvas/runs`."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False) / "runs"


def available_devices() -> list[str]:
    """Device choices for the trainer: auto and cpu always, accelerators when present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices.append("cuda")
        if count > 1:
            devices += [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def starting_status(device: str | None) -> str:
    """What the tab says until the first metrics arrive: on CUDA the trainer compiles its
    D and G steps first (training.loop), which takes minutes the first time."""
    name = device or "auto"
    if name == "auto":
        name = resolve_device("auto").type  # what the trainer will pick
    compiling = name.startswith("cuda")
    note = "; the first steps compile, up to 2.5 minutes the first time" if compiling else ""
    return f"Starting (loading the images and building the model{note})…"


# Checking a data folder --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """One image file: its short side in pixels, or why it cannot be used at all."""

    name: str  # relative to the data folder
    short_side: int | None
    error: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class DatasetScan:
    """A scan of a data folder as far as it got (`done`), for the request `epoch`."""

    epoch: int
    root: Path
    total: int = 0  # image files found
    checked: tuple[ImageCheck, ...] = ()
    thumbnails: tuple[QImage, ...] = ()
    done: bool = False
    error: str = ""  # the folder itself is unusable

    def report(self, min_side: int) -> DatasetReport:
        """The files checked so far, judged as training.data.load_images would."""
        sides, skipped = [], []
        for check in self.checked:
            if check.short_side is None:
                skipped.append((check.name, check.error))
            elif check.short_side < min_side:
                reason = f"too small (short side {check.short_side} px < {min_side} px)"
                skipped.append((check.name, reason))
            else:
                sides.append(check.short_side)
        return DatasetReport(str(self.root), len(sides), tuple(sides), tuple(skipped))

    def usable(self, min_side: int) -> bool:
        """Complete, and at least one image can be trained on (what load_images needs)."""
        return (
            self.done
            and not self.error
            and any(c.short_side is not None and c.short_side >= min_side for c in self.checked)
        )


def check_image(path: Path) -> tuple[int | None, str]:
    """(short side in px, "") if the trainer can decode `path`, else (None, reason)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's EXIF / palette / size warnings
        try:
            with Image.open(path) as image:
                short = min(image.size)
                if image.format == "JPEG":
                    image.draft("RGB", (256, 256))  # a reduced decode still reads every byte
                image.load()
        except UNREADABLE_IMAGE_ERRORS as exc:  # the errors training.data skips a file for
            return None, f"unreadable ({type(exc).__name__}: {exc})"
    return short, ""


def read_thumbnail(path: Path, size: int = THUMB_PX) -> QImage | None:
    """A scaled read (JPEG decodes at reduced size): at most size x size px."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    full = reader.size()
    if full.isValid() and (full.width() > size or full.height() > size):
        reader.setScaledSize(full.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return None if image.isNull() else image


def scan_folder(
    root: Path,
    epoch: int,
    cancelled: threading.Event,
    report: Callable[[DatasetScan], None],
) -> None:
    """Scan `root` on the calling (worker) thread, reporting partial scans as it goes."""
    try:
        if not root.exists():
            report(DatasetScan(epoch, root, done=True, error=f"{root} does not exist"))
            return
        if not root.is_dir():
            report(DatasetScan(epoch, root, done=True, error=f"{root} is not a folder"))
            return
        files = find_image_files(root)
    except OSError as exc:
        report(DatasetScan(epoch, root, done=True, error=f"cannot read {root} ({exc})"))
        return
    if not files:
        suffixes = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        error = f"No image files ({suffixes}) in {root} or its sub-folders."
        report(DatasetScan(epoch, root, done=True, error=error))
        return
    picks = [files[i * len(files) // THUMB_COUNT] for i in range(min(THUMB_COUNT, len(files)))]
    thumbs: list[QImage] = []
    for path in dict.fromkeys(picks):
        if cancelled.is_set():
            return
        thumb = read_thumbnail(path)
        if thumb is not None:
            thumbs.append(thumb)
    report(DatasetScan(epoch, root, total=len(files), thumbnails=tuple(thumbs)))
    checked: list[ImageCheck] = []
    last = time.monotonic()
    for path in files:
        if cancelled.is_set():
            return
        side, error = check_image(path)
        checked.append(ImageCheck(str(path.relative_to(root)), side, error))
        if time.monotonic() - last > PROGRESS_EVERY_S:
            last = time.monotonic()
            report(DatasetScan(epoch, root, len(files), tuple(checked), tuple(thumbs)))
    report(DatasetScan(epoch, root, len(files), tuple(checked), tuple(thumbs), done=True))


class DatasetScanner(QObject):
    """Scans data folders on Python threads; `scanned(DatasetScan)` arrives on the UI thread.

    A new `scan` cancels the one before it (its results are no longer delivered);
    `shutdown` cancels and joins every scan thread.
    """

    scanned = Signal(object)  # DatasetScan
    _delivered = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.epoch = 0
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._delivered.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def scan(self, root: Path) -> int:
        """Start scanning `root`; returns the epoch its results will carry."""
        self._cancel.set()
        self._cancel = cancel = threading.Event()
        self.epoch += 1

        def report(scan: DatasetScan) -> None:
            if cancel.is_set():
                return
            try:
                self._delivered.emit(scan)
            except RuntimeError:  # the scanner was deleted without shutdown: nobody listens
                cancel.set()

        thread = threading.Thread(
            target=scan_folder, args=(root, self.epoch, cancel, report), name="dataset-scan"
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()
        return self.epoch

    def cancel(self) -> None:
        self._cancel.set()
        self.epoch += 1

    def shutdown(self, timeout: float | None = 10.0) -> None:
        self.cancel()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    @Slot(object)
    def _deliver(self, scan: DatasetScan) -> None:
        if scan.epoch == self.epoch:  # an older scan's result is never shown
            self.scanned.emit(scan)


# Widgets -----------------------------------------------------------------------------------


class ImageView(QWidget):
    """A QImage scaled to fit (aspect kept, centred), or a placeholder text."""

    def __init__(self, placeholder: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.placeholder = placeholder
        self._image: QImage | None = None
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    @property
    def image(self) -> QImage | None:
        return self._image

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(320, 320)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        if self._image is None or self._image.isNull():
            painter.setPen(self.palette().color(self.foregroundRole()))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = (self.width() - size.width()) / 2
        y = (self.height() - size.height()) / 2
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(QRectF(x, y, size.width(), size.height()), self._image)


def _error_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {ERROR_COLOR};")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


# The tab -----------------------------------------------------------------------------------


class TrainingTab(QWidget):
    """Dataset, training controls, runs and checkpoints (left); the viewed run (right).

    `runs_dir`: where new runs go and runs are listed (default: `default_runs_dir()`).
    `python`: the interpreter that runs `-m training`. `log_every`: the trainer's log
    interval for runs started here (None: the trainer's default). `devices`: the device
    choices (default: `available_devices()`). `environment`: variables added to the
    trainer's environment.

    Signals: `open_in_canvas(str)`, the path of a checkpoint the user wants to explore.
    Call `shutdown()` before dropping the tab: it stops a running trainer (its state is
    saved) and joins the tab's threads.
    """

    open_in_canvas = Signal(str)

    def __init__(
        self,
        runs_dir: Path | None = None,
        *,
        python: str = sys.executable,
        poll_ms: int = 1000,
        log_every: int | None = None,
        stop_timeout_ms: int = STOP_TIMEOUT_MS,
        devices: Sequence[str] | None = None,
        environment: Mapping[str, str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.runs_dir = Path(runs_dir or default_runs_dir()).expanduser().absolute()
        self.log_every = log_every
        self.process = TrainingProcess(
            python, stop_timeout_ms=stop_timeout_ms, environment=environment, parent=self
        )
        self.scanner = DatasetScanner(self)
        self._scan: DatasetScan | None = None
        self._viewed: Path | None = None
        self._summary: RunSummary | None = None
        self._summary_stamp: int | None = None
        self._tail: MetricsTail | None = None
        self._last_step: int | None = None
        self._last_rate = 0.0
        self._launch_step = 0  # the step a launch starts from: newer records mean it trains
        self._sample_key: tuple[str, int] | None = None
        self._checkpoint_paths: list[Path] = []
        self._listed_runs: set[Path] = set()
        self._name_edited = False
        self._pausing = False
        self._status = ""
        self._closed = False
        self._folder_dialog: QFileDialog | None = None

        self._build(list(devices) if devices is not None else available_devices())
        self.process.started.connect(self._on_process_started)
        self.process.finished.connect(self._on_process_finished)
        self.scanner.scanned.connect(self._on_scanned)
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(poll_ms)
        self._poll_timer.timeout.connect(self.poll)
        self._poll_timer.start()
        self._set_default_name()
        self.refresh_runs()
        self._update_controls()

    # Layout --------------------------------------------------------------------------------

    def _build(self, devices: list[str]) -> None:
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(self._build_dataset())
        left_layout.addWidget(self._build_controls(devices))
        left_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(380)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self._build_view())
        right.addWidget(self._build_runs())
        right.setStretchFactor(0, 1)
        right.setStretchFactor(1, 0)
        right.setSizes([560, 200])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([400, 880])
        layout = QHBoxLayout(self)
        layout.addWidget(splitter)

    def _build_dataset(self) -> QGroupBox:
        box = QGroupBox("Dataset")
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("Folder of landscape photos")
        self.data_edit.editingFinished.connect(self._on_data_edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_dataset_folder)
        row = QHBoxLayout()
        row.addWidget(self.data_edit, 1)
        row.addWidget(browse)

        self.dataset_summary = QLabel("Choose a folder of images to train on.")
        self.dataset_summary.setWordWrap(True)
        self.dataset_error = _error_label()
        self.dataset_error.hide()
        self.thumb_grid = QGridLayout()
        self.thumb_grid.setSpacing(4)
        self.thumb_labels: list[QLabel] = []
        for i in range(THUMB_COUNT):
            label = QLabel()
            label.setFixedSize(THUMB_PX, THUMB_PX)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setFrameShape(QFrame.Shape.StyledPanel)
            label.hide()
            self.thumb_grid.addWidget(label, i // 4, i % 4)
            self.thumb_labels.append(label)
        self.thumb_grid.setColumnStretch(4, 1)
        self.problems_label = _error_label()
        self.problems_view = QPlainTextEdit()
        self.problems_view.setReadOnly(True)
        self.problems_view.setMaximumHeight(80)
        self.problems_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.problems_label.hide()
        self.problems_view.hide()

        layout = QVBoxLayout(box)
        layout.addLayout(row)
        layout.addWidget(self.dataset_summary)
        layout.addWidget(self.dataset_error)
        layout.addLayout(self.thumb_grid)
        layout.addWidget(self.problems_label)
        layout.addWidget(self.problems_view)
        return box

    def _build_controls(self, devices: list[str]) -> QGroupBox:
        box = QGroupBox("Training")
        defaults = TrainConfig()
        self.preset_combo = QComboBox()
        for name in sorted(PRESETS, key=lambda n: (PRESET_ORDER + (n,)).index(n)):
            config = PRESETS[name]
            self.preset_combo.addItem(f"{name}  ({config.patch_size} px patches)", name)
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(DEFAULT_PRESET)))
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self.init_combo = QComboBox()
        self.init_combo.setToolTip(
            "Random weights train a model from scratch; a checkpoint's weights fine-tune it "
            "on your images (its preset is used)"
        )
        self.init_combo.addItem("Random weights", None)
        if DEFAULT_CHECKPOINT.exists():
            self.init_combo.addItem("The default model (fine-tune it)", str(DEFAULT_CHECKPOINT))
        self.init_combo.addItem("Checkpoint file…", CHOOSE_CHECKPOINT)
        self.init_combo.activated.connect(self._on_init_activated)
        self._init_index = 0  # the entry to return to when a chosen file is refused
        self._init_presets: dict[str, str] = {}  # checkpoint path -> its preset, once read
        self.init_error = _error_label()
        self.init_error.hide()
        self.steps_spin = _spin(1, 10_000_000, defaults.steps, step=1000)
        self.batch_spin = _spin(2, 1024, defaults.batch, step=2)
        self.batch_spin.valueChanged.connect(self._keep_batch_even)
        self.device_combo = QComboBox()
        self.device_combo.addItems(devices)
        self.sample_spin = _spin(0, 10_000_000, defaults.sample_every, step=100, zero="never")
        self.checkpoint_spin = _spin(
            0, 10_000_000, defaults.checkpoint_every, step=1000, zero="at the end only"
        )
        self.name_edit = QLineEdit()
        self.name_edit.textEdited.connect(self._on_name_edited)
        self.name_edit.textChanged.connect(self._update_controls)
        self.name_edit.setToolTip(f"A folder name in {self.runs_dir}, or a full path")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Start from", self.init_combo)
        form.addRow("", self.init_error)
        form.addRow("Preset", self.preset_combo)
        steps_row = QHBoxLayout()
        steps_row.addWidget(self.steps_spin, 1)
        steps_row.addWidget(QLabel("Batch"))
        steps_row.addWidget(self.batch_spin)
        form.addRow("Steps", steps_row)
        form.addRow("Device", self.device_combo)
        form.addRow("Samples every", self.sample_spin)
        form.addRow("Checkpoints every", self.checkpoint_spin)
        form.addRow("Run folder", self.name_edit)

        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop")
        self.start_button.setToolTip("Start a new run on the dataset with these settings")
        self.pause_button.setToolTip("Save the state after this step and stop; Resume continues")
        self.resume_button.setToolTip("Continue the selected run where its state was saved")
        self.stop_button.setToolTip("Save the state after this step and end the run")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            buttons.addWidget(button)
        self.controls_hint = QLabel()
        self.controls_hint.setWordWrap(True)
        self.controls_hint.setEnabled(False)  # drawn greyed: a hint, not an alarm

        layout = QVBoxLayout(box)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.controls_hint)
        return box

    def _build_runs(self) -> QWidget:
        runs_box = QGroupBox(f"Runs in {self.runs_dir}")
        runs_box.setToolTip(str(self.runs_dir))
        self.runs_tree = QTreeWidget()
        self.runs_tree.setHeaderLabels(["Run", "Preset", "Status"])
        self.runs_tree.setRootIsDecorated(False)
        self.runs_tree.setUniformRowHeights(True)
        self.runs_tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.runs_tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.runs_tree.setMinimumHeight(110)
        self.runs_tree.itemSelectionChanged.connect(self._on_run_selected)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_runs)
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.addWidget(self.runs_tree, 1)
        runs_layout.addWidget(refresh, 0, Qt.AlignmentFlag.AlignRight)

        self.checkpoint_list = QListWidget()
        self.checkpoint_list.setMinimumHeight(70)
        self.checkpoint_list.itemSelectionChanged.connect(self._update_controls)
        self.checkpoint_list.itemDoubleClicked.connect(lambda _: self.open_selected_checkpoint())
        self.open_button = QPushButton("Open in canvas")
        self.open_button.setToolTip("Explore this checkpoint in the canvas")
        self.open_button.clicked.connect(self.open_selected_checkpoint)

        checkpoints_box = QGroupBox("Checkpoints of the selected run")
        checkpoints_layout = QVBoxLayout(checkpoints_box)
        checkpoints_layout.addWidget(self.checkpoint_list, 1)
        checkpoints_layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignRight)

        strip = QWidget()
        layout = QHBoxLayout(strip)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(runs_box, 3)
        layout.addWidget(checkpoints_box, 2)
        return strip

    def _build_view(self) -> QWidget:
        view = QWidget()
        self.run_title = QLabel("No run selected")
        font = self.run_title.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.run_title.setFont(font)
        self.status_label = QLabel()
        self.progress_bar = QProgressBar()
        self.progress_bar.setFormat("step %v / %m")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(False)  # until a run is shown
        self.rate_label = QLabel()
        head = QHBoxLayout()
        head.addWidget(self.run_title)
        head.addWidget(self.status_label, 1)
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.rate_label)

        self.error_panel = QFrame()
        self.error_panel.setFrameShape(QFrame.Shape.StyledPanel)
        self.error_title = _error_label()
        self.error_output = QPlainTextEdit()
        self.error_output.setReadOnly(True)
        self.error_output.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = self.error_output.font()
        mono.setFamily("monospace")
        mono.setStyleHint(mono.StyleHint.Monospace)
        self.error_output.setFont(mono)
        self.error_output.setMaximumHeight(160)
        dismiss = QPushButton("Dismiss")
        dismiss.clicked.connect(self.error_panel.hide)
        error_head = QHBoxLayout()
        error_head.addWidget(self.error_title, 1)
        error_head.addWidget(dismiss, 0, Qt.AlignmentFlag.AlignTop)
        error_layout = QVBoxLayout(self.error_panel)
        error_layout.addLayout(error_head)
        error_layout.addWidget(self.error_output)
        self.error_panel.hide()

        self.plots = MetricsPlots()
        self.sample_view = ImageView("No samples yet")
        self.sample_caption = QLabel()
        self.sample_caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        sample = QWidget()
        sample_layout = QVBoxLayout(sample)
        sample_layout.setContentsMargins(0, 0, 0, 0)
        sample_layout.addWidget(QLabel("Latest samples (EMA generator)"))
        sample_layout.addWidget(self.sample_view, 1)
        sample_layout.addWidget(self.sample_caption)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.plots)
        splitter.addWidget(sample)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([540, 340])

        layout = QVBoxLayout(view)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addLayout(progress)
        layout.addWidget(self.error_panel)
        layout.addWidget(splitter, 1)
        return view

    # Dataset -------------------------------------------------------------------------------

    @property
    def preset(self) -> str:
        return str(self.preset_combo.currentData())

    @property
    def dataset_scan(self) -> DatasetScan | None:
        """The newest scan of the chosen data folder (possibly still in progress)."""
        return self._scan

    @property
    def init_checkpoint(self) -> Path | None:
        """The checkpoint whose weights a new run starts from; None for random weights."""
        data = self.init_combo.currentData()
        return None if data in (None, CHOOSE_CHECKPOINT) else Path(data)

    def set_init_checkpoint(self, path: Path | None) -> bool:
        """Start new runs from the weights of `path` (None: random weights). The checkpoint
        is read first: its preset becomes the run's, and an unusable file is refused with
        its reason shown (False)."""
        if path is None:
            self._select_init(0)
            return True
        path = Path(path).expanduser().absolute()
        try:
            preset = read_checkpoint(path).generator.config.preset
        except CheckpointError as exc:
            self.init_error.setText(str(exc))
            self.init_error.show()
            self._select_init(self._init_index)
            return False
        self._init_presets[str(path)] = preset
        index = self.init_combo.findData(str(path))
        if index < 0:
            index = self.init_combo.count() - 1  # before "Checkpoint file…"
            self.init_combo.insertItem(index, path.name, str(path))
            self.init_combo.setItemData(index, str(path), Qt.ItemDataRole.ToolTipRole)
        self._select_init(index)
        return True

    def _select_init(self, index: int) -> None:
        """Select an entry of Start from that is known to be usable (read before)."""
        self.init_combo.setCurrentIndex(index)
        self._init_index = index
        preset = self._init_presets.get(self.init_combo.itemData(index))
        if preset is not None:
            self.preset_combo.setCurrentIndex(self.preset_combo.findData(preset))
            self.init_error.hide()
        self.preset_combo.setEnabled(preset is None)

    @Slot(int)
    def _on_init_activated(self, index: int) -> None:
        data = self.init_combo.itemData(index)
        if data == CHOOSE_CHECKPOINT:
            self._select_init(self._init_index)  # until a file is chosen
            start = str(self.runs_dir if self.runs_dir.exists() else Path.home())
            dialog = choose_file(
                self,
                "Start training from a checkpoint",
                start,
                "Checkpoints (*.safetensors);;All files (*)",
                self.set_init_checkpoint,
            )
            self._checkpoint_dialog = dialog
            dialog.open()
        else:
            self.init_error.hide()
            self.set_init_checkpoint(None if data is None else Path(data))

    def choose_dataset_folder(self) -> None:
        """Open a folder dialog (non-blocking); the chosen folder is then checked."""
        start = self.data_edit.text().strip() or str(Path.home())
        dialog = QFileDialog(self, "Choose a folder of training images", start)
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
        dialog.fileSelected.connect(lambda path: self.set_dataset_folder(Path(path)))
        dialog.finished.connect(dialog.deleteLater)
        self._folder_dialog = dialog
        dialog.open()

    def set_dataset_folder(self, folder: Path) -> None:
        """Show `folder` as the dataset and check it in the background."""
        folder = Path(folder).expanduser().absolute()
        self.data_edit.setText(str(folder))
        self._scan = DatasetScan(self.scanner.epoch + 1, folder)
        self.scanner.scan(folder)
        self._show_scan()
        self._update_controls()

    @Slot()
    def _on_data_edited(self) -> None:
        text = self.data_edit.text().strip()
        if not text:
            self.scanner.cancel()
            self._scan = None
            self._show_scan()
            self._update_controls()
        elif self._scan is None or Path(text).expanduser().absolute() != self._scan.root:
            self.set_dataset_folder(Path(text))

    @Slot(object)
    def _on_scanned(self, scan: DatasetScan) -> None:
        self._scan = scan
        self._show_scan()
        self._update_controls()

    def _show_scan(self) -> None:
        scan = self._scan
        self.dataset_error.setVisible(bool(scan and scan.error))
        if scan is None:
            self.dataset_summary.setText("Choose a folder of images to train on.")
            self._show_thumbnails(())
            self._show_problems(None)
            return
        if scan.error:
            self.dataset_summary.setText("This folder cannot be used for training:")
            self.dataset_error.setText(scan.error)
            self._show_thumbnails(())
            self._show_problems(None)
            return
        min_side = preset_config(self.preset).patch_size
        report = scan.report(min_side)
        if not scan.total:
            text = "Looking for images…"
        elif not scan.done:
            text = f"{scan.total} images found; checking {len(scan.checked)} / {scan.total}…"
        else:
            text = f"{report.usable} usable images of {scan.total}"
            sides = report.short_sides
            if sides and min(sides) == max(sides):
                text += f" · short side {sides[0]} px"
            elif sides:
                text += (
                    f" · short side {min(sides)}–{max(sides)} px "
                    f"(median {int(statistics.median(sides))})"
                )
            if 0 < report.usable < SMALL_DATASET:
                text += f" · augmentation on (fewer than {SMALL_DATASET:,} images)"
        self.dataset_summary.setText(text)
        self._show_thumbnails(scan.thumbnails)
        self._show_problems(report if scan.done else None, min_side)

    def _show_thumbnails(self, images: Sequence[QImage]) -> None:
        for i, label in enumerate(self.thumb_labels):
            if i < len(images):
                label.setPixmap(QPixmap.fromImage(images[i]))
                label.show()
            else:
                label.clear()
                label.hide()

    def _show_problems(self, report: DatasetReport | None, min_side: int = 0) -> None:
        skipped = report.skipped if report else ()
        if report is not None and report.usable == 0:
            self.problems_label.setText(
                f"No usable image: every file is unreadable or smaller than the "
                f"{self.preset} preset's {min_side} px patch."
            )
        elif skipped:
            self.problems_label.setText(
                f"{len(skipped)} file{'s' if len(skipped) > 1 else ''} will be skipped:"
            )
        self.problems_label.setVisible(report is not None and (report.usable == 0 or bool(skipped)))
        self.problems_view.setPlainText("\n".join(f"{name}: {why}" for name, why in skipped))
        self.problems_view.setVisible(bool(skipped))

    def dataset_problem(self) -> str:
        """Why the dataset cannot be trained on now ("" when it can)."""
        scan = self._scan
        if scan is None:
            return "Choose a dataset folder."
        if scan.error:
            return scan.error
        if not scan.done:
            return "Checking the dataset…"
        if not scan.usable(preset_config(self.preset).patch_size):
            return "The dataset has no usable image for this preset."
        return ""

    # Run folder name ------------------------------------------------------------------------

    def new_run_dir(self) -> Path:
        """The folder the next Start trains into."""
        path = Path(self.name_edit.text().strip()).expanduser()
        return path.absolute() if path.is_absolute() else self.runs_dir / path

    def _run_dir_problem(self) -> str:
        if not self.name_edit.text().strip():
            return "Name the run folder."
        path = self.new_run_dir()
        if path.exists() and not path.is_dir():
            return f"{path} is a file."
        if any((path / name).exists() for name in (CONFIG_FILE, METRICS_FILE, STATE_DIR)):
            return f"“{path.name}” already holds a run: choose another name, or select it in Runs."
        return ""

    def _set_default_name(self) -> None:
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.preset}"
        request = self.process.request  # its folder may not exist yet
        taken = {request.run_dir} if request is not None else set()
        name, n = base, 2
        while (self.runs_dir / name).exists() or self.runs_dir / name in taken:
            name, n = f"{base}-{n}", n + 1
        self.name_edit.setText(name)
        self._name_edited = False

    @Slot(str)
    def _on_name_edited(self, text: str) -> None:
        self._name_edited = bool(text.strip())

    @Slot()
    def _on_preset_changed(self) -> None:
        if not self._name_edited:
            self._set_default_name()
        self._show_scan()  # the minimum image size depends on the preset
        self._update_controls()

    @Slot(int)
    def _keep_batch_even(self, value: int) -> None:
        if value % 2:
            self.batch_spin.setValue(value + 1)

    # Process control ------------------------------------------------------------------------

    def start(self) -> bool:
        """Start a new run with the form's settings; False if Start is not possible now."""
        if self.process.running or self.dataset_problem() or self._run_dir_problem():
            return False
        scan = self._scan
        assert scan is not None
        request = TrainRequest(
            self.new_run_dir(),
            data_dir=scan.root,
            preset=self.preset,
            init=self.init_checkpoint,
            batch=self.batch_spin.value(),
            steps=self.steps_spin.value(),
            device=self.device_combo.currentText(),
            log_every=self.log_every,
            sample_every=self.sample_spin.value(),
            checkpoint_every=self.checkpoint_spin.value(),
        )
        self._launch(request)
        self._set_default_name()
        return True

    def resume(self) -> bool:
        """Continue the viewed run from its saved state; False if it cannot be resumed."""
        summary = self._summary
        if self.process.running or summary is None or not summary.resumable:
            return False
        request = TrainRequest(
            summary.path,
            resume=True,
            device=self.device_combo.currentText(),
            log_every=self.log_every,
        )
        self._launch(request)
        return True

    def pause(self) -> None:
        """Save the state after the current step and stop; Resume continues the run."""
        if self.process.running and not self.process.stopping:
            self._pausing = True
            self.process.stop()
            self._update_controls()

    def stop(self) -> None:
        """Save the state after the current step and end the process."""
        if self.process.running and not self.process.stopping:
            self._pausing = False
            self.process.stop()
            self._update_controls()

    def shutdown(self) -> None:
        """Stop the trainer (state saved; killed if it does not stop in time) and join the
        tab's threads. Blocks until both are done; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._poll_timer.stop()
        self.scanner.shutdown()
        self.process.shutdown()

    def _launch(self, request: TrainRequest) -> None:
        self.error_panel.hide()
        self._pausing = False
        self._status = starting_status(request.device)
        self.view_run(request.run_dir, force=True)
        saved = self._summary.saved_step if self._summary is not None else None
        self._launch_step = saved if request.resume and saved is not None else 0
        self.process.start(request)
        self._update_controls()

    @Slot(object)
    def _on_process_started(self, request: TrainRequest) -> None:
        self._update_controls()

    @Slot(object)
    def _on_process_finished(self, end: ProcessEnd) -> None:
        run_dir = end.request.run_dir
        if run_dir == self._viewed:
            self._summary_stamp = None  # re-read the config and the saved state
            self.poll()
        self.refresh_runs()
        summary = read_run(run_dir)
        step = summary.saved_step
        if end.ok and end.stop_requested:
            at = f" at step {step}" if step is not None else ""
            self._status = f"Paused{at}: Resume continues it" if self._pausing else f"Stopped{at}"
        elif end.ok:
            self._status = f"Done: {step} steps" if step is not None else "Done"
        else:
            self._status = end.describe()
            if not self._closed:
                self._show_error(end)
        self._pausing = False
        if not self._name_edited:
            self._set_default_name()  # the name taken by this launch may be free again
        self._update_header()
        self._update_controls()

    def _show_error(self, end: ProcessEnd) -> None:
        command = " ".join(self.process.command(end.request))
        self.error_title.setText(f"{end.describe()}. The last lines of its output:")
        tail = end.output_tail or ("(no output)",)
        self.error_output.setPlainText("\n".join((f"$ {command}", *tail)))
        self.error_output.verticalScrollBar().setValue(
            self.error_output.verticalScrollBar().maximum()
        )
        self.error_panel.show()

    # Viewing a run --------------------------------------------------------------------------

    @property
    def viewed_run(self) -> Path | None:
        return self._viewed

    @property
    def latest_step(self) -> int | None:
        """The step of the viewed run's newest metrics record (None before the first)."""
        return self._last_step

    def view_run(self, run_dir: Path | None, *, force: bool = False) -> None:
        """Show `run_dir`'s metrics, samples and checkpoints (followed live)."""
        if run_dir == self._viewed and not force:
            return
        self._viewed = run_dir
        self._tail = MetricsTail(run_dir) if run_dir is not None else None
        self._summary = None
        self._summary_stamp = None
        self._last_step = None
        self._last_rate = 0.0
        self._sample_key = None
        self.plots.clear()
        self.sample_view.set_image(None)
        self.sample_caption.clear()
        self._set_checkpoints([])
        if self.process.request is None or self.process.request.run_dir != run_dir:
            self._status = ""
        self._select_in_tree(run_dir)
        self.poll()

    def poll(self) -> None:
        """Read what the viewed run wrote since the last poll (the timer calls this)."""
        run_dir = self._viewed
        if run_dir is not None and self._tail is not None:
            self._refresh_summary(run_dir)
            records, restarted = self._tail.read()
            if restarted:
                self.plots.clear()
                self._last_step = None
            if records:
                self.plots.add_records(records)
                self._last_step = records[-1]["step"]
                rates = [r["images_per_s"] for r in records if r.get("images_per_s")]
                if rates:
                    self._last_rate = float(rates[-1])
            self._refresh_sample(run_dir)
            self._set_checkpoints(run_checkpoints(run_dir))
            if run_dir not in self._listed_runs and (run_dir / CONFIG_FILE).is_file():
                self.refresh_runs()
        self._update_header()
        self._update_controls()

    def _refresh_summary(self, run_dir: Path) -> None:
        try:
            stamp = (run_dir / CONFIG_FILE).stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != self._summary_stamp or self._summary is None:
            self._summary_stamp = stamp
            self._summary = read_run(run_dir) if stamp is not None else None

    def _refresh_sample(self, run_dir: Path) -> None:
        path = newest_sample(run_dir, self._last_step)
        if path is None:
            return
        try:
            key = (path.name, path.stat().st_mtime_ns)
        except OSError:
            return
        if key == self._sample_key:
            return
        image = QImageReader(str(path)).read()
        if image.isNull():
            return  # try again at the next poll
        self._sample_key = key
        self.sample_view.set_image(image)
        self.sample_caption.setText(path.name)

    def _set_checkpoints(self, paths: list[Path]) -> None:
        if paths == self._checkpoint_paths:
            return
        selected = self.selected_checkpoint()
        # The selection follows the newest checkpoint (listed first) unless another was chosen.
        if self._checkpoint_paths and selected == str(self._checkpoint_paths[0]):
            selected = None
        self._checkpoint_paths = paths
        self.checkpoint_list.clear()
        for path in paths:
            item = QListWidgetItem(path.name)
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(str(path))
            self.checkpoint_list.addItem(item)
            if selected is not None and path == Path(selected):
                item.setSelected(True)
        if paths and not self.checkpoint_list.selectedItems():
            self.checkpoint_list.item(0).setSelected(True)
        self._update_controls()

    def _update_header(self) -> None:
        run_dir = self._viewed
        summary = self._summary
        if run_dir is None:
            self.run_title.setText("No run selected")
            self.status_label.setText("")
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.progress_bar.setTextVisible(False)  # no "step 0 / 1" of no run
            self.rate_label.setText("")
            return
        self.run_title.setText(run_dir.name)
        self.progress_bar.setTextVisible(True)
        request = self.process.request
        live = request is not None and request.run_dir == run_dir
        total = (request.steps if live and request and request.steps else 0) or (
            summary.steps if summary else 0
        )
        step = self._last_step
        if step is None and summary is not None:
            step = summary.saved_step
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(step or 0, max(total, 1)))
        if live and self.process.stopping:
            status = "Stopping after this step (saving the state)…"
        elif live and self._last_step is not None and self._last_step > self._launch_step:
            status = "Training"
        elif live or self._status:
            status = self._status
        elif summary is not None:
            status = f"{summary.preset} · {summary.status()}"
        else:
            status = ""
        self.status_label.setText(f"  {status}" if status else "")
        rate = ""
        if live and self._last_rate > 0 and summary is not None and step is not None:
            remaining = max(total - step, 0) * summary.batch / self._last_rate
            rate = f"{self._last_rate:.1f} images/s · ETA {human_time(remaining)}"
        self.rate_label.setText(rate)

    # Runs and checkpoints -------------------------------------------------------------------

    def refresh_runs(self) -> None:
        """List the runs of the runs folder again (newest activity first)."""
        runs = list_runs(self.runs_dir)
        live = self.process.request.run_dir if self.process.request is not None else None
        self.runs_tree.blockSignals(True)
        try:
            self.runs_tree.clear()
            for run in runs:
                status = "running" if run.path == live else run.status()
                item = QTreeWidgetItem([run.name, run.preset, status])
                item.setData(0, Qt.ItemDataRole.UserRole, str(run.path))
                item.setToolTip(0, f"{run.path}\ndata: {run.data_dir}\n{run.steps} steps")
                if run.error:
                    item.setToolTip(2, run.error)
                self.runs_tree.addTopLevelItem(item)
        finally:
            self.runs_tree.blockSignals(False)
        self._listed_runs = {run.path for run in runs}
        self._select_in_tree(self._viewed)

    def runs(self) -> list[Path]:
        """The run folders listed, in display order."""
        tree = self.runs_tree
        return [
            Path(tree.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole))
            for i in range(tree.topLevelItemCount())
        ]

    def _select_in_tree(self, run_dir: Path | None) -> None:
        self.runs_tree.blockSignals(True)
        try:
            self.runs_tree.clearSelection()
            for i in range(self.runs_tree.topLevelItemCount()):
                item = self.runs_tree.topLevelItem(i)
                if run_dir is not None and Path(item.data(0, Qt.ItemDataRole.UserRole)) == run_dir:
                    item.setSelected(True)
                    self.runs_tree.setCurrentItem(item)
        finally:
            self.runs_tree.blockSignals(False)

    @Slot()
    def _on_run_selected(self) -> None:
        items = self.runs_tree.selectedItems()
        if items:
            self.view_run(Path(items[0].data(0, Qt.ItemDataRole.UserRole)))
            self._update_controls()

    def checkpoints(self) -> list[Path]:
        """The viewed run's checkpoints, as listed."""
        return list(self._checkpoint_paths)

    def selected_checkpoint(self) -> str | None:
        items = self.checkpoint_list.selectedItems()
        return str(items[0].data(Qt.ItemDataRole.UserRole)) if items else None

    def select_checkpoint(self, path: Path) -> None:
        for i in range(self.checkpoint_list.count()):
            item = self.checkpoint_list.item(i)
            item.setSelected(Path(item.data(Qt.ItemDataRole.UserRole)) == Path(path))

    def open_selected_checkpoint(self) -> None:
        """Emit `open_in_canvas` with the selected checkpoint's path."""
        path = self.selected_checkpoint()
        if path is not None:
            self.open_in_canvas.emit(path)

    # Controls -------------------------------------------------------------------------------

    @Slot()
    def _update_controls(self) -> None:
        running = self.process.running
        stopping = self.process.stopping
        problem = self.dataset_problem() or self._run_dir_problem()
        summary = self._summary
        self.start_button.setEnabled(not running and not problem)
        self.pause_button.setEnabled(running and not stopping)
        self.stop_button.setEnabled(running and not stopping)
        self.resume_button.setEnabled(
            not running and summary is not None and summary.resumable and not self._closed
        )
        self.open_button.setEnabled(self.selected_checkpoint() is not None)
        if running:
            request = self.process.request
            hint = f"Training {request.run_dir.name}." if request else ""
        else:
            hint = problem
        self.controls_hint.setText(hint)
        self.controls_hint.setVisible(bool(hint))


def _spin(low: int, high: int, value: int, *, step: int, zero: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSingleStep(step)
    spin.setGroupSeparatorShown(True)
    spin.setKeyboardTracking(False)
    if zero:
        spin.setSpecialValueText(zero)
    return spin

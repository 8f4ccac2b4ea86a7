"""File → Export…: a world rectangle to an image file, in the background (engine.export).

The dialog is not modal: while an export runs the window stays usable. The export runs on
a Python thread of the dialog's own; its progress, result or error reach the UI thread by
queued signals. `shutdown` (called by the main window's) cancels a running export and joins
every thread the dialog started. A previous unfinished export of the chosen file is offered
for resume (engine.export's resumable exports) or started over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QStandardPaths, Qt, Signal, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.dialogs import ask, inform
from app.units import human_size, human_time
from engine.export import (
    ExportCancelled,
    ExportError,
    ExportJob,
    ExportPlan,
    ExportProgress,
    measure_speed,
    plan_export,
    run_export,
    unfinished_export,
)
from engine.export_formats import COMPRESSIONS
from engine.tile_workers import TileWorkers
from engine.tiles import MAX_LOD, Rect
from engine.world import World

log = logging.getLogger(__name__)

FORMAT_CHOICES = (  # (label, format, file suffix)
    ("TIFF", "tiff", ".tif"),
    ("PNG", "png", ".png"),
    ("Pyramidal TIFF", "pyramid", ".tif"),
    ("Deep Zoom", "dzi", ".dzi"),
)
SUFFIXES = {fmt: suffix for _, fmt, suffix in FORMAT_CHOICES}
DEFAULT_NAME = "infinity-canvas-export"
COORD_LIMIT = 2**31 - 1
SPEED_SECONDS = 1.0  # how long the background speed measurement renders


def default_output(fmt: str = "tiff") -> Path:
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    return Path(folder or Path.home()) / f"{DEFAULT_NAME}{SUFFIXES[fmt]}"


class _Bridge(QObject):
    """Signals emitted on worker threads, delivered (queued) on the UI thread."""

    progress = Signal(object)  # ExportProgress
    finished = Signal(object)  # Path
    failed = Signal(object)  # BaseException
    cancelled = Signal()
    speed = Signal(float)


class ExportDialog(QDialog):
    """Export a world rectangle. `view`: the canvas's visible world rectangle.

    `speed_mps`: a recent render speed (megapixels per second) for the time estimate;
    without one it is measured once in the background. Emits `exported(Path)` when done.
    States: "idle", "running", "done", "cancelled", "failed".
    """

    exported = Signal(object)

    def __init__(
        self,
        world: World,
        view: Rect,
        parent: QWidget | None = None,
        *,
        speed_mps: float | None = None,
        model_ref: Mapping[str, Any] | None = None,
        output: Path | None = None,
        measure: bool = True,
        render_worlds: Sequence[World] | None = None,
    ) -> None:
        """`render_worlds`: the world and replicas of it on other devices to spread the
        export's tiles over (engine.tile_workers); None: the world's device alone."""
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.setWindowModality(Qt.WindowModality.NonModal)
        self.world = world
        self.view = Rect.of(view)
        self.model_ref = dict(model_ref) if model_ref is not None else None
        self.render_worlds = list(render_worlds) if render_worlds else None
        self.state = "idle"
        self.result_path: Path | None = None
        self.error: BaseException | None = None
        self._mps = speed_mps
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._speed_thread: threading.Thread | None = None
        self._plan: ExportPlan | None = None
        self._message: QMessageBox | None = None  # the last message box (tests inspect it)
        self._bridge = _Bridge(self)
        self._bridge.progress.connect(self._on_progress)
        self._bridge.finished.connect(self._on_finished)
        self._bridge.failed.connect(self._on_failed)
        self._bridge.cancelled.connect(self._on_cancelled)
        self._bridge.speed.connect(self._on_speed)
        self._build(output)
        self._update_plan()
        if self._mps is None and measure:
            self._measure_speed()

    # Construction -----------------------------------------------------------------------

    def _build(self, output: Path | None) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)

        self.view_radio = QRadioButton("Current view")
        self.custom_radio = QRadioButton("Rectangle")
        self.view_radio.setChecked(True)
        region = QHBoxLayout()
        region.addWidget(self.view_radio)
        region.addWidget(self.custom_radio)
        region.addStretch(1)
        form.addRow("Region", region)
        self.x_box, self.y_box = self._spin(self.view.x), self._spin(self.view.y)
        self.w_box, self.h_box = self._spin(self.view.w, 1), self._spin(self.view.h, 1)
        coords = QHBoxLayout()
        for label, box in (
            ("X", self.x_box),
            ("Y", self.y_box),
            ("W", self.w_box),
            ("H", self.h_box),
        ):
            coords.addWidget(QLabel(label))
            coords.addWidget(box, 1)
        form.addRow("", coords)

        self.format_box = QComboBox()
        for label, fmt, _ in FORMAT_CHOICES:
            self.format_box.addItem(label, fmt)
        form.addRow("Format", self.format_box)
        self.compression_box = QComboBox()
        form.addRow("Compression", self.compression_box)
        self.quality_box = QSpinBox()
        self.quality_box.setRange(1, 100)
        self.quality_box.setValue(90)
        form.addRow("JPEG quality", self.quality_box)
        self.scale_box = QComboBox()
        for k in range(MAX_LOD + 1):
            self.scale_box.addItem("1:1" if k == 0 else f"1:{2**k}", 2.0**-k)
        form.addRow("Scale", self.scale_box)
        self.compile_box = QCheckBox("Compile the model first", self)
        self.compile_box.setToolTip(
            "Compiles the generator for this export's tiles before rendering: 15-35 s the "
            "first time, a few seconds once cached, then the export runs 15-20% faster. Worth "
            "it for exports that take minutes."
        )
        one_device = self.render_worlds is None or len(self.render_worlds) == 1
        self.can_compile = one_device and self.world.can_compile
        if self.can_compile:
            form.addRow("", self.compile_box)
        else:
            self.compile_box.hide()

        self.out_edit = QLineEdit(str(output or default_output("tiff")))
        self.browse_button = QPushButton("Browse…")
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.browse_button)
        form.addRow("File", out_row)

        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        form.addRow("Estimate", self.estimate_label)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c0392b")
        self.error_label.hide()
        layout.addWidget(self.error_label)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%v / %m tiles")
        self.progress_bar.hide()
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton(
            "Export", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.export_button.setDefault(True)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.cancel_button.setEnabled(False)
        layout.addWidget(self.buttons)

        self._inputs: list[QWidget] = [
            self.view_radio,
            self.custom_radio,
            self.x_box,
            self.y_box,
            self.w_box,
            self.h_box,
            self.format_box,
            self.compression_box,
            self.quality_box,
            self.scale_box,
            self.compile_box,
            self.out_edit,
            self.browse_button,
        ]
        self._fill_compressions()
        self._region_changed()

        self.view_radio.toggled.connect(self._region_changed)
        for box in (self.x_box, self.y_box, self.w_box, self.h_box, self.quality_box):
            box.valueChanged.connect(self._update_plan)
        self.format_box.currentIndexChanged.connect(self._format_changed)
        self.compression_box.currentIndexChanged.connect(self._compression_changed)
        self.scale_box.currentIndexChanged.connect(self._update_plan)
        self.compile_box.toggled.connect(self._update_plan)
        self.out_edit.textChanged.connect(self._update_plan)
        self.browse_button.clicked.connect(self.browse)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)

    @staticmethod
    def _spin(value: int, minimum: int = -COORD_LIMIT) -> QSpinBox:
        box = QSpinBox()
        box.setRange(minimum, COORD_LIMIT)
        box.setValue(value)
        box.setGroupSeparatorShown(True)
        return box

    # Inputs -----------------------------------------------------------------------------

    def set_rect(self, rect: Rect | tuple[int, int, int, int]) -> None:
        """Export the rectangle `rect` (world px) instead of the current view."""
        rect = Rect.of(rect)
        self.custom_radio.setChecked(True)
        for box, value in zip(
            (self.x_box, self.y_box, self.w_box, self.h_box), rect.as_tuple(), strict=True
        ):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._update_plan()

    def set_format(self, fmt: str) -> None:
        self.format_box.setCurrentIndex(self.format_box.findData(fmt))

    def set_output(self, path: str | Path) -> None:
        self.out_edit.setText(str(path))

    def region(self) -> Rect:
        """The world rectangle (px) to export."""
        if self.view_radio.isChecked():
            return self.view
        return Rect(self.x_box.value(), self.y_box.value(), self.w_box.value(), self.h_box.value())

    def job(self) -> ExportJob:
        """The export the fields describe (ExportError if they describe none)."""
        fmt = self.format_box.currentData()
        text = self.out_edit.text().strip()
        if not text:
            raise ExportError("choose a file to export to")
        return ExportJob(
            rect=self.region(),
            out=Path(text).expanduser(),
            scale=self.scale_box.currentData(),
            format=fmt,
            compression=self.compression_box.currentData(),
            quality=self.quality_box.value(),
        )

    @Slot()
    def _region_changed(self) -> None:
        custom = self.custom_radio.isChecked()
        if not custom:
            for box, value in zip(
                (self.x_box, self.y_box, self.w_box, self.h_box), self.view.as_tuple(), strict=True
            ):
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)
        for box in (self.x_box, self.y_box, self.w_box, self.h_box):
            box.setEnabled(custom and self.state != "running")
        self._update_plan()

    def _fill_compressions(self) -> None:
        fmt = self.format_box.currentData()
        self.compression_box.blockSignals(True)
        self.compression_box.clear()
        for name in COMPRESSIONS[fmt]:
            self.compression_box.addItem(name.upper() if name == "png" else name.capitalize(), name)
        self.compression_box.blockSignals(False)
        self.compression_box.setEnabled(len(COMPRESSIONS[fmt]) > 1)
        self.quality_box.setEnabled(self.compression_box.currentData() == "jpeg")

    @Slot()
    def _format_changed(self) -> None:
        self._fill_compressions()
        fmt = self.format_box.currentData()
        text = self.out_edit.text().strip()
        if text:
            path = Path(text)
            if path.suffix.lower() != SUFFIXES[fmt]:
                self.out_edit.setText(str(path.with_suffix(SUFFIXES[fmt])))
        self._update_plan()

    @Slot()
    def _compression_changed(self) -> None:
        self.quality_box.setEnabled(self.compression_box.currentData() == "jpeg")
        self._update_plan()

    @Slot()
    def browse(self) -> QFileDialog:
        fmt = self.format_box.currentData()
        current = Path(self.out_edit.text().strip() or default_output(fmt))
        label = self.format_box.currentText()
        dialog = QFileDialog(
            self, "Export To", str(current), f"{label} (*{SUFFIXES[fmt]});;All files (*)"
        )
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix(SUFFIXES[fmt].lstrip("."))
        dialog.selectFile(str(current))
        dialog.fileSelected.connect(self.set_output)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    @Slot()
    def _update_plan(self) -> None:
        try:
            plan = plan_export(self.world, self.job(), mp_per_s=self._mps)
        except ExportError as exc:
            self._plan = None
            self.estimate_label.setText("—")
            self.error_label.setText(str(exc)[:1].upper() + str(exc)[1:])
            self.error_label.show()
        else:
            self._plan = plan
            if plan.estimated_seconds is not None:
                when = f"about {human_time(plan.estimated_seconds)}"
            else:
                when = "measuring speed…"
            if self.can_compile and self.compile_box.isChecked():
                when += ", after up to 35 s of compiling"
            self.estimate_label.setText(
                f"{plan.width:,} × {plan.height:,} px · about "
                f"{human_size(plan.estimated_bytes)} · {when}"
            )
            self.error_label.clear()
            self.error_label.hide()
        self.export_button.setEnabled(self._plan is not None and self.state != "running")

    # Speed ------------------------------------------------------------------------------

    def _measure_speed(self) -> None:
        world, bridge = self.world, self._bridge

        def body() -> None:
            try:
                mps = measure_speed(world, 0, seconds=SPEED_SECONDS)
            except Exception:  # an estimate without a time is still useful
                log.debug("measuring the export speed failed", exc_info=True)
                return
            if not self._stop.is_set():
                bridge.speed.emit(mps)

        self._speed_thread = threading.Thread(target=body, name="export-speed", daemon=True)
        self._speed_thread.start()

    @Slot(float)
    def _on_speed(self, mps: float) -> None:
        self._mps = mps
        self._update_plan()

    # Running ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state == "running"

    @Slot()
    def start(self) -> None:
        """Export button: start, or ask whether to resume a previous unfinished export."""
        if self.running:
            return
        try:
            job = self.job()
            plan_export(self.world, job)
        except ExportError as exc:
            self._update_plan()
            self._fail_box("Cannot Export", str(exc))
            return
        try:
            unfinished = unfinished_export(job.out)
        except Exception:  # an unreadable sidecar: run_export discards it when starting over
            log.debug("reading an unfinished export failed", exc_info=True)
            unfinished = None
        if unfinished is None:
            self.run(job, resume=False)
            return
        self._message = ask(
            self,
            "Resume Export?",
            f"An unfinished export of {job.out.name} was found "
            f"({100 * unfinished.fraction:.0f}% done). Resume it, or start over?",
            [
                ("Resume", QMessageBox.ButtonRole.AcceptRole, lambda: self.run(job, resume=True)),
                (
                    "Start Over",
                    QMessageBox.ButtonRole.DestructiveRole,
                    lambda: self.run(job, resume=False),
                ),
                ("Cancel", QMessageBox.ButtonRole.RejectRole, None),
            ],
            detail="A resumed export continues only if it is the same export (same world, "
            "model, edits, rectangle, scale and format).",
        )

    def run(self, job: ExportJob, *, resume: bool) -> None:
        """Start `job` on a background thread (returns at once)."""
        if self.running:
            return
        self._stop.clear()
        self.state = "running"
        self.result_path = None
        self.error = None
        self._set_inputs_enabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        world, bridge, stop, model_ref = self.world, self._bridge, self._stop, self.model_ref
        compile = self.can_compile and self.compile_box.isChecked()
        if resume:
            self.status_label.setText("Resuming…")
        else:
            self.status_label.setText("Compiling the model…" if compile else "Starting…")
        renderer = None
        if self.render_worlds is not None and len(self.render_worlds) > 1:
            renderer = TileWorkers(world, worlds=self.render_worlds)

        def body() -> None:
            try:
                path = run_export(
                    world,
                    job,
                    resume=resume,
                    on_progress=bridge.progress.emit,
                    should_stop=stop.is_set,
                    model_ref=model_ref,
                    compile=compile,
                    renderer=renderer,
                )
            except ExportCancelled:
                bridge.cancelled.emit()
            except Exception as exc:  # errors travel as values
                log.debug("export failed", exc_info=True)
                bridge.failed.emit(exc)
            else:
                bridge.finished.emit(path)

        self._thread = threading.Thread(target=body, name="export")
        self._thread.start()

    @Slot()
    def cancel(self) -> None:
        """Ask a running export to stop (it leaves its .part files for resume)."""
        if self.running:
            self._stop.set()
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Cancelling…")

    def _set_inputs_enabled(self, enabled: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(enabled)
        if enabled:
            self._region_changed()
            self._fill_compressions_state()
        self.cancel_button.setEnabled(not enabled)
        self.export_button.setEnabled(enabled and self._plan is not None)

    def _fill_compressions_state(self) -> None:
        fmt = self.format_box.currentData()
        self.compression_box.setEnabled(len(COMPRESSIONS[fmt]) > 1)
        self.quality_box.setEnabled(self.compression_box.currentData() == "jpeg")

    @Slot(object)
    def _on_progress(self, progress: ExportProgress) -> None:
        if not self.running:
            return
        self.progress_bar.setRange(0, max(1, progress.total_tiles))
        self.progress_bar.setValue(progress.done_tiles)
        rendered = progress.pixels if not progress.resumed_tiles else None
        parts = [f"{100 * progress.fraction:.0f}%"]
        if rendered is not None and progress.seconds > 0:
            parts.append(f"{rendered / progress.seconds / 1e6:.2f} MP/s")
        if progress.eta_seconds is not None:
            parts.append(f"{human_time(progress.eta_seconds)} left")
        if self._stop.is_set():
            parts.append("cancelling…")
        self.status_label.setText(" · ".join(parts))

    @Slot(object)
    def _on_finished(self, path: Path) -> None:
        self._join()
        self.state = "done"
        self.result_path = Path(path)
        self.progress_bar.setValue(self.progress_bar.maximum())
        self.status_label.setText(f"Exported to {path}")
        self._set_inputs_enabled(True)
        self.exported.emit(self.result_path)

    @Slot()
    def _on_cancelled(self) -> None:
        self._join()
        self.state = "cancelled"
        self.status_label.setText("Cancelled. Export the same file again to resume.")
        self._set_inputs_enabled(True)

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        self._join()
        self.state = "failed"
        self.error = exc
        self.status_label.setText("Export failed.")
        self._set_inputs_enabled(True)
        detail = str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
        self._fail_box("Export Failed", "The export could not be completed.", detail)

    def _fail_box(self, title: str, text: str, detail: str = "") -> None:
        self._message = inform(self, title, text, icon=QMessageBox.Icon.Critical, detail=detail)

    def _join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    # Closing ----------------------------------------------------------------------------

    def reject(self) -> None:
        """Escape / Close while an export runs: cancel it (the dialog stays open)."""
        if self.running:
            self.cancel()
            return
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.running:
            self.cancel()
            event.ignore()
            return
        super().closeEvent(event)

    def shutdown(self, timeout: float | None = None) -> None:
        """Cancel a running export and join the dialog's threads (the window's shutdown)."""
        self._stop.set()
        self._join(timeout)
        if self._speed_thread is not None:
            self._speed_thread.join(timeout)
            self._speed_thread = None
        if self.state == "running":
            self.state = "cancelled"

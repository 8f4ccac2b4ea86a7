"""The explorer window: canvas, navigator, world controls, history, projects, status bar.

Threads: the window lives on the UI thread and never renders or loads anything there.
Tiles come from the session's feeds (app.workers); models load and checkpoints convert on
`TaskRunner` threads, whose results come back as callbacks on the UI thread. `shutdown`
(called by closeEvent, or directly by tests) joins every thread the window started.

Dialogs are opened with `open()`, never `exec()`: a nested event loop would stall the
asyncio tasks that share Qt's loop through qasync.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QImage, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QTabWidget,
    QToolBar,
    QUndoView,
    QWidget,
)

from app.about import APP_NAME, DESCRIPTION, app_version
from app.canvas import Canvas, Tool
from app.dialogs import GoToDialog, ask, choose_file, inform
from app.export_dialog import ExportDialog
from app.gallery import GalleryEntry, render_thumbnail
from app.history import EditCommand, redo_edits
from app.navigator import Navigator
from app.paths import AppPaths
from app.project import (
    SUFFIX,
    ModelRef,
    ProjectError,
    project_title,
)
from app.session import (
    LoadedModel,
    WorldSession,
    default_is_untrained,
    load_model,
    random_seed,
)
from app.settings import Settings
from app.style_panel import BrushSettings, StylePanel
from app.training_tab import TrainingTab
from app.viewport import zoom_label
from app.window_photos import PhotoCommands
from app.window_projects import ProjectCommands
from app.workers import TaskRunner, rgb_to_qimage
from app.world_panel import WorldPanel
from engine.checkpoint import CheckpointError
from engine.edits import RerollRegion, StyleStroke
from engine.official import convert_official_file, looks_like_official
from engine.tiles import Rect

log = logging.getLogger(__name__)

AUTOSAVE_MS = 30_000
STATUS_MS = 250
STROKE_PREVIEW_PX = 256  # longest side of the coarse live preview of a stroke being painted
CHECKPOINT_FILTER = (
    "Checkpoints (*.safetensors *.pth *.pth.tar *.pt);;Infinity Canvas (*.safetensors);;"
    "Official InfinityGAN (*.pth *.pth.tar *.pt);;All files (*)"
)


def about_text() -> str:
    """The body of the About box: name, version and a one-line description."""
    return f"{APP_NAME} {app_version()}\n\n{DESCRIPTION}"


class MainWindow(ProjectCommands, PhotoCommands, QMainWindow):
    """The explorer. `model`, `settings` and `paths` may be injected (tests, benchmarks);
    by default the default model is loaded and the user's settings and folders are used.
    """

    def __init__(
        self,
        model: LoadedModel | None = None,
        *,
        seed: int | None = None,
        device: str | None = None,
        devices: Sequence[str] | None = None,
        precision: str = "auto",
        settings: Settings | QSettings | None = None,
        paths: AppPaths | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if isinstance(settings, QSettings):
            settings = Settings(settings)
        self.settings = settings or Settings()
        self.paths = paths or AppPaths.for_user()
        self.device = device or self.settings.device
        if model is None:
            model = load_model(ModelRef.default(), self.device)
        self.session = WorldSession(
            model,
            random_seed() if seed is None else seed,
            precision=precision,
            cache_bytes=self.settings.cache_mb * 2**20,
            devices=devices,
        )
        self.tasks = TaskRunner(self)
        self._stroke_preview_busy = False
        self._stroke_preview_next: tuple[tuple[float, float], ...] | None = None
        self.project_path: Path | None = None
        self._meta_dirty = False  # seed / model changes (edits are tracked by the undo stack)
        self._closing_confirmed = False
        self._shut_down = False
        self._load_token = 0
        self._dialog: QWidget | None = None  # the last dialog opened (tests inspect it)
        self.export_dialog: ExportDialog | None = None
        self._last_stats = (0, 0.0)
        self._speed_mps: float | None = None
        self._autosave_path = self.paths.autosave_dir / f"autosave-{os.getpid()}{SUFFIX}"

        self.undo_stack = QUndoStack(self)
        self.canvas = Canvas(self)
        self.training = TrainingTab(self.paths.runs_dir)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.canvas, "Explore")
        training_scroll = QScrollArea()  # the tab's minimum size must not widen the window
        training_scroll.setWidgetResizable(True)
        training_scroll.setWidget(self.training)
        self.tabs.addTab(training_scroll, "Train")
        self.setCentralWidget(self.tabs)
        self.navigator = Navigator()
        self.canvas.stand_in_stores = [self.navigator.store]
        self.world_panel = WorldPanel()
        self.style_panel = StylePanel(undo_stack=self.undo_stack)
        self._thumbnail_world: object | None = None  # the World the thumbnails show
        self._build_photo_tools()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_docks()
        self._build_status_bar()
        self._connect()
        self.resize(1280, 800)
        self._restore_layout()

        self._connect_session()
        self.canvas.reset_view()
        self._status_timer = QTimer(self)
        self._status_timer.timeout.connect(self._update_stats)
        self._status_timer.start(STATUS_MS)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start(AUTOSAVE_MS)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._update_title()
        self.canvas.setFocus()

    # Construction -----------------------------------------------------------------------

    def _build_actions(self) -> None:
        def action(text: str, slot: Callable, shortcut=None, tip: str = "") -> QAction:
            a = QAction(text, self)
            if shortcut is not None:
                if isinstance(shortcut, list):
                    a.setShortcuts([QKeySequence(s) for s in shortcut])
                else:
                    a.setShortcut(QKeySequence(shortcut))
            if tip:
                a.setStatusTip(tip)
                a.setToolTip(tip)
            a.triggered.connect(slot)
            return a

        self.new_action = action("&New Project", self.new_project, QKeySequence.StandardKey.New)
        self.open_action = action(
            "&Open Project…", self.open_project_dialog, QKeySequence.StandardKey.Open
        )
        self.save_action = action("&Save Project", self.save, QKeySequence.StandardKey.Save)
        self.save_as_action = action(
            "Save Project &As…", self.save_as, QKeySequence.StandardKey.SaveAs
        )
        self.open_checkpoint_action = action(
            "Open &Checkpoint…",
            self.open_checkpoint_dialog,
            tip="Render with a model checkpoint (official InfinityGAN files are converted)",
        )
        self.export_action = action(
            "&Export…", self.open_export_dialog, "Ctrl+E", "Export a region as an image (Ctrl+E)"
        )
        self.quit_action = action("&Quit", self.close, "Ctrl+Q")
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.about_action = action(f"&About {APP_NAME}", self.show_about)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)

        self.undo_action = self.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcuts([QKeySequence(QKeySequence.StandardKey.Undo)])
        self.redo_action = self.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])

        self.pan_tool_action = action(
            "&Pan Tool", lambda: self.set_tool(Tool.PAN), "H", "Drag to move around (H)"
        )
        self.reroll_tool_action = action(
            "&Re-roll Tool",
            lambda: self.set_tool(Tool.REROLL),
            "R",
            "Drag a rectangle to generate new structure there (R)",
        )
        self.export_tool_action = action(
            "E&xport Region Tool",
            lambda: self.set_tool(Tool.EXPORT),
            "X",
            "Drag a rectangle to export it (X)",
        )
        self.brush_tool_action = action(
            "&Brush Tool",
            lambda: self.set_tool(Tool.BRUSH),
            "B",
            "Paint the style selected in the Styles dock; the base style erases (B)",
        )
        self.smaller_brush_action = action(
            "Smaller Brush", lambda: self.style_panel.scale_radius(1 / 1.25), "["
        )
        self.larger_brush_action = action(
            "Larger Brush", lambda: self.style_panel.scale_radius(1.25), "]"
        )
        self.tool_group = QActionGroup(self)
        for a in self._tool_actions():
            a.setCheckable(True)
            self.tool_group.addAction(a)
        self.pan_tool_action.setChecked(True)

        self.zoom_in_action = action(
            "Zoom &In", self.canvas.zoom_in, [QKeySequence.StandardKey.ZoomIn, "+", "="]
        )
        self.zoom_out_action = action(
            "Zoom &Out", self.canvas.zoom_out, [QKeySequence.StandardKey.ZoomOut, "-"]
        )
        self.actual_size_action = action(
            "&Actual Size (1:1)", self.canvas.actual_size, "Ctrl+0", "Zoom to 1:1 (Ctrl+0)"
        )
        self.reset_view_action = action(
            "&Reset View", self.canvas.reset_view, "Home", "Back to the origin at 1:1 (Home)"
        )
        self.goto_action = action("&Go to Coordinates…", self.go_to_dialog, "Ctrl+G")
        self.random_world_action = action(
            "New &Random World", self.random_world, tip="Pick a random seed"
        )

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_action, self.open_action])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addActions([self.save_action, self.save_as_action])
        file_menu.addSeparator()
        file_menu.addAction(self.open_checkpoint_action)
        file_menu.addSeparator()
        file_menu.addAction(self.place_photo_action)
        file_menu.addSeparator()
        file_menu.addAction(self.export_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        edit_menu = bar.addMenu("&Edit")
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        edit_menu.addActions(self._tool_actions())
        edit_menu.addActions([self.smaller_brush_action, self.larger_brush_action])

        self.view_menu = bar.addMenu("&View")
        self.view_menu.addActions(
            [
                self.zoom_in_action,
                self.zoom_out_action,
                self.actual_size_action,
                self.reset_view_action,
                self.goto_action,
            ]
        )
        self.view_menu.addSeparator()

        world_menu = bar.addMenu("&World")
        world_menu.addActions([self.random_world_action, self.open_checkpoint_action])

        bar.addMenu("&Help").addAction(self.about_action)

    def _build_toolbar(self) -> None:
        bar = QToolBar("Tools", self)
        bar.setObjectName("tools")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addActions(self._tool_actions())
        bar.addSeparator()
        bar.addActions([self.zoom_out_action, self.zoom_in_action, self.actual_size_action])
        bar.addSeparator()
        # The menu's actions say what they undo ("Undo Re-roll 4×4 cells…"): too long for
        # a tool button, so the toolbar has short twins (the shortcuts stay on the menu's).
        stack = self.undo_stack
        for text, tip, slot, changed in (
            ("Undo", "Undo the last edit (Ctrl+Z)", stack.undo, stack.canUndoChanged),
            ("Redo", "Redo the last undone edit (Ctrl+Shift+Z)", stack.redo, stack.canRedoChanged),
        ):
            twin = QAction(text, self)
            twin.setToolTip(tip)
            twin.setEnabled(False)
            twin.triggered.connect(slot)
            changed.connect(twin.setEnabled)
            bar.addAction(twin)
        self.addToolBar(bar)
        self.toolbar = bar

    def _tool_actions(self) -> list[QAction]:
        return [
            self.pan_tool_action,
            self.reroll_tool_action,
            self.brush_tool_action,
            self.export_tool_action,
        ]

    def _dock(
        self, title: str, name: str, widget: QWidget, *, scrolls: bool = False
    ) -> QDockWidget:
        """A right-hand dock; `scrolls`: its panel scrolls when the window is too short."""
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        if scrolls:
            area = QScrollArea()
            area.setWidget(widget)
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            bar = area.verticalScrollBar().sizeHint().width()
            area.setMinimumWidth(widget.minimumSizeHint().width() + bar)
            widget = area
        dock.setWidget(widget)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.view_menu.addAction(dock.toggleViewAction())
        return dock

    def _build_docks(self) -> None:
        self.navigator_dock = self._dock("Navigator", "navigator", self.navigator)
        self.world_dock = self._dock("World", "world", self.world_panel)
        self.styles_dock = self._dock("Styles", "styles", self.style_panel, scrolls=True)
        self.photo_dock = self._photo_dock()
        self.history_view = QUndoView(self.undo_stack)
        self.history_view.setEmptyLabel("Start")
        self.history_dock = self._dock("History", "history", self.history_view)
        # Five docks stacked would make the window taller than a laptop screen: two tab pairs.
        self.tabifyDockWidget(self.world_dock, self.history_dock)
        self.tabifyDockWidget(self.styles_dock, self.photo_dock)
        self.world_dock.raise_()
        self.styles_dock.raise_()
        # Start with the spare height in the Styles / Photos docks (they hold lists).
        vertical = Qt.Orientation.Vertical
        self.resizeDocks([self.world_dock, self.styles_dock], [1, 1000], vertical)
        self.view_menu.addAction(self.toolbar.toggleViewAction())

    def _build_status_bar(self) -> None:
        bar = self.statusBar()

        def label(tip: str, width: int = 0) -> QLabel:
            widget = QLabel()
            widget.setToolTip(tip)
            if width:
                widget.setMinimumWidth(width)
            bar.addPermanentWidget(widget)
            return widget

        self.coords_label = label("World coordinates under the cursor (pixels)", 150)
        self.zoom_label = label("Zoom (screen : world pixels)", 50)
        self.tiles_label = label("Tiles waiting to render / rendering now", 110)
        self.speed_label = label("Render speed (megapixels per second)", 80)
        self.model_label = label("Model and device")
        bar.showMessage("Ready", 3000)

    def _connect(self) -> None:
        self.canvas.viewportChanged.connect(self._view_changed)
        self.canvas.cursorMoved.connect(self._cursor_moved)
        self.canvas.cursorLeft.connect(lambda: self.coords_label.setText(""))
        self.canvas.regionSelected.connect(self.reroll)
        self.canvas.areaSelected.connect(self.export_area)
        self.canvas.strokeFinished.connect(self.paint_stroke)
        self.canvas.strokeChanged.connect(self._preview_stroke)
        styles = self.style_panel
        styles.galleryChanged.connect(self._gallery_changed)
        styles.thumbnailsWanted.connect(self._render_thumbnails)
        styles.set_brush_percent(*self.settings.brush)
        styles.brushChanged.connect(self._brush_changed)
        self._brush_changed(styles.brush)
        self.training.open_in_canvas.connect(self.open_trained_checkpoint)
        self.canvas.renderError.connect(self._render_error)
        self.navigator.jumpRequested.connect(lambda x, y: self.canvas.center_on(x, y))
        self.session.edited.connect(self._world_edited)
        self._connect_photo_tools()
        self.undo_stack.cleanChanged.connect(self._update_title)
        self.undo_stack.indexChanged.connect(self._update_title)
        panel = self.world_panel
        panel.seedChosen.connect(self.set_seed)
        panel.randomWorldRequested.connect(self.random_world)
        panel.modelChosen.connect(self.choose_model)
        panel.openCheckpointRequested.connect(self.open_checkpoint_dialog)
        panel.deviceChosen.connect(self.choose_device)
        panel.cacheSizeChosen.connect(self.set_cache_mb)
        panel.show_device(self.device)
        panel.show_cache_mb(self.settings.cache_mb)

    def _connect_session(self) -> None:
        """Point the canvas, navigator and panels at the session's current world."""
        session = self.session
        self.canvas.cell_px = session.world.config.cell_px
        self.canvas.set_feed(session.feed)
        self.navigator.set_feed(session.nav_feed)
        self.navigator.follow(self.canvas.viewport)
        self.world_panel.show_seed(session.seed)
        self.style_panel.seed_for_duplicate = session.seed
        if self._thumbnail_world is not session.world:
            self._thumbnail_world = session.world
            self.style_panel.invalidate_thumbnails()
        self._show_models()
        self.model_label.setText(f"{session.model.description} · {session.device_text}")
        self._update_title()

    def _show_models(self) -> None:
        files = self.paths.user_checkpoints() + [
            p for p in self.settings.recent("checkpoints") if p.is_file()
        ]
        self.world_panel.show_models(
            self.session.model.ref, files, default_untrained=default_is_untrained()
        )

    def _restore_layout(self) -> None:
        geometry, state = self.settings.window_layout()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # Status and title -------------------------------------------------------------------

    @property
    def is_dirty(self) -> bool:
        return self._meta_dirty or not self.undo_stack.isClean()

    @Slot()
    def _update_title(self) -> None:
        untrained = " — untrained model" if self.session.model.untrained else ""
        self.setWindowTitle(f"{project_title(self.project_path)}[*] — {APP_NAME}{untrained}")
        self.setWindowModified(self.is_dirty)

    def _view_changed(self, viewport) -> None:
        self.navigator.follow(viewport)
        self.zoom_label.setText(zoom_label(viewport.zoom))
        self.zoom_in_action.setEnabled(self.canvas.can_zoom_in)
        self.zoom_out_action.setEnabled(self.canvas.can_zoom_out)

    def _cursor_moved(self, x: float, y: float) -> None:
        self.coords_label.setText(f"x {int(x // 1):,}  y {int(y // 1):,}")

    def _render_error(self, message: str) -> None:
        self.statusBar().showMessage(f"Rendering failed: {message}", 10_000)

    @Slot()
    def _update_stats(self) -> None:
        stats = self.session.feed.stats()
        queued, flying = stats.queued_tiles, stats.in_flight_tiles
        self.tiles_label.setText(
            f"{queued} queued · {flying} rendering" if queued or flying else "idle"
        )
        pixels, seconds = stats.rendered_pixels, stats.render_seconds
        last_pixels, last_seconds = self._last_stats
        if seconds > last_seconds and pixels >= last_pixels:
            self._speed_mps = (pixels - last_pixels) / (seconds - last_seconds) / 1e6
        self._last_stats = (pixels, seconds)
        speed = "—" if self._speed_mps is None else f"{self._speed_mps:.2f}"
        self.speed_label.setText(f"{speed} MP/s")

    # Tools and edits --------------------------------------------------------------------

    def set_tool(self, tool: Tool) -> None:
        self.canvas.set_tool(tool)
        actions = {
            Tool.REROLL: self.reroll_tool_action,
            Tool.EXPORT: self.export_tool_action,
            Tool.BRUSH: self.brush_tool_action,
        }
        actions.get(tool, self.pan_tool_action).setChecked(True)
        if tool == Tool.BRUSH:  # the brush's settings and styles live in the Styles dock
            self.styles_dock.show()
            self.styles_dock.raise_()

    @Slot(object)
    def reroll(self, cells: Rect, salt: int | None = None) -> None:
        """Re-roll the lattice cells `cells` (undoable)."""
        salt = secrets.randbelow(2**31) if salt is None else salt
        edit = RerollRegion(cells.x, cells.y, cells.w, cells.h, salt)
        self.undo_stack.push(EditCommand(lambda: self.session.world, edit))

    @Slot(object)
    def paint_stroke(self, points: tuple[tuple[float, float], ...]) -> StyleStroke:
        """Paint the selected gallery style along `points` (world px) with the brush
        settings of the Styles dock: one undoable edit."""
        edit = self._stroke_edit(points)
        self.undo_stack.push(EditCommand(lambda: self.session.world, edit))
        return edit

    def _stroke_edit(self, points: tuple[tuple[float, float], ...]) -> StyleStroke:
        brush = self.style_panel.brush
        style = self.style_panel.current_entry().style
        return StyleStroke(tuple(points), brush.radius, brush.softness, brush.opacity, style)

    @Slot(object)
    def _preview_stroke(self, points: tuple[tuple[float, float], ...]) -> None:
        """Render, off the UI thread and coarse, what the stroke painted so far makes of the
        pixels under it, for the canvas to show while the button is down. One render at a
        time; the newest stroke is rendered next."""
        if self._stroke_preview_busy:
            self._stroke_preview_next = points
            return
        edit = self._stroke_edit(points)
        world = self.session.world
        rect = stroke_bounds(edit)
        scale = preview_scale(rect, self.canvas.viewport.zoom)

        def work() -> tuple[Rect, QImage]:
            return rect, rgb_to_qimage(world.with_edit(edit).render(rect, scale))

        def done(result: tuple[Rect, QImage]) -> None:
            self._stroke_preview_busy = False
            painting = self.canvas.stroke_points or ()
            if world is self.session.world and painting[: len(points)] == edit.points:
                self.canvas.set_stroke_preview(*result)  # (not for an earlier stroke's)
            pending, self._stroke_preview_next = self._stroke_preview_next, None
            if pending is not None and self.canvas.stroke_points is not None:
                self._preview_stroke(pending)

        def failed(exc: BaseException) -> None:
            self._stroke_preview_busy = False
            self._stroke_preview_next = None
            self.statusBar().showMessage(f"Stroke preview failed: {exc}", 10_000)

        self._stroke_preview_busy = True
        self.tasks.run(work, done, failed, name="stroke-preview")

    def _brush_changed(self, brush: BrushSettings) -> None:
        self.canvas.set_brush(brush.radius, brush.softness)
        self.settings.brush = self.style_panel.brush_percent()

    def _gallery_changed(self, _gallery) -> None:
        self._update_title()  # gallery changes are undo-stack commands: the stack tracks them

    def _render_thumbnails(self, entries: list[GalleryEntry]) -> None:
        """Render the thumbnails of `entries` on a worker thread, for the current world."""
        world = self.session.world

        def work() -> list:
            return [(e, rgb_to_qimage(render_thumbnail(world, e.style))) for e in entries]

        def done(images: list) -> None:
            if world is not self.session.world:
                return  # a newer world: its own thumbnails are on the way
            for entry, image in images:
                self.style_panel.set_thumbnail(entry, image)

        def failed(exc: BaseException) -> None:
            self.statusBar().showMessage(f"Style thumbnails failed: {exc}", 10_000)

        self.tasks.run(work, done, failed, name="style-thumbnails")

    def _world_edited(self, influence: Rect) -> None:
        self.canvas.invalidate(influence)
        self.navigator.invalidate(influence)

    # World settings ---------------------------------------------------------------------

    def _rebuild(self, *, model: LoadedModel | None = None, seed: int | None = None) -> None:
        """New World with the current edit log and undo history (a new model or seed)."""
        world = self.session.world
        self.session.rebuild(
            model=model, seed=seed, edits=world.edits, redo=redo_edits(self.undo_stack)
        )
        self._connect_session()

    @Slot(int)
    def set_seed(self, seed: int) -> None:
        if seed == self.session.seed:
            return
        self._rebuild(seed=seed)
        self._meta_dirty = True
        self._update_title()

    @Slot()
    def random_world(self) -> None:
        self.set_seed(random_seed())

    @Slot(int)
    def set_cache_mb(self, mb: int) -> None:
        self.settings.cache_mb = mb
        self.session.cache_bytes = mb * 2**20

    @Slot(object)
    def choose_model(self, ref: ModelRef) -> None:
        """Load `ref` in the background, then render with it."""
        self._load_model(ref, self.device, self._use_model)

    @Slot(str)
    def choose_device(self, device: str) -> None:
        if device == self.device:
            return
        previous = self.device

        def failed(message: str) -> None:
            self.device = previous
            self.world_panel.show_device(previous)

        self.device = device
        self.settings.device = device
        self.session.devices = None  # a device chosen here replaces `gui --devices`
        self._load_model(self.session.model.ref, device, self._use_model, failed)

    def _use_model(self, model: LoadedModel) -> None:
        if model.ref.kind == "file" and model.ref.path is not None:
            self.settings.add_recent("checkpoints", model.ref.path)
        changed = not model.ref.same_model(self.session.model.ref)
        self._rebuild(model=model)
        if changed:
            self._meta_dirty = True
        self._update_title()
        self.statusBar().showMessage(f"Rendering with {model.description}", 5000)

    def _load_model(
        self,
        ref: ModelRef,
        device: str,
        on_loaded: Callable[[LoadedModel], None],
        on_failed: Callable[[str], None] | None = None,
    ) -> None:
        """Load a model on a worker thread; the newest load wins. Errors open a dialog."""
        self._load_token += 1
        token = self._load_token
        self.world_panel.setEnabled(False)
        self.statusBar().showMessage(f"Loading {ref.label()}…")

        def done(model: LoadedModel) -> None:
            if token != self._load_token:
                return
            self.world_panel.setEnabled(True)
            self.statusBar().clearMessage()
            on_loaded(model)

        def failed(exc: BaseException) -> None:
            if token != self._load_token:
                return
            self.world_panel.setEnabled(True)
            self.statusBar().clearMessage()
            self._show_models()
            if on_failed is not None:
                on_failed(str(exc))
            self._error("Cannot Use This Model", f"{ref.label()} could not be loaded.", exc)

        self.tasks.run(lambda: load_model(ref, device), done, failed, name="load-model")

    def _error(self, title: str, text: str, exc: BaseException | str) -> None:
        detail = (
            str(exc)
            if isinstance(exc, (str, CheckpointError, ProjectError))
            else (f"{type(exc).__name__}: {exc}")
        )
        self._dialog = inform(self, title, text, icon=QMessageBox.Icon.Critical, detail=detail)

    # Checkpoints ------------------------------------------------------------------------

    @Slot()
    def open_checkpoint_dialog(self) -> None:
        folder = self.settings.last_folder("checkpoints") or str(self.paths.checkpoints_dir)
        dialog = choose_file(
            self, "Open Checkpoint", folder, CHECKPOINT_FILTER, self.open_checkpoint
        )
        self._dialog = dialog
        dialog.open()

    @Slot(str)
    def open_trained_checkpoint(self, path: str) -> None:
        """ "Open in canvas" from the training tab: explore the checkpoint (hot swap)."""
        self.tabs.setCurrentWidget(self.canvas)
        self.open_checkpoint(Path(path))

    def open_checkpoint(self, path: Path) -> None:
        """Render with the checkpoint at `path`; an official InfinityGAN file is offered
        for conversion (saved to the user's checkpoints folder); errors open a dialog."""
        path = Path(path)
        self.settings.set_last_folder("checkpoints", path.parent)
        if looks_like_official(path):
            target = self._conversion_target(path)
            self._dialog = ask(
                self,
                "Convert Official Checkpoint?",
                f"{path.name} is an official InfinityGAN checkpoint. Infinity Canvas can "
                "convert it to its own format and then render with it.",
                [
                    ("Convert", QMessageBox.ButtonRole.AcceptRole, lambda: self._convert(path)),
                    ("Cancel", QMessageBox.ButtonRole.RejectRole, None),
                ],
                detail=f"The converted model will be saved as {target}.",
            )
            return
        self._load_model(ModelRef.of_file(path), self.device, self._use_model)

    def _conversion_target(self, path: Path) -> Path:
        name = path.name
        for suffix in (".tar", ".pth", ".pt"):
            name = name.removesuffix(suffix)
        target = self.paths.checkpoints_dir / f"{name}.safetensors"
        n = 2
        while target.exists():
            target = self.paths.checkpoints_dir / f"{name}-{n}.safetensors"
            n += 1
        return target

    def _convert(self, path: Path) -> None:
        target = self._conversion_target(path)
        self.statusBar().showMessage(f"Converting {path.name}…")
        device = self.device

        def work() -> LoadedModel:
            out = convert_official_file(path, target)
            return load_model(ModelRef.of_file(out), device)

        def done(model: LoadedModel) -> None:
            self._use_model(model)
            self.statusBar().showMessage(
                f"Converted {path.name} to {target.name} in {target.parent}", 10_000
            )

        def failed(exc: BaseException) -> None:
            self.statusBar().clearMessage()
            self._error("Conversion Failed", f"{path.name} could not be converted.", exc)

        self.tasks.run(work, done, failed, name="convert-official")

    # Dialogs ----------------------------------------------------------------------------

    @Slot()
    def go_to_dialog(self) -> GoToDialog:
        vp = self.canvas.viewport
        dialog = GoToDialog(vp.center_x, vp.center_y, vp.zoom, self)
        dialog.accepted.connect(lambda: self.canvas.center_on(*dialog.values()))
        dialog.finished.connect(dialog.deleteLater)
        self._dialog = dialog
        dialog.open()
        return dialog

    @Slot()
    @Slot(object)
    def export_area(self, rect: Rect) -> ExportDialog:
        """The export tool's rectangle (world px): the Export dialog, set to that region."""
        dialog = self.open_export_dialog()
        if not dialog.running:
            dialog.set_rect(rect)
        return dialog

    def open_export_dialog(self) -> ExportDialog:
        """File → Export…: not modal, so the window stays usable while an export runs."""
        dialog = self.export_dialog
        if dialog is not None and dialog.running:  # one export at a time: show it
            dialog.show()
            dialog.raise_()
            dialog.activateWindow()
            return dialog
        if dialog is not None:
            dialog.shutdown()
            dialog.deleteLater()
        dialog = ExportDialog(
            self.session.world,
            self.canvas.viewport.world_rect(),
            self,
            speed_mps=self._speed_mps,
            model_ref=self.session.model.ref.to_json(),
            render_worlds=self.session.render_worlds,
        )
        dialog.exported.connect(
            lambda path: self.statusBar().showMessage(f"Exported to {path}", 15_000)
        )
        self.export_dialog = dialog
        dialog.show()
        return dialog

    def show_about(self) -> QMessageBox:
        """Open the About box (window-modal, non-blocking) and return it."""
        box = inform(self, f"About {APP_NAME}", about_text())
        self._dialog = box
        return box

    # Shutdown ---------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._shut_down:
            event.accept()
            return
        if self.is_dirty and not self._closing_confirmed:
            event.ignore()

            def close_now() -> None:
                self._closing_confirmed = True
                self.close()

            self._unless_cancelled(close_now)
            return
        self.settings.set_window_layout(self.saveGeometry(), self.saveState())
        self.shutdown()
        event.accept()

    @Slot()
    def shutdown(self) -> None:
        """Stop timers and join every thread the window started (idempotent)."""
        if self._shut_down:
            return
        self._shut_down = True
        self._status_timer.stop()
        self._autosave_timer.stop()
        if self.export_dialog is not None:
            self.export_dialog.shutdown()  # cancels a running export and joins its thread
        self.placer.shutdown()  # cancels an inversion and joins its thread
        self.canvas.set_feed(None)
        self.navigator.set_feed(None)
        self.tasks.shutdown()
        self.training.shutdown()
        self.session.shutdown()
        self._remove_autosave()
        self.settings.mark_clean_exit()
        self.settings.sync()


def stroke_bounds(edit: StyleStroke) -> Rect:
    """World pixels the brush's path covers (points grown by the radius), whole pixels."""
    xs = [x for x, _ in edit.points]
    ys = [y for _, y in edit.points]
    x0, y0 = math.floor(min(xs) - edit.radius), math.floor(min(ys) - edit.radius)
    x1, y1 = math.ceil(max(xs) + edit.radius), math.ceil(max(ys) + edit.radius)
    return Rect(x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def preview_scale(rect: Rect, zoom: float) -> float:
    """The preview's scale: a power of two, at most 1 and at most one power of two above the
    view's zoom, and coarse enough that the longer side of `rect` gets at most
    STROKE_PREVIEW_PX pixels."""
    k = max(0, math.ceil(math.log2(max(rect.w, rect.h) / STROKE_PREVIEW_PX)))
    k = max(k, math.floor(-math.log2(min(1.0, zoom)) + 1e-9))
    return 2.0**-k

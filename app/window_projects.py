"""The File menu's project commands, autosave and crash recovery, for the main window.

`ProjectCommands` is mixed into `MainWindow` (app.main_window) and uses its session,
canvas, undo stack, settings, paths, task runner and status bar. Project files themselves
are read and written by the Qt-free app.project.

Opening a project validates the file first (a clear message for a bad one), then checks
and loads its model in the background; a missing or changed model file is reported, with
the choice to continue with the default model or to cancel. Unsaved work is written to an
autosave file every 30 s (one per process, removed at a clean exit or a save); a later
start offers to recover the newest autosave of a process that is gone and did not exit
cleanly.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.about import APP_NAME
from app.dialogs import ask, choose_file
from app.gallery import StyleGallery
from app.history import EditCommand
from app.project import (
    SUFFIX,
    ModelCheck,
    ModelRef,
    Project,
    ProjectError,
    ProjectView,
    check_model,
    load_project,
    project_title,
    save_project,
    with_suffix,
)
from app.session import LoadedModel, load_model, random_seed

log = logging.getLogger(__name__)

PROJECT_FILTER = f"Infinity Canvas projects (*{SUFFIX});;All files (*)"


class ProjectCommands:
    """New / Open / Save / Save As, recent projects, autosave and recovery (a mixin)."""

    # Projects ---------------------------------------------------------------------------

    def current_project(self) -> Project:
        vp = self.canvas.viewport
        return Project(
            model=self.session.model.ref,
            seed=self.session.seed,
            view=ProjectView(vp.center_x, vp.center_y, vp.zoom),
            edits=self.session.world.edits,
            gallery=self.style_panel.gallery,
        )

    def _unless_cancelled(self, then: Callable[[], None]) -> None:
        """Run `then` now, or after asking to save unsaved changes (Save / Discard / Cancel)."""
        if not self.is_dirty:
            then()
            return

        def save_then() -> None:
            if self.save():
                then()

        self._dialog = ask(
            self,
            "Unsaved Changes",
            f"Save the changes to {project_title(self.project_path)}?",
            [
                ("Save", QMessageBox.ButtonRole.AcceptRole, save_then),
                ("Discard", QMessageBox.ButtonRole.DestructiveRole, then),
                ("Cancel", QMessageBox.ButtonRole.RejectRole, None),
            ],
            icon=QMessageBox.Icon.Warning,
            detail="Your edits will be lost if you don't save them.",
        )

    @Slot()
    def new_project(self) -> None:
        """A fresh world (random seed, no edits) with the current model."""

        def start() -> None:
            self.session.rebuild(seed=random_seed())
            self.undo_stack.clear()
            self.style_panel.set_gallery(StyleGallery())
            self._connect_session()
            self._set_project_path(None)
            self.canvas.reset_view()

        self._unless_cancelled(start)

    @Slot()
    def open_project_dialog(self) -> None:
        def chosen(path: Path) -> None:
            self.settings.set_last_folder("projects", path.parent)
            self.open_project(path)

        folder = self.settings.last_folder("projects")
        dialog = choose_file(self, "Open Project", folder, PROJECT_FILTER, chosen)
        self._dialog = dialog
        self._unless_cancelled(dialog.open)

    def open_project(self, path: Path, *, recovered: bool = False) -> None:
        """Open a project file (asks about unsaved changes first); problems open a dialog.

        The project's model is checked (found? same bytes?) and loaded in the background;
        if it is missing or changed, the user may continue with the default model.
        """
        self._unless_cancelled(lambda: self._open_project(Path(path), recovered))

    def _open_project(self, path: Path, recovered: bool = False) -> None:
        try:
            project = load_project(path)
        except ProjectError as exc:
            self._error("Cannot Open Project", f"{path.name} could not be opened.", exc)
            return
        target = None if recovered else path
        if project.model.same_model(self.session.model.ref) and (
            project.model.kind != "file" or project.model.sha256 is not None
        ):
            self._apply_project(project, None, target, recovered)
            return

        def check_and_load() -> tuple[ModelCheck, LoadedModel | None]:
            check = check_model(project.model, path.parent)
            if check.problem is not None:
                return check, None
            return check, load_model(check.ref, self.device)

        def checked(result: tuple[ModelCheck, LoadedModel | None]) -> None:
            check, model = result
            if model is not None:
                self._apply_project(project, model, target, recovered)
                return
            self._ask_about_model(project, check, target, recovered)

        def failed(exc: BaseException) -> None:
            self.statusBar().clearMessage()
            self._ask_about_model(project, ModelCheck(project.model, str(exc)), target, recovered)

        self.statusBar().showMessage(f"Opening {path.name}…")
        self.tasks.run(check_and_load, checked, failed, name="open-project")

    def _ask_about_model(
        self, project: Project, check: ModelCheck, path: Path | None, recovered: bool
    ) -> None:
        def with_model(ref: ModelRef) -> None:
            self._load_model(
                ref, self.device, lambda m: self._apply_project(project, m, path, recovered)
            )

        buttons = [
            (
                "Use Default Model",
                QMessageBox.ButtonRole.AcceptRole,
                lambda: with_model(ModelRef.default()),
            )
        ]
        if check.changed:
            buttons.append(
                (
                    "Use Changed File",
                    QMessageBox.ButtonRole.AcceptRole,
                    lambda: with_model(check.ref),
                )
            )
        buttons.append(("Cancel", QMessageBox.ButtonRole.RejectRole, None))
        self.statusBar().clearMessage()
        self._dialog = ask(
            self,
            "Model Not Available",
            f"The project's model cannot be used. {check.problem}",
            buttons,
            icon=QMessageBox.Icon.Warning,
            detail="With another model the landscape and its edits will look different.",
        )

    def _apply_project(
        self, project: Project, model: LoadedModel | None, path: Path | None, recovered: bool
    ) -> None:
        self.session.rebuild(model=model, seed=project.seed, edits=project.edits)
        self.undo_stack.clear()
        self.style_panel.set_gallery(project.gallery)
        for edit in project.edits:  # already in the log: undoable, not applied again
            self.undo_stack.push(EditCommand(lambda: self.session.world, edit, applied=True))
        self.undo_stack.setClean()
        self._connect_session()
        v = project.view
        self.canvas.center_on(v.center_x, v.center_y, v.zoom)
        self._set_project_path(path)
        if recovered:
            self._meta_dirty = True
        elif path is not None:
            self.settings.add_recent("projects", path)
        if model is not None and not model.ref.same_model(project.model):
            self._meta_dirty = True  # the project now refers to another model
        self._update_title()
        self.statusBar().showMessage(
            "Recovered unsaved work" if recovered else f"Opened {project_title(path)}", 5000
        )

    def _set_project_path(self, path: Path | None) -> None:
        self.project_path = path
        self._meta_dirty = False
        self.undo_stack.setClean()
        self._update_title()

    @Slot()
    def save(self) -> bool:
        """Save to the project's file, or ask for one; returns whether it was saved now."""
        if self.project_path is None:
            self.save_as()
            return False
        return self.save_project_to(self.project_path)

    @Slot()
    def save_as(self) -> None:
        def chosen(name: str) -> None:
            self.settings.set_last_folder("projects", Path(name).parent)
            self.save_project_to(with_suffix(name))

        start = self.settings.last_folder("projects")
        if self.project_path is not None:
            start = str(self.project_path)
        dialog = QFileDialog(self, "Save Project", start, PROJECT_FILTER)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix(SUFFIX.lstrip("."))
        dialog.fileSelected.connect(chosen)
        dialog.finished.connect(dialog.deleteLater)
        self._dialog = dialog
        dialog.open()

    def save_project_to(self, path: Path) -> bool:
        """Write the project to `path`; it becomes the project's file. Errors open a dialog."""
        try:
            save_project(path, self.current_project())
        except OSError as exc:
            self._error("Cannot Save Project", f"{path} could not be written.", exc)
            return False
        self.settings.add_recent("projects", path)
        self._set_project_path(path)
        self._remove_autosave()
        self.statusBar().showMessage(f"Saved {path}", 5000)
        return True

    def _fill_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        recent = [p for p in self.settings.recent("projects") if p.is_file()]
        for path in recent:
            a = menu.addAction(path.name)
            a.setToolTip(str(path))
            a.setStatusTip(str(path))
            a.triggered.connect(lambda _=False, p=path: self.open_project(p))
        if not recent:
            menu.addAction("No Recent Projects").setEnabled(False)
        menu.addSeparator()
        menu.addAction("Clear Menu", lambda: self.settings.clear_recent("projects"))

    # Autosave and recovery --------------------------------------------------------------

    @Slot()
    def autosave(self) -> Path | None:
        """Write unsaved work to the autosave file (crash recovery); None when clean."""
        if not self.is_dirty or self._shut_down:
            return None
        try:
            return save_project(self._autosave_path, self.current_project())
        except OSError:
            log.warning("autosave to %s failed", self._autosave_path, exc_info=True)
            return None

    def _remove_autosave(self) -> None:
        self._autosave_path.unlink(missing_ok=True)

    def recoverable_autosave(self) -> Path | None:
        """The newest autosave left by a session that did not exit cleanly, if any."""
        folder = self.paths.autosave_dir
        if not folder.is_dir():
            return None
        last_clean = self.settings.last_clean_exit
        found = []
        for path in folder.glob(f"autosave-*{SUFFIX}"):
            if path == self._autosave_path or _owner_alive(path):
                continue
            mtime = path.stat().st_mtime
            if mtime > last_clean:
                found.append((mtime, path))
        return max(found)[1] if found else None

    def offer_recovery(self) -> QMessageBox | None:
        """Ask whether to recover unsaved work from a session that ended abnormally."""
        path = self.recoverable_autosave()
        if path is None:
            return None
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))

        def recover() -> None:
            self._open_project(path, recovered=True)
            path.unlink(missing_ok=True)

        def discard() -> None:
            path.unlink(missing_ok=True)

        box = ask(
            self,
            "Recover Unsaved Work?",
            f"{APP_NAME} did not close normally. Unsaved work from {when} can be recovered.",
            [
                ("Recover", QMessageBox.ButtonRole.AcceptRole, recover),
                (
                    "Discard",
                    QMessageBox.ButtonRole.DestructiveRole,
                    lambda: path.unlink(missing_ok=True),
                ),
            ],
        )
        self._dialog = box
        return box


def _owner_alive(path: Path) -> bool:
    """Whether the process that writes autosave-<pid> still runs (POSIX; elsewhere: no)."""
    try:
        pid = int(path.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return False
    if os.name != "posix" or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""The application's top-level window."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox, QWidget

from app.about import APP_NAME, DESCRIPTION, app_version


def about_text() -> str:
    """The body of the About box: name, version and a one-line description."""
    return f"{APP_NAME} {app_version()}\n\n{DESCRIPTION}"


class MainWindow(QMainWindow):
    """Menus (File → Quit, Help → About), a status bar and the central area.

    File → Quit (Ctrl+Q) closes the window; closing the last window quits the application.
    The central widget is an empty placeholder until the explorer canvas takes its place.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(APP_NAME)
        self.resize(1280, 800)
        self.setCentralWidget(QWidget(self))
        self._about_box: QMessageBox | None = None

        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.quit_action.triggered.connect(self.close)

        self.about_action = QAction(f"&About {APP_NAME}", self)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        self.about_action.triggered.connect(self.show_about)

        self.menuBar().addMenu("&File").addAction(self.quit_action)
        self.menuBar().addMenu("&Help").addAction(self.about_action)
        self.statusBar().showMessage("Ready")

    def show_about(self) -> QMessageBox:
        """Open the About box and return it.

        It is window-modal but non-blocking (`open`, not `exec`): a nested event loop would
        stall the asyncio tasks that share Qt's loop through qasync.
        """
        if self._about_box is None:
            self._about_box = QMessageBox(
                QMessageBox.Icon.Information,
                f"About {APP_NAME}",
                about_text(),
                QMessageBox.StandardButton.Ok,
                self,
            )
        self._about_box.open()
        return self._about_box

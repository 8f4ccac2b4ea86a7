"""The main window: opens, has its menus and status bar, and closes."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence

from app.about import APP_NAME, DESCRIPTION, app_version
from app.main_window import MainWindow


def make_window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def test_main_window_opens_and_closes(qtbot):
    window = make_window(qtbot)
    assert window.windowTitle() == APP_NAME
    assert window.statusBar().isVisible()
    assert window.close()
    assert not window.isVisible()


def test_menu_bar_has_file_and_help_menus(qtbot):
    window = make_window(qtbot)
    titles = [action.text() for action in window.menuBar().actions()]
    assert titles == ["&File", "&Help"]


def test_quit_action_is_ctrl_q_and_closes_the_window(qtbot):
    window = make_window(qtbot)
    assert window.quit_action.shortcut() == QKeySequence("Ctrl+Q")
    window.quit_action.trigger()
    qtbot.waitUntil(lambda: not window.isVisible())


def test_about_box_shows_version_and_description_without_blocking(qtbot):
    window = make_window(qtbot)
    window.about_action.trigger()
    box = window.show_about()
    qtbot.waitUntil(box.isVisible)
    assert app_version() in box.text()
    assert DESCRIPTION in box.text()
    box.accept()
    qtbot.waitUntil(lambda: not box.isVisible())

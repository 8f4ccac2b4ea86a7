"""Fixtures for GUI tests: the tiny model, private settings and folders, window factory."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QImage

from app.main_window import MainWindow
from app.paths import AppPaths
from app.project import ModelRef
from app.session import LoadedModel, load_model

SETTLE_MS = 30_000  # generous bound for waits that take well under a second


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    return load_model(ModelRef.of_preset("tiny"), "cpu")


@pytest.fixture
def paths(tmp_path) -> AppPaths:
    return AppPaths(tmp_path / "data", tmp_path / "state")


@pytest.fixture
def settings_file(tmp_path):
    return str(tmp_path / "settings.ini")


@pytest.fixture
def make_window(qtbot, tiny_model, paths, settings_file):
    """Build shown windows on the tiny model (fp32); each is shut down after the test."""
    windows: list[MainWindow] = []

    def make(seed: int = 3, size: tuple[int, int] = (900, 600), **kwargs) -> MainWindow:
        kwargs.setdefault("model", tiny_model)
        window = MainWindow(
            seed=seed,
            device="cpu",
            precision="fp32",
            settings=QSettings(settings_file, QSettings.Format.IniFormat),
            paths=paths,
            **kwargs,
        )
        qtbot.addWidget(window)
        windows.append(window)
        window.resize(*size)
        window.show()
        qtbot.waitExposed(window)
        return window

    yield make
    for window in windows:
        window.shutdown()


@pytest.fixture
def settle(qtbot):
    """`settle(window)`: wait until the canvas's requests are answered and every visible
    tile is painted."""

    def wait(window: MainWindow, timeout: int = SETTLE_MS) -> None:
        canvas = window.canvas

        def settled() -> bool:
            return (
                not canvas._request_timer.isActive()
                and window.session.feed.idle
                and canvas.is_complete()
            )

        qtbot.waitUntil(settled, timeout=timeout)
        qtbot.wait(20)  # let the last update() repaint

    return wait


@pytest.fixture
def grab_array():
    """`grab_array(widget)`: the widget as it looks on screen, uint8 [H, W, 3]."""

    def grab(widget) -> np.ndarray:
        image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        w, h = image.width(), image.height()
        data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * h)
        return data.reshape(h, image.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()

    return grab

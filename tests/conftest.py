"""Shared test set-up: Qt renders offscreen, torch uses few threads, so tests run headless in CI."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists


def pytest_configure() -> None:
    """Keep CPU torch to two threads: fast on shared CI machines, and the same on every run."""
    import torch

    torch.set_num_threads(2)

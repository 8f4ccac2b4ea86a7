"""Live plots of a training run: loss terms and images/s against step (pyqtgraph).

Every numeric term of metrics.jsonl gets a curve; `d_total` and `g_total` are shown, the
others start hidden and are picked from the "Terms" menu (the legend lists only the curves
shown). What is shown survives `clear()`, so a choice carries over to the next run viewed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QToolButton, QVBoxLayout, QWidget

SHOWN_BY_DEFAULT = ("d_total", "g_total")
RATE_KEY = "images_per_s"
NOT_PLOTTED = frozenset(
    {"step", "time", "wall_time", RATE_KEY, "guard_skips", "rollbacks", "events", "ema_decay"}
)
# Okabe-Ito colours (colour-blind friendly) for the terms one looks at most; the others
# take pyqtgraph's hue wheel.
COLORS = {
    "d_total": "#0072B2",
    "g_total": "#D55E00",
    "g_diversity": "#009E73",
    "r1": "#CC79A7",
    "path_length": "#E69F00",
    "g_adv": "#56B4E9",
    "d_adv": "#000000",
}
RATE_COLOR = "#009E73"


class _Series:
    __slots__ = ("curve", "steps", "values")

    def __init__(self, curve: pg.PlotDataItem) -> None:
        self.curve = curve
        self.steps: list[float] = []
        self.values: list[float] = []

    def update_curve(self) -> None:
        self.curve.setData(np.asarray(self.steps), np.asarray(self.values))


class MetricsPlots(QWidget):
    """Two x-linked plots: the loss terms (top) and images/s (bottom), step on x."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        background = self.palette().color(QPalette.ColorRole.Base)
        foreground = self.palette().color(QPalette.ColorRole.Text)
        self.losses = pg.PlotWidget(background=background)
        self.rate = pg.PlotWidget(background=background)
        for plot, title in ((self.losses, "losses"), (self.rate, "images/s")):
            item = plot.getPlotItem()
            item.setLabel("left", title, color=foreground.name())
            item.showGrid(x=True, y=True, alpha=0.2)
            item.setClipToView(True)
            item.setDownsampling(auto=True, mode="peak")
            for axis in ("left", "bottom"):
                item.getAxis(axis).setTextPen(foreground)
        self.rate.getPlotItem().setLabel("bottom", "step", color=foreground.name())
        self.rate.setXLink(self.losses)
        self.legend = self.losses.getPlotItem().addLegend(
            offset=(-8, 8), labelTextColor=foreground, brush=pg.mkBrush(background)
        )
        self._series: dict[str, _Series] = {}
        self._rate = _Series(self.rate.plot(pen=pg.mkPen(RATE_COLOR, width=1.5)))
        self._shown: set[str] = set(SHOWN_BY_DEFAULT)

        self.terms_menu = QMenu(self)
        self.terms_button = QToolButton()
        self.terms_button.setText("Terms")
        self.terms_button.setToolTip("Choose the loss terms to plot")
        self.terms_button.setMenu(self.terms_menu)
        self.terms_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        head = QHBoxLayout()
        head.addWidget(QLabel("Loss terms and speed against step"), 1)
        head.addWidget(self.terms_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.losses, 3)
        layout.addWidget(self.rate, 1)
        self.losses.setMinimumHeight(150)
        self.rate.setMinimumHeight(110)

    def clear(self) -> None:
        """Drop every curve (a new run is viewed, or a resume rewrote the metrics)."""
        self._shown = {key for key, s in self._series.items() if s.curve.isVisible()} or set(
            SHOWN_BY_DEFAULT
        )
        for series in self._series.values():
            self.legend.removeItem(series.curve)
            self.losses.removeItem(series.curve)
        self._series.clear()
        self.terms_menu.clear()
        self._rate.steps.clear()
        self._rate.values.clear()
        self._rate.update_curve()

    def add_records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append metrics.jsonl records (each with an int `step`); null values are gaps."""
        changed: set[str] = set()
        rate_changed = False
        for record in records:
            step = float(record["step"])
            for key, value in record.items():
                if key in NOT_PLOTTED or not _is_number(value):
                    continue
                series = self._series.get(key) or self._add_series(key)
                series.steps.append(step)
                series.values.append(float(value))
                changed.add(key)
            rate = record.get(RATE_KEY)
            if _is_number(rate) and rate > 0:
                self._rate.steps.append(step)
                self._rate.values.append(float(rate))
                rate_changed = True
        for key in changed:
            self._series[key].update_curve()
        if rate_changed:
            self._rate.update_curve()

    def keys(self) -> list[str]:
        """The terms plotted, in order of first appearance."""
        return list(self._series)

    def visible_keys(self) -> list[str]:
        return [key for key, s in self._series.items() if s.curve.isVisible()]

    def set_visible(self, key: str, visible: bool) -> None:
        """Show or hide the curve of `key` (and its legend entry)."""
        series = self._series.get(key)
        if series is None or series.curve.isVisible() == visible:
            return
        series.curve.setVisible(visible)
        if visible:
            self.legend.addItem(series.curve, key)
        else:
            self.legend.removeItem(series.curve)
        for action in self.terms_menu.actions():
            if action.text() == key:
                action.setChecked(visible)

    def point_count(self, key: str | None = None) -> int:
        """Points of curve `key`, or the most points of any loss curve."""
        if key is not None:
            series = self._series.get(key)
            return len(series.steps) if series else 0
        return max((len(s.steps) for s in self._series.values()), default=0)

    def last_value(self, key: str) -> float | None:
        series = self._series.get(key)
        return series.values[-1] if series and series.values else None

    def _add_series(self, key: str) -> _Series:
        color = COLORS.get(key) or pg.intColor(len(self._series), hues=17)
        width = 2 if key in SHOWN_BY_DEFAULT else 1
        curve = self.losses.plot(pen=pg.mkPen(color, width=width))  # no name: not in legend
        series = self._series[key] = _Series(curve)
        visible = key in self._shown
        curve.setVisible(visible)
        if visible:
            self.legend.addItem(curve, key)
        action = self.terms_menu.addAction(key)
        action.setCheckable(True)
        action.setChecked(visible)
        action.toggled.connect(lambda on, key=key: self.set_visible(key, on))
        return series


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

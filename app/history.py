"""Undo/redo of edits: one QUndoCommand per edit, applied through the World's own log.

The QUndoStack and the World's edit log move together: pushing a command applies its edit
(`world.apply`), undo is `world.undo()`, redo `world.redo()`. The stack's clean state is
the project's saved state (the window's dirty flag), and a QUndoView over it is the
history panel, where clicking an entry undoes or redoes up to it.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QUndoCommand, QUndoStack

from engine.edits import Edit, RerollRegion, StyleStroke
from engine.placement import FillBetween, PhotoPlacement
from engine.world import World


def describe(edit: Edit) -> str:
    """A history-panel line for an edit."""
    if isinstance(edit, RerollRegion):
        return f"Re-roll {edit.w}×{edit.h} cells at ({edit.x}, {edit.y})"
    if isinstance(edit, StyleStroke):
        x, y = edit.points[0]
        where = f"from ({x:,.0f}, {y:,.0f}), radius {edit.radius:,.0f}"
        if edit.style is None:
            return f"Erase {where}"
        if edit.style.seed is not None:
            return f"Paint style of seed {edit.style.seed} {where}"
        return f"Paint style {where}"
    if isinstance(edit, PhotoPlacement):
        x, y, w, h = edit.rect
        return f"Place {edit.name} ({w}×{h}) at ({x:,}, {y:,})"
    if isinstance(edit, FillBetween):
        return f"Fill between photos ({edit.w}×{edit.h} cells)"
    return edit.kind.capitalize()


class EditCommand(QUndoCommand):
    """Apply `edit` to the session's current world (which a rebuild may replace)."""

    def __init__(self, world: Callable[[], World], edit: Edit, *, applied: bool = False) -> None:
        super().__init__(describe(edit))
        self.edit = edit
        self._world = world
        self._skip_first_redo = applied  # the edit is in the log already (opened project)
        self._done_once = False

    def redo(self) -> None:
        if self._skip_first_redo:
            self._skip_first_redo = False
            self._done_once = True
            return
        if self._done_once:
            self._world().redo()
        else:
            self._done_once = True
            self._world().apply(self.edit)

    def undo(self) -> None:
        self._world().undo()


class ReplaceEditCommand(QUndoCommand):
    """Swap `old` for `new` in place in the world's log (a re-rolled placement); undo swaps
    back. Redo history of the world is untouched, so the stack and the log stay in step."""

    def __init__(self, world: Callable[[], World], old: Edit, new: Edit, text: str) -> None:
        super().__init__(text)
        self.old, self.new = old, new
        self._world = world

    def redo(self) -> None:
        self._world().replace(self.old, self.new)

    def undo(self) -> None:
        self._world().replace(self.new, self.old)


def redo_edits(stack: QUndoStack) -> list[Edit]:
    """The undone edits of `stack`, the next one to redo first."""
    edits = []
    for i in range(stack.index(), stack.count()):
        command = stack.command(i)
        if isinstance(command, EditCommand):
            edits.append(command.edit)
    return edits

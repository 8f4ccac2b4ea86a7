"""Infinity Canvas engine: model, world, tiles, scheduler, cache, edits, export (no Qt)."""

from engine.checkpoint import CheckpointError, load_generator, read_checkpoint, save_checkpoint
from engine.world import World

__all__ = ["CheckpointError", "World", "load_generator", "read_checkpoint", "save_checkpoint"]

"""Infinity Canvas engine: model, world, tiles, scheduler, cache, edits, export (no Qt)."""

from engine.checkpoint import CheckpointError, load_generator, read_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "load_generator", "read_checkpoint", "save_checkpoint"]

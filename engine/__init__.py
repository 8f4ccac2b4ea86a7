"""Infinity Canvas engine: model, world, tiles, scheduler, cache, edits, export (no Qt)."""

from engine.checkpoint import CheckpointError, load_generator, read_checkpoint, save_checkpoint
from engine.inversion import InversionProgress, InversionSettings, invert_photo
from engine.photo import Photo, PhotoError, load_photo
from engine.placement import FillBetween, PhotoPlacement
from engine.world import World

__all__ = [
    "CheckpointError",
    "FillBetween",
    "InversionProgress",
    "InversionSettings",
    "Photo",
    "PhotoError",
    "PhotoPlacement",
    "World",
    "invert_photo",
    "load_generator",
    "load_photo",
    "read_checkpoint",
    "save_checkpoint",
]

"""Checkpoints round-trip exactly and fail with clear messages."""

import json
import logging
import threading

import pytest
import torch
from safetensors.torch import save_file

from engine import (
    CheckpointError,
    checkpoint,
    device,
    load_generator,
    read_checkpoint,
    save_checkpoint,
)
from engine.checkpoint import Provenance, random_generator
from engine.model import Discriminator, preset_config


def _render(generator):
    config = generator.config
    g = torch.Generator().manual_seed(0)
    m, n = config.structure_margin, 6
    z_g = torch.randn(1, config.global_dim, generator=g)
    z_l = torch.randn(1, config.local_dim, n + 2 * m, n + 2 * m, generator=g)
    coords = torch.zeros(1, 3, n + 2 * m, n + 2 * m)
    with torch.no_grad():
        return generator(z_g, z_l, coords, None)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    generator = random_generator(preset_config("tiny"), seed=4)
    path = save_checkpoint(
        tmp_path / "tiny.safetensors", generator, Provenance(preset="tiny", steps=12)
    )
    return generator, path


def test_round_trip_gives_identical_outputs(tiny_checkpoint):
    generator, path = tiny_checkpoint
    loaded = load_generator(path, device="cpu")
    assert loaded.config == generator.config
    assert torch.equal(_render(loaded), _render(generator))
    assert read_checkpoint(path).provenance["steps"] == 12


def test_discriminator_travels_when_asked(tmp_path):
    config = preset_config("tiny")
    d = Discriminator(config)
    path = save_checkpoint(
        tmp_path / "gd.safetensors", random_generator(config), Provenance("tiny"), discriminator=d
    )
    ckpt = read_checkpoint(path, with_discriminator=True)
    assert torch.equal(ckpt.discriminator.from_rgb.conv.weight, d.from_rgb.conv.weight)
    assert read_checkpoint(path).discriminator is None


def test_random_weights_are_seeded():
    a = load_generator(preset="tiny", seed=1, device="cpu")
    b = load_generator(preset="tiny", seed=1, device="cpu")
    c = load_generator(preset="tiny", seed=2, device="cpu")
    assert torch.equal(_render(a), _render(b))
    assert not torch.equal(_render(a), _render(c))


def test_truncated_file_gives_a_clear_error(tiny_checkpoint, tmp_path):
    _, path = tiny_checkpoint
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(cut)


def test_file_of_another_format_gives_a_clear_error(tmp_path):
    png = tmp_path / "picture.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="not a readable Infinity Canvas checkpoint"):
        load_generator(png)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign, metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="not an Infinity Canvas checkpoint"):
        load_generator(foreign)


def test_config_tensor_mismatch_names_the_problem(tiny_checkpoint, tmp_path):
    generator, _ = tiny_checkpoint
    tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    config = preset_config("tiny")
    wrong_config = json.loads(config.to_json())
    wrong_config["texture_channels"] = [32, 24, 16, 8]  # one stage more than the tensors
    path = tmp_path / "mismatch.safetensors"
    save_file(
        tensors, path, metadata={"format": "infinity-canvas/1", "config": json.dumps(wrong_config)}
    )
    with pytest.raises(CheckpointError, match="missing"):
        load_generator(path)
    wrong_config["texture_channels"] = [32, 24, 12]  # same stages, other width
    save_file(
        tensors, path, metadata={"format": "infinity-canvas/1", "config": json.dumps(wrong_config)}
    )
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_generator(path)


def test_missing_file_and_bad_config_are_user_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nope.safetensors")
    path = tmp_path / "badcfg.safetensors"
    save_file(
        {"x": torch.zeros(1)},
        path,
        metadata={"format": "infinity-canvas/1", "config": '{"bogus": 1}'},
    )
    with pytest.raises(CheckpointError, match="unknown fields: bogus"):
        load_generator(path)


def test_the_gpu_warm_up_ends_with_the_load_and_its_failure_only_logs(
    tiny_checkpoint, monkeypatch, caplog
):
    generator, path = tiny_checkpoint
    # The loads warm up CUDA whatever this machine has: without a GPU that fails.
    monkeypatch.setattr(checkpoint, "warming_up", lambda _: device.warming_up(torch.device("cuda")))
    with caplog.at_level(logging.WARNING, logger="engine.device"):
        loaded = read_checkpoint(path, device="cpu").generator
        drawn = random_generator(preset_config("tiny"), seed=4)
        sent = checkpoint.generator_from_bytes(checkpoint.generator_bytes(generator))
    assert not any(t.name == "gpu-warm-up" for t in threading.enumerate())
    for other in (loaded, drawn, sent):
        assert torch.equal(_render(other), _render(generator))
    if not torch.cuda.is_available():
        assert caplog.text.count("warming up cuda failed") == 3

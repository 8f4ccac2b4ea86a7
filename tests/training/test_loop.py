"""The training loop end to end on the `tiny` preset: run folder, resume, NaN guard, stop."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from PIL import Image

from engine.checkpoint import load_generator, read_checkpoint
from engine.model.geometry import texture_layer_sizes
from training.config import TrainConfig
from training.loop import load_optimizer_state, train
from training.runfiles import load_tensors, read_metrics, read_state
from training.sampling import window_side

from .conftest import tiny_config

LOSS_TERMS = (
    "d_adv", "d_coord_real", "d_coord_fake", "d_total", "r1",
    "g_adv", "g_coord", "g_diversity", "g_total", "path_length", "path_penalty", "path_mean",
)  # fmt: skip
TIMING_KEYS = ("time", "wall_time", "images_per_s")


def _losses(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _state_tensors(run_dir) -> dict[str, torch.Tensor]:
    state = read_state(run_dir)
    tensors = {f"{m}.{k}": v for m, sd in state.models.items() for k, v in sd.items()}
    for name, sd in state.optimizers.items():
        for index, slots in sd["state"].items():
            tensors |= {f"{name}.{index}.{k}": v for k, v in slots.items()}
    return tensors


def test_a_few_steps_write_every_run_artefact(landscapes, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(
        landscapes, sample_every=4, checkpoint_every=2, metric_every=4, keep_checkpoints=1
    )
    events = []
    latest = train(cfg, run, on_progress=events.append)

    assert latest == run / "checkpoints" / "latest.safetensors"
    assert TrainConfig.from_json((run / "config.json").read_text()) == cfg
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"swd_patch", "swd_1x", "swd_4x"} <= set(records[-1])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest.safetensors",
        "step_000004.safetensors",
    ]
    with Image.open(run / "samples" / "step_000004.png") as grid:
        width, height = grid.size
    full = cfg.model.full_size
    assert width >= 4 * full and height > 4 * full  # row of samples above the 4x image
    assert {"models.safetensors", "optimizers.safetensors", "rng.safetensors", "state.json"} <= {
        p.name for p in (run / "state").iterdir()
    }
    assert not list(run.rglob("*.part")) and not (run / "state.partial").exists()
    assert [e.event for e in events][:2] == ["start", "log"] and events[-1].event == "done"

    checkpoint = read_checkpoint(latest)
    assert checkpoint.provenance["steps"] == 4
    assert checkpoint.provenance["dataset"] == landscapes.name
    assert checkpoint.provenance["preset"] == "tiny"
    generator = load_generator(latest, device="cpu")
    config = generator.config
    g = torch.Generator().manual_seed(0)
    s = window_side(config, 7)
    noises = [torch.randn(1, 1, n, n, generator=g) for n in texture_layer_sizes(7, config.stages)]
    with torch.no_grad():
        rgb = generator(
            torch.randn(1, config.global_dim, generator=g),
            torch.randn(1, config.local_dim, s, s, generator=g),
            torch.rand(1, 3, s, s, generator=g) * 2 - 1,
            noises,
        )
    assert rgb.shape[:2] == (1, 3) and torch.isfinite(rgb).all()


def test_resume_is_exact(landscapes, tmp_path):
    cfg = tiny_config(landscapes, steps=4, checkpoint_every=3)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(cfg, straight)

    calls = iter(range(100))
    train(cfg, split, should_stop=lambda: next(calls) == 1)  # stops after step 2
    assert read_state(split).info["step"] == 2
    train(cfg, split, resume=True)

    assert _losses(read_metrics(split)) == _losses(read_metrics(straight))
    a, b = _state_tensors(straight), _state_tensors(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    ckpt_a = load_tensors(straight / "checkpoints" / "latest.safetensors")
    ckpt_b = load_tensors(split / "checkpoints" / "latest.safetensors")
    assert all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)


def test_restored_adam_moments_take_their_channels_last_parameters_layout():
    # CUDA's fused Adam refuses moments whose strides differ from the parameter's; saved
    # moments come back contiguous.
    weight = torch.nn.Parameter(torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last))
    bias = torch.nn.Parameter(torch.zeros(4))
    first = torch.optim.Adam([weight, bias])
    weight.grad, bias.grad = torch.randn_like(weight), torch.randn_like(bias)
    first.step()
    saved = first.state_dict()
    for slots in saved["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            slots[key] = slots[key].contiguous()

    second = torch.optim.Adam([weight, bias])
    load_optimizer_state(second, saved)
    for param in (weight, bias):
        for key in ("exp_avg", "exp_avg_sq"):
            moment = second.state[param][key]
            assert moment.stride() == param.stride()
            assert torch.equal(moment, first.state[param][key])


def test_every_loss_term_is_logged_and_finite(landscapes, tmp_path):
    train(tiny_config(landscapes, steps=2, diversity="official"), tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    seen = set().union(*records)
    assert set(LOSS_TERMS) <= seen
    for record in records:
        for key in LOSS_TERMS:
            if key in record:
                assert math.isfinite(record[key]), (key, record)
        assert record["guard_skips"] == 0 and record["rollbacks"] == 0


def test_a_nan_loss_skips_the_update_and_is_recorded(landscapes, tmp_path):
    def nan_in_d_at_step_2(step, term, loss):
        return loss * float("nan") if (step, term) == (2, "d") else loss

    events = []
    train(
        tiny_config(landscapes, steps=3),
        tmp_path / "run",
        loss_hook=nan_in_d_at_step_2,
        on_progress=events.append,
    )
    records = {r["step"]: r for r in read_metrics(tmp_path / "run")}
    assert records[2]["guard_skips"] == 1
    assert records[2]["events"] == [
        {"kind": "guard", "step": 2, "term": "d", "action": "skipped update"}
    ]
    assert "d_total" not in records[2] and math.isfinite(records[2]["g_total"])
    assert records[1]["guard_skips"] == records[3]["guard_skips"] == 0
    assert [e.event for e in events].count("guard") == 1


def test_three_bad_steps_in_a_row_roll_back_to_the_last_good_state(landscapes, tmp_path):
    cfg = tiny_config(landscapes, steps=4)

    def nan_in_d_after_step_1(step, term, loss):
        return loss * float("nan") if step >= 2 and term == "d" else loss

    train(cfg, tmp_path / "bad", loss_hook=nan_in_d_after_step_1)
    train(dataclasses.replace(cfg, steps=1), tmp_path / "one_step")

    records = {r["step"]: r for r in read_metrics(tmp_path / "bad")}
    assert records[4]["rollbacks"] == 1
    assert {"kind": "rollback", "step": 4, "to_step": 1}.items() <= records[4]["events"][-1].items()
    bad, good = read_state(tmp_path / "bad"), read_state(tmp_path / "one_step")
    for name in ("generator", "discriminator", "generator_ema"):  # G moved at steps 2-4, then back
        assert all(torch.equal(bad.models[name][k], v) for k, v in good.models[name].items())


def test_a_stop_file_stops_the_run_and_saves_its_state(landscapes, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "STOP").touch()
    train(tiny_config(landscapes, steps=4), run)
    assert read_state(run).info["step"] == 1
    assert not (run / "STOP").exists()
    assert (run / "checkpoints" / "latest.safetensors").exists()


def test_a_run_folder_is_never_overwritten_and_resume_keeps_the_config(landscapes, tmp_path):
    cfg = tiny_config(landscapes, steps=1)
    train(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, tmp_path / "run")
    with pytest.raises(ValueError, match="batch"):
        train(dataclasses.replace(cfg, batch=4, steps=2), tmp_path / "run", resume=True)
    with pytest.raises(FileNotFoundError, match="holds no training run"):
        train(cfg, tmp_path / "empty", resume=True)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["preset"] == "tiny" and config["train"]["batch"] == 2


def test_a_run_initialised_from_a_checkpoint_starts_from_its_weights(landscapes, tmp_path):
    first = tmp_path / "first"
    train(tiny_config(landscapes, steps=2, checkpoint_every=2), first)
    source = read_checkpoint(first / "checkpoints" / "latest.safetensors", with_discriminator=True)

    second = tmp_path / "second"
    cfg = tiny_config(landscapes, steps=0, checkpoint_every=1, init_from=str(source.path))
    train(cfg, second)
    state = read_state(second)
    for name in ("generator", "generator_ema"):
        weights = state.models[name]
        assert all(torch.equal(weights[k], v) for k, v in source.generator.state_dict().items())
    assert all(
        torch.equal(state.models["discriminator"][k], v)
        for k, v in source.discriminator.state_dict().items()
    )
    started = read_checkpoint(second / "checkpoints" / "latest.safetensors")
    assert "initialised from latest.safetensors" in started.provenance["notes"]


def test_initialising_from_another_architecture_is_refused(landscapes, tmp_path):
    from engine.checkpoint import Provenance, save_checkpoint

    other = save_checkpoint(
        tmp_path / "lite.safetensors", load_generator(preset="lite"), Provenance(preset="lite")
    )
    with pytest.raises(ValueError, match="architecture"):
        train(tiny_config(landscapes, steps=1, init_from=str(other)), tmp_path / "run")

"""Official InfinityGAN checkpoints convert to our model and render the same images.

How the fixture in tests/fixtures/official/ was made (once, outside CI): the official
InfinityGAN code (github hubert0527/infinityGAN, commit a9b45dd) was run on CPU with torch
2.13 (1 thread, deterministic algorithms). Its custom CUDA ops were replaced by the files' own
pure-PyTorch branches (fused_leaky_relu = leaky_relu(x + b, 0.2) * sqrt 2; upfirdn2d_native),
`.cuda()` was removed from CoordHandler (coordinates are passed explicitly), and the
lmdb/matplotlib imports were stubbed.

Config: configs/model/InfinityGAN.yaml (the 101-px model) with global_latent_dim=64,
local_latent_dim=32, the texture convs' output channels edited to [64,64,64,64,48,48,32,32],
batch_size=4 and d_extra_multiplier=0.0625 (discriminator: from-RGB 16, then 32, linear 32).

Seeds: numpy and torch 1234 while constructing, in train.py's order (G, G_ema, D;
accumulate(g_ema, g, 0)); then torch seed 5678 and every parameter of g_ema, g and d (in
that order) perturbed by 0.1 * randn, so that the zero-initialised noise strengths and biases
are exercised. Inputs from a torch.Generator with seed 4321, B = 2: z_g = randn(2, 64),
z_l = randn(2, 32, 35, 35), noises randn(2, 1, s, s) for s in 19, 17, 31, 29, 55, 53, 103, 101;
coordinates: channel 0 = tanh(0.3 * (i - 17)) for row i, channels 1/2 = cos/sin(pi * u) with
u = 2 * (j + off_b) / 139 - 1 for column j and per-sample offsets off = [7, 60].

Outputs, with g_ema.eval() under no_grad: `image` = g_ema(global_latent=stack([z_g, z_g], 1),
local_latent=z_l, override_coords=coords, noises=[...], disable_dual_latents=True)["gen"];
`structure_latent` from the same call; `w` = texture_synthesizer.get_style(z_g);
`d_patch`, `ac_coords_pred` = discriminator(image) (stddev group min(B, 4) = 2); `image_g` =
the non-EMA g on the same inputs. The checkpoint is a torch.save dict {iter: 123000,
best_fid: 42.5, g, d, g_ema, g_optim, d_optim (Adam with empty state),
mean_path_lengths: [tensor(0.375)]}.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app import cli
from engine import CheckpointError, load_generator, read_checkpoint
from engine.model import PRESETS, Discriminator, Generator
from engine.model.geometry import CellWindow, texture_layer_sizes
from engine.official import (
    SOURCE,
    convert_official,
    convert_official_file,
    infer_config,
    looks_like_official,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official"
OFFICIAL = FIXTURES / "official_small.pth.tar"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def io():
    return load_file(FIXTURES / "official_small_io.safetensors")


@pytest.fixture(scope="module")
def converted():
    return convert_official(OFFICIAL)


def _noises(io):
    return [io[f"noise_{i}"] for i in range(8)]


def _render(generator, io):
    with torch.no_grad():
        return generator(io["z_g"], io["z_l"], io["coords"], _noises(io))


def _max_diff(a, b):
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _official_dict():
    return torch.load(OFFICIAL, map_location="cpu", weights_only=True)


# Fidelity -------------------------------------------------------------------------


def test_converted_g_ema_reproduces_the_official_image(converted, io):
    assert _max_diff(_render(converted.generator, io), io["image"]) <= TOLERANCE


def test_converted_raw_generator_reproduces_the_official_g_image(io):
    generator = convert_official(OFFICIAL, which="g", with_discriminator=False).generator
    assert _max_diff(_render(generator, io), io["image_g"]) <= TOLERANCE
    assert _max_diff(_render(generator, io), io["image"]) > 1e-2  # g really differs from g_ema


def test_converted_mapping_and_structure_match_the_official_intermediates(converted, io):
    generator = converted.generator
    with torch.no_grad():
        w = generator.mapping(io["z_g"])
        z_s = generator.structure(io["z_g"], io["z_l"], io["coords"])
    assert _max_diff(w, io["w"]) <= TOLERANCE
    assert _max_diff(z_s, io["structure_latent"]) <= TOLERANCE


def test_converted_discriminator_reproduces_the_official_scores(converted, io):
    with torch.no_grad():
        logit, coords = converted.discriminator(io["image"])
    assert _max_diff(logit, io["d_patch"]) <= TOLERANCE
    assert _max_diff(coords, io["ac_coords_pred"]) <= TOLERANCE


def test_config_is_inferred_from_the_tensor_shapes(converted):
    config = converted.generator.config
    assert config.preset == "official"
    assert (config.global_dim, config.local_dim, config.mapping_layers) == (64, 32, 8)
    assert (config.structure_blocks, config.structure_kernel) == (4, 7)
    assert config.texture_channels == (64, 64, 48, 32)
    assert (config.disc_channels, config.disc_linear) == ((16, 32, 32, 32, 32, 32), 32)
    assert (config.patch_size, config.full_size, config.coord_horizontal_period) == (101, 197, 139)


def test_paper_shaped_tensors_infer_the_paper_preset():
    paper = PRESETS["paper"]
    assert infer_config(Generator(paper).state_dict(), Discriminator(paper).state_dict()) == paper
    assert infer_config(Generator(paper).state_dict()) == paper  # official D widths assumed


def test_provenance_records_the_source_iteration_and_fid(converted):
    provenance = converted.provenance
    assert provenance["source"] == SOURCE
    assert provenance["steps"] == 123000
    assert "42.5" in provenance["notes"] and "g_ema" in provenance["notes"]


def test_converted_model_renders_seamlessly_across_shifted_windows(converted):
    """A 17x17-cell window equals 11x11-cell windows shifted by 6 cells (the seam rule)."""
    generator = converted.generator
    config = generator.config
    big, sub, step, m = 17, 11, 6, config.structure_margin
    g = torch.Generator().manual_seed(11)
    z_g = torch.randn(1, config.global_dim, generator=g)
    z_l = torch.randn(1, config.local_dim, big + 2 * m, big + 2 * m, generator=g)
    coords = torch.rand(1, 3, big + 2 * m, big + 2 * m, generator=g) * 2 - 1
    sizes = texture_layer_sizes(big, config.stages)
    noises = [torch.randn(1, 1, s, s, generator=g) for s in sizes]
    with torch.no_grad():
        whole = generator(z_g, z_l, coords, noises)
        for oy in range(0, big - sub + 1, step):
            for ox in range(0, big - sub + 1, step):
                window = CellWindow(ox, oy, sub, sub)
                sub_noises = [
                    n[:, :, y : y + h, x : x + w]
                    for n, (x, y, w, h) in zip(
                        noises, window.noise_rects(config.stages), strict=True
                    )
                ]
                cells = (..., slice(oy, oy + sub + 2 * m), slice(ox, ox + sub + 2 * m))
                part = generator(z_g, z_l[cells], coords[cells], sub_noises)
                x, y, w, h = window.output_rect(config.stages, config.stages)
                assert _max_diff(part, whole[:, :, y : y + h, x : x + w]) <= TOLERANCE, (ox, oy)


def test_converted_model_renders_through_a_world_without_seams(converted):
    """Tiles rendered alone equal the same pixels of one larger World render."""
    from engine.tiles import Rect
    from engine.world import World

    world = World(converted.generator, seed=5, precision="fp32")
    big = Rect(-200, -150, 400, 300)
    whole = world.render_lod_float([big], 0)[0]
    for tile in (Rect(-200, -150, 128, 128), Rect(-72, -22, 128, 128), Rect(56, 106, 144, 44)):
        alone = world.render_lod_float([tile], 0)[0]
        crop = whole[:, tile.y - big.y : tile.bottom - big.y, tile.x - big.x : tile.right - big.x]
        assert _max_diff(alone, crop) <= TOLERANCE, tile


# Files ----------------------------------------------------------------------------


def test_converted_file_loads_through_the_normal_loader_and_renders_identically(
    converted, io, tmp_path
):
    out = convert_official_file(OFFICIAL, tmp_path / "model.safetensors")
    generator = load_generator(out, device="cpu")
    assert generator.config == converted.generator.config
    assert torch.equal(_render(generator, io), _render(converted.generator, io))
    checkpoint = read_checkpoint(out, with_discriminator=True)
    assert checkpoint.discriminator is not None
    assert checkpoint.provenance["steps"] == 123000
    assert checkpoint.provenance["source"] == SOURCE


def test_discriminator_can_be_left_out(tmp_path):
    out = convert_official_file(OFFICIAL, tmp_path / "g.safetensors", with_discriminator=False)
    assert read_checkpoint(out, with_discriminator=True).discriminator is None


def test_converting_onto_the_input_file_is_refused(tmp_path):
    copy = tmp_path / "model.pth.tar"
    copy.write_bytes(OFFICIAL.read_bytes())
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        convert_official_file(copy, copy)
    assert copy.read_bytes() == OFFICIAL.read_bytes()


def test_module_prefixes_are_stripped_and_tmp_vars_dropped(io, tmp_path):
    raw = _official_dict()
    raw["g_ema"] = {f"module.{k}": v for k, v in raw["g_ema"].items()}
    raw["g_ema"]["module.structure_synthesizer.tmp_var_0"] = torch.zeros(3)
    path = tmp_path / "data_parallel.pth.tar"
    torch.save(raw, path)
    assert _max_diff(_render(convert_official(path).generator, io), io["image"]) <= TOLERANCE


def test_legacy_torch_save_format_converts_too(io, tmp_path):
    path = tmp_path / "legacy.pth.tar"  # torch < 1.6 wrote pickles, not zip archives
    torch.save(_official_dict(), path, _use_new_zipfile_serialization=False)
    assert looks_like_official(path)
    assert _max_diff(_render(convert_official(path).generator, io), io["image"]) <= TOLERANCE


def test_official_files_are_recognised_by_their_bytes(tmp_path):
    out = convert_official_file(OFFICIAL, tmp_path / "model.safetensors")
    legacy = tmp_path / "legacy.pth"
    torch.save({"iter": 1}, legacy, _use_new_zipfile_serialization=False)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    header_of_640_bytes = tmp_path / "small.safetensors"  # its length starts like a pickle
    header_of_640_bytes.write_bytes((640).to_bytes(8, "little") + b"{" + b" " * 638 + b"}")
    assert looks_like_official(OFFICIAL)
    assert looks_like_official(legacy)
    assert not looks_like_official(out)
    assert not looks_like_official(header_of_640_bytes)
    assert not looks_like_official(text)
    assert not looks_like_official(tmp_path / "missing.pth")


# Refusals -------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.mkdir(marker): a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_a_file_carrying_code_is_refused_without_running_it(tmp_path, container):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.is_dir(), "the payload must really run when unpickled naively"

    marker = tmp_path / "pwned"
    raw = _official_dict()
    raw["g_ema"] = _Payload(marker)
    path = tmp_path / "evil.pth.tar"
    if container == "torch.save":
        torch.save(raw, path)
    else:
        path.write_bytes(pickle.dumps(raw, protocol=2))
    with pytest.raises(CheckpointError, match="refused.*Nothing in it was run"):
        convert_official(path)
    assert not marker.exists()


def test_a_truncated_file_is_reported_as_damaged(tmp_path):
    data = OFFICIAL.read_bytes()
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        convert_official(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pth.tar"
    path.write_bytes(b"\x00" + random.Random(0).randbytes(4095))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        convert_official(path)


def test_a_safetensors_file_is_named_as_such(tmp_path):
    out = convert_official_file(OFFICIAL, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="safetensors file.*needs no conversion"):
        convert_official(out)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_official(tmp_path / "missing.pth.tar")


def test_a_dict_without_g_ema_names_what_it_holds(tmp_path):
    raw = _official_dict()
    del raw["g_ema"]
    path = tmp_path / "no_ema.pth.tar"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"no 'g_ema'.*choose the generator 'g'"):
        convert_official(path)
    assert convert_official(path, which="g").generator is not None


def test_an_unknown_generator_choice_is_refused():
    with pytest.raises(CheckpointError, match="g_ema, g"):
        convert_official(OFFICIAL, which="d")


def test_an_unexpected_blur_kernel_is_refused(tmp_path):
    raw = _official_dict()
    raw["g_ema"]["texture_synthesizer.convs.0.conv.blur.kernel"] = torch.full((3, 3), 1 / 9)
    path = tmp_path / "box_blur.pth.tar"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="convs.0.conv.blur.kernel is not the blur kernel"):
        convert_official(path)


def test_unknown_and_missing_tensors_are_listed(tmp_path):
    raw = _official_dict()
    raw["g_ema"]["structure_synthesizer.ss_mapping.0.weight"] = torch.zeros(4, 4)
    del raw["g_ema"]["texture_synthesizer.convs.3.noise.weight"]
    path = tmp_path / "odd.pth.tar"
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as error:
        convert_official(path)
    message = str(error.value)
    assert "structure_synthesizer.ss_mapping.0.weight is not part of" in message
    assert "texture.convs.3.noise_strength" in message


def test_a_broken_discriminator_can_be_skipped(tmp_path):
    raw = _official_dict()
    raw["d"]["final_linear.0.weight"] = torch.zeros(32, 7)
    path = tmp_path / "bad_d.pth.tar"
    torch.save(raw, path)
    with pytest.raises(
        CheckpointError, match=r"without the discriminator.*adversarial\.0\.weight is \(32, 7\)"
    ):
        convert_official(path)
    assert convert_official(path, with_discriminator=False).discriminator is None


def test_a_given_config_that_does_not_fit_is_refused(converted):
    with pytest.raises(
        CheckpointError, match=r"given config \(preset tiny\).*structure.blocks.0.conv.weight is"
    ):
        convert_official(OFFICIAL, config=PRESETS["tiny"])


def test_diverged_weights_are_refused(tmp_path):
    raw = _official_dict()
    raw["g_ema"]["texture_synthesizer.mapping.1.bias"][0] = float("nan")
    path = tmp_path / "nan.pth.tar"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="mapping.1.bias contains NaN"):
        convert_official(path)


# Command line ---------------------------------------------------------------------


def test_cli_converts_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert cli.main(["convert-official", str(OFFICIAL), str(out)]) == 0
    assert out.is_file()
    printed = capsys.readouterr().out
    assert "preset official" in printed and "iteration 123,000" in printed


def test_cli_reports_a_bad_input_as_a_user_error(tmp_path, capsys):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"hello")
    assert cli.main(["convert-official", str(bad), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infinity-canvas: error: bad.pth.tar is not a PyTorch checkpoint")
    assert "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()

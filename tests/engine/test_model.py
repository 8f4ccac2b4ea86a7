"""The generator and discriminator: shapes, seams, parameter counts, cost."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.checkpoint import random_generator
from engine.model import Discriminator, Generator, preset_config
from engine.model.geometry import CellWindow, level_size, texture_layer_sizes


def random_inputs(config, cells_h, cells_w, batch=1, seed=0):
    """z_g, z_l, coords and noises for a window of cells_h x cells_w texture cells."""
    g = torch.Generator().manual_seed(seed)
    m = config.structure_margin
    z_g = torch.randn(batch, config.global_dim, generator=g)
    z_l = torch.randn(batch, config.local_dim, cells_h + 2 * m, cells_w + 2 * m, generator=g)
    coords = torch.rand(batch, 3, cells_h + 2 * m, cells_w + 2 * m, generator=g) * 2 - 1
    noises = [
        torch.randn(batch, 1, h, w, generator=g)
        for h, w in zip(
            texture_layer_sizes(cells_h, config.stages),
            texture_layer_sizes(cells_w, config.stages),
            strict=True,
        )
    ]
    return z_g, z_l, coords, noises


def with_trained_like_noise(generator):
    """Non-zero noise strengths and biases, so the tests exercise every parameter."""
    torch.manual_seed(1)
    for name, p in generator.named_parameters():
        if "noise_strength" in name or name.endswith("bias"):
            p.data.add_(torch.randn_like(p) * 0.1)
    return generator


@pytest.mark.parametrize("preset", ["tiny", "lite"])
@pytest.mark.parametrize("cells", [(5, 7), (11, 11), (16, 9)])
def test_output_shape_follows_the_size_law(preset, cells):
    config = preset_config(preset)
    generator = random_generator(config)
    with torch.no_grad():
        rgb = generator(*random_inputs(config, *cells, batch=2))
    assert rgb.shape == (
        2,
        3,
        level_size(cells[0], config.stages),
        level_size(cells[1], config.stages),
    )


def test_paper_output_is_101_px_for_11_cells():
    config = preset_config("paper")
    generator = random_generator(config)
    with torch.no_grad():
        rgb = generator(*random_inputs(config, 11, 11))
    assert rgb.shape == (1, 3, 101, 101)


def _stitch_check(config, big_cells, sub_cells, step):
    """A big window equals its sub-windows shifted by `step` cells (seam rule)."""
    generator = with_trained_like_noise(random_generator(config, seed=3))
    z_g, z_l, coords, noises = random_inputs(config, big_cells, big_cells, seed=5)
    m = config.structure_margin
    with torch.no_grad():
        big = generator(z_g, z_l, coords, noises)
        for oy in range(0, big_cells - sub_cells + 1, step):
            for ox in range(0, big_cells - sub_cells + 1, step):
                win = CellWindow(ox, oy, sub_cells, sub_cells)
                sub_noise = [
                    n[:, :, y : y + h, x : x + w]
                    for n, (x, y, w, h) in zip(noises, win.noise_rects(config.stages), strict=True)
                ]
                lat = (
                    slice(None),
                    slice(None),
                    slice(oy, oy + sub_cells + 2 * m),
                    slice(ox, ox + sub_cells + 2 * m),
                )
                sub = generator(z_g, z_l[lat], coords[lat], sub_noise)
                x, y, w, h = win.output_rect(config.stages, config.stages)
                diff = (sub - big[:, :, y : y + h, x : x + w]).abs().max().item()
                assert diff <= 1e-5, (ox, oy, diff)


@pytest.mark.parametrize("preset", ["tiny", "lite"])
def test_big_window_equals_stitched_windows_shifted_by_six_cells(preset):
    _stitch_check(preset_config(preset), big_cells=17, sub_cells=11, step=6)


def test_paper_big_window_equals_stitched_windows_shifted_by_96_px():
    _stitch_check(preset_config("paper"), big_cells=17, sub_cells=11, step=6)


def test_one_shared_style_equals_the_same_style_per_sample():
    config = preset_config("tiny")
    generator = with_trained_like_noise(random_generator(config))
    z_g, z_l, coords, noises = random_inputs(config, 9, 9, batch=3)
    with torch.no_grad():
        shared = generator(z_g[:1], z_l, coords, noises)
        per_sample = generator(z_g[:1].expand(3, -1), z_l, coords, noises)
    torch.testing.assert_close(shared, per_sample, rtol=1e-5, atol=1e-4)


def test_coarse_levels_return_the_skip_rgb_at_lower_resolution():
    config = preset_config("tiny")
    generator = random_generator(config)
    z_g, z_l, coords, noises = random_inputs(config, 9, 9)
    with torch.no_grad():
        w = generator.mapping(z_g)
        for level in range(1, config.stages + 1):
            rgb = generator.synthesize(z_g, w, z_l, coords, noises[: 2 * level], levels=level)
            assert rgb.shape[-1] == level_size(9, level)


def test_paper_has_the_official_parameter_counts_and_shapes():
    config = preset_config("paper")
    g, d = Generator(config), Discriminator(config)
    # The official generator also holds an unused 256x4x4 constant input (4,096 values).
    assert sum(p.numel() for p in g.parameters()) + 256 * 4 * 4 == 36_358_944
    assert sum(p.numel() for p in d.parameters()) == 28_915_460
    shapes = {n: tuple(p.shape) for n, p in g.named_parameters()}
    assert shapes["structure.blocks.0.conv.weight"] == (256, 259, 7, 7)
    assert shapes["structure.blocks.3.conv.modulation.weight"] == (259, 512)
    assert shapes["texture.convs.0.conv.weight"] == (512, 256, 3, 3)
    assert shapes["texture.convs.7.conv.weight"] == (512, 512, 3, 3)
    assert shapes["texture.to_rgbs.3.conv.weight"] == (3, 512, 1, 1)
    assert shapes["mapping.layers.7.weight"] == (512, 512)
    assert (
        len([n for n in shapes if n.startswith("texture.convs.") and n.endswith("noise_strength")])
        == 8
    )
    d_shapes = {n: tuple(p.shape) for n, p in d.named_parameters()}
    assert d_shapes["final_conv.conv.weight"] == (512, 513, 3, 3)
    assert d_shapes["adversarial.0.weight"] == (512, 4608)
    assert d_shapes["coordinates.1.weight"] == (3, 512)


def test_discriminator_scores_a_batch_of_patches():
    config = preset_config("tiny")
    d = Discriminator(config)
    logit, coords = d(torch.randn(4, 3, config.patch_size, config.patch_size))
    assert logit.shape == (4, 1) and coords.shape == (4, 3)


def test_discriminator_judges_stacked_batches_as_if_alone():
    config = preset_config("tiny")
    torch.manual_seed(0)
    d = Discriminator(config)
    real, fake = torch.randn(2, 8, 3, config.patch_size, config.patch_size)
    logits, coords = d(torch.cat([real, fake]), batches=2)
    alone = [d(real), d(fake)]
    torch.testing.assert_close(logits, torch.cat([alone[0][0], alone[1][0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(coords, torch.cat([alone[0][1], alone[1][1]]), atol=1e-5, rtol=0)
    mixed, _ = d(torch.cat([real, fake]))  # one batch: the stddev groups mix real and fake
    assert (mixed - logits).abs().max() > 1e-4


def test_lite_costs_at_most_150_kflop_per_pixel():
    config = preset_config("lite")
    generator = random_generator(config)
    cells = 24  # the engine's full-resolution tile
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        rgb = generator(*random_inputs(config, cells, cells))
    per_pixel = counter.get_total_flops() / (rgb.shape[-1] * rgb.shape[-2])
    print(f"lite: {per_pixel / 1e3:.1f} kFLOP per output pixel at {cells}-cell tiles")
    assert per_pixel <= 150e3


def test_both_blur_implementations_give_the_same_numbers():
    from engine.model.layers import Blur, _shifted_sum, depthwise

    x = torch.randn(2, 5, 17, 13)
    for blur in (Blur([1, 3, 3, 1], padding=2), Blur([1, 2, 1], gain=4.0)):
        p = blur.padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        shifted = _shifted_sum(_shifted_sum(padded, blur.taps, 2), blur.taps, 3)
        torch.testing.assert_close(shifted, depthwise(x, blur.kernel, padding=p))


def test_the_blur_folded_into_the_upsampling_weights_gives_the_same_numbers():
    from engine.model.layers import ModulatedConv2d, blurred_upsampling_weight

    conv = ModulatedConv2d(6, 4, 3, 8, upsample=True)
    weight = torch.randn(4, 6, 3, 3).transpose(0, 1)  # [Cin, Cout, 3, 3], as _conv passes it
    bias = torch.randn(4)
    for h, w in ((5, 5), (9, 14)):
        x = torch.randn(2, 6, h, w)
        up = torch.nn.functional.conv_transpose2d(x, weight, stride=2, padding=1)
        expected = conv.blur(up, bias)  # [2, 4, 2h - 3, 2w - 3]
        blurred = blurred_upsampling_weight(weight, conv.blur_spread)
        folded = torch.nn.functional.conv_transpose2d(x, blurred, bias, stride=2, padding=3)
        torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_skip_upsampling_by_interpolation_equals_the_transposed_conv():
    from engine.model.layers import ToRGB, upsample_skip

    kernel = ToRGB(8, 4).upsample_kernel[None, None].expand(3, 1, 3, 3)
    for h, w in ((7, 7), (20, 33)):
        skip = torch.randn(2, 3, h, w).contiguous(memory_format=torch.channels_last)
        expected = torch.nn.functional.conv_transpose2d(skip, kernel, stride=2, padding=3, groups=3)
        torch.testing.assert_close(upsample_skip(skip), expected)


def test_zero_channels_padded_to_a_multiple_of_8_leave_a_conv_unchanged():
    from engine.model.layers import _pad_channels

    x, weight = torch.randn(2, 259, 9, 9), torch.randn(16, 259, 3, 3)
    padded_x, padded_weight = _pad_channels(x, weight)
    assert padded_x.shape[1] == padded_weight.shape[1] == 264
    assert padded_x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(padded_x, padded_weight),
        torch.nn.functional.conv2d(x, weight),
        rtol=1e-4,
        atol=1e-4,
    )


def test_conv_as_gemm_is_the_valid_convolution_in_channels_last():
    from engine.model.layers import conv_as_gemm

    x = torch.randn(2, 16, 13, 19, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 16, 7, 5, dtype=torch.float64)
    bias = torch.randn(8, dtype=torch.float64)
    out = conv_as_gemm(x, weight, bias)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, bias))
    torch.testing.assert_close(
        conv_as_gemm(x.contiguous(), weight, None), torch.nn.functional.conv2d(x, weight)
    )


def test_bias_and_noise_added_in_one_pass_equal_the_broadcast_adds():
    from engine.model.layers import add_bias_and_noise

    out = torch.randn(2, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    bias, noise = torch.randn(6, dtype=torch.float64), torch.randn(2, 1, 5, 7, dtype=torch.float64)
    strength = torch.tensor([0.3], dtype=torch.float64)
    expected = out + bias.view(1, -1, 1, 1) + strength * noise
    result = add_bias_and_noise(out.clone(), bias, noise, strength)
    assert result.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(result, expected)
    no_noise = add_bias_and_noise(out.contiguous(), bias, None, None)  # NCHW input: a copy
    torch.testing.assert_close(no_noise, out + bias.view(1, -1, 1, 1))


@pytest.mark.parametrize("flag", ["steady", "compiled"])
def test_kernel_choice_flags_are_per_thread_and_restore_the_outer_setting(flag):
    import threading

    from engine.model import kernel_choice

    enter, read = {
        "steady": (kernel_choice.steady_shapes, kernel_choice.shapes_are_steady),
        "compiled": (kernel_choice.compiled_kernels, kernel_choice.compiling),
    }[flag]
    assert not kernel_choice.folds_blur(torch.zeros(1))  # the CPU has its depthwise blur
    seen = [read()]
    with enter():
        with enter():
            pass
        seen.append(read())
        other = threading.Thread(target=lambda: seen.append(read()))
        other.start()
        other.join()
    seen.append(read())
    assert seen == [False, True, False, False]

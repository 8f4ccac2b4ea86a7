"""`infinity-canvas bench` on the CPU: every figure is measured, and the JSON line has them."""

import json

from app import cli
from engine import World, load_generator
from engine.bench import format_result, result_json, run_bench
from engine.export import ExportJob, export_window, plan_export
from engine.tiles import Rect


def test_the_throughput_renders_a_gigapixel_exports_windows():
    world = World(load_generator(preset="tiny", seed=0, device="cpu"), 0)
    plan = plan_export(world, ExportJob(Rect(-5, 3, 32_768, 32_768), "x.tif"))
    assert export_window(world) == (plan.tile_w, plan.tile_h)


def test_bench_measures_every_figure():
    generator = load_generator(preset="tiny", seed=0, device="cpu")
    result = run_bench(generator, window=(256, 128), throughput_seconds=0.3, overview=(2048, 1024))
    assert result.window == (256, 128) and result.device == "cpu"
    assert result.mp_per_s > 0 and result.flops_per_pixel > 0 and result.conv_peak_gflops > 0
    assert 0 < result.efficiency < 1
    assert result.first_viewport_s > 0 and result.first_viewport_warm_s > 0
    assert result.overview_s > 0 and "for 2,048 x 1,024 px" in format_result(result)
    figures = json.loads(result_json(result))
    expected = {"flops_per_pixel", "mp_per_s", "first_viewport_s", "first_viewport_warm_s"}
    expected |= {"overview_s", "peak_mem_mb", "device", "conv_peak_gflops"}
    assert expected <= figures.keys() and figures["window"] == [256, 128]


def test_bench_refuses_a_malformed_window(capsys):
    assert cli.main(["bench", "--preset", "tiny", "--window", "big"]) == 2
    assert "expected WxH" in capsys.readouterr().err

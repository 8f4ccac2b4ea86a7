"""The export benchmark on the CPU: every figure is measured and consistent."""

import math

from engine.checkpoint import load_generator
from engine.export_bench import run_export_bench
from engine.world import World


def test_the_export_bench_times_export_generation_and_writer(tmp_path):
    world = World(load_generator(preset="tiny", seed=0), seed=1)
    result = run_export_bench(world, tmp_path, size=256, repeat=1)
    assert result.width == result.height == 256
    assert result.generation_s > 0 and result.writer_s > 0 and result.export_s > 0
    assert math.isclose(
        result.overhead, (result.export_s - result.generation_s) / result.generation_s
    )
    assert result.output_mb > 0

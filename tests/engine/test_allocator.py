"""engine.allocator: on Linux with glibc, a CPU render reuses the pages the last one freed."""

import resource
import sys

import pytest

from engine import World, load_generator
from engine.allocator import reuse_freed_memory
from engine.tiles import Rect


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_steady_cpu_renders_do_not_page_fault():
    if not reuse_freed_memory():
        pytest.skip("not glibc")
    world = World(load_generator(preset="lite", seed=0, device="cpu"), 1)
    faults = []
    for i in range(8):  # 512-px blocks: activations of 30-40 MB, above glibc's mmap default
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        world.render_lod_float([Rect(512 * i, 0, 512, 512)], 0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # the heap grows over the first blocks; with glibc's defaults every block faults
    # 37,000-50,000 times
    steady = sorted(faults[2:])
    assert steady[len(steady) // 2] < 2000, faults

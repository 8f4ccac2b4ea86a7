"""CUDA graphs of steady renders (engine.model.graphs): the eager numbers, bit for bit.
Needs a GPU: skipped on the CPU, where a World renders eagerly (it has no graphs)."""

import threading

import pytest
import torch

from engine import World, load_generator
from engine.model.graphs import _Graph
from engine.model.kernel_choice import steady_shapes
from engine.tiles import Rect


def test_a_cpu_world_has_no_graphs():
    assert World(load_generator(preset="tiny", seed=0, device="cpu"), 1)._graphs is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_steady_renders_replay_from_one_graph_with_the_eager_numbers():
    generator = load_generator(preset="lite", seed=0, device="cuda")
    graphed, eager = World(generator, 3), World(generator, 3)
    eager._graphs = None
    rects = [Rect(-700 + 512 * i, 300, 512, 256) for i in range(4)]
    results = {}

    def render(name: str, world: World) -> None:  # a thread of its own, as an export's
        with steady_shapes():
            results[name] = [world.render_lod_float([r], 0) for r in rects]

    for name, world in (("eager", eager), ("graphed", graphed)):
        thread = threading.Thread(target=render, args=(name, world))
        thread.start()
        thread.join()
    assert [type(g) for g in graphed._graphs._graphs.values()] == [_Graph]
    for a, b in zip(results["eager"], results["graphed"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inputs_reach_the_gpu_without_waiting_for_it():
    from engine.device import to_device

    values = torch.arange(1000)
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        copied = to_device(values, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(copied.cpu(), values)

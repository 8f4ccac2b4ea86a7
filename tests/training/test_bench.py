"""training.bench on the CPU: the real iteration, timed per phase, with its operation count."""

from training.bench import main, run_bench


def test_the_bench_times_every_phase_and_counts_operations():
    result = run_bench(
        "tiny", batch=4, iterations=2, warmup=0, device="cpu", phases=True, count_ops=True
    )
    assert result["images_per_s"] > 0 and result["ms_per_iteration"] > 0
    phases = result["phase_ms_per_iteration"]
    assert {"real_batch", "d", "r1", "g", "path", "ema_update"} <= set(phases)
    assert all(ms >= 0 for ms in phases.values())
    assert result["ops_per_iteration"] > 100  # forward, backward and optimiser operations


def test_the_bench_command_ends_with_one_json_line(capsys):
    assert (
        main(
            [
                "--preset",
                "tiny",
                "--batch",
                "2",
                "--iterations",
                "1",
                "--warmup",
                "0",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("{") and '"images_per_s"' in last


def test_compile_wraps_the_plain_steps_and_leaves_the_regularisers_eager(monkeypatch):
    """With TrainConfig.compile the D and G steps call what torch.compile returned; R1 and
    path length (double backward) call the eager modules."""
    import torch

    calls: list[str] = []

    def fake_compile(fn):
        name = getattr(fn, "__name__", type(fn).__name__)

        def compiled(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = run_bench("tiny", batch=2, iterations=1, warmup=0, device="cpu", compile=True)
    assert result["compiled"] is True
    # one iteration from step 0 runs D, R1, G and path length; only D and G go compiled
    assert sorted(calls) == ["Discriminator", "Discriminator", "render_fakes", "render_fakes"]
    assert run_bench("tiny", batch=2, iterations=1, warmup=0, device="cpu")["compiled"] is False

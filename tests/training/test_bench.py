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

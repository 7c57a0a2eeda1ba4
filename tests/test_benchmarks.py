"""The benchmark scripts run end to end and report ratios to their baseline (no timing is asserted)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latency_benchmark_reports_ratios(capsys):
    rows = _load("latency").main(
        ["--models", "fat_b0", "edgenext_x_small", "--rounds", "1", "--warmup", "0", "--batch-sizes", "1"]
    )
    assert [r["model"] for r in rows] == ["fat_b0", "edgenext_x_small"]
    assert rows[0]["input"] == 224 and rows[1]["input"] == 256  # peers run at their own resolution
    # the peer's ratio is its time over the baseline's, as printed
    assert rows[1]["ratio_to_baseline"] == pytest.approx(rows[1]["median_ms"] / rows[0]["median_ms"], rel=0.02)
    out = capsys.readouterr().out
    assert "x fat_b0" in out and f"{rows[1]['ratio_to_baseline']:.2f}" in out


def test_train_throughput_benchmark_reports_ratios(capsys):
    rows = _load("train_throughput").main(
        [
            "--models",
            "fat_b0",
            "efficientnet_b1",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--img-size",
            "64",
        ]  # fmt: skip
    )
    assert [r["model"] for r in rows] == ["fat_b0", "efficientnet_b1"]
    ratio = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    assert rows[1]["throughput_ratio"] == pytest.approx(ratio, rel=0.05)
    out = capsys.readouterr().out
    assert "throughput x fat_b0" in out and f"{rows[1]['throughput_ratio']:.2f}" in out

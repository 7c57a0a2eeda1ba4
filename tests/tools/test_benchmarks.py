"""fatvit benchmark and the training benchmark run end to end and report ratios measured side by side.

No timing is asserted: only that the records are complete and consistent.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from PIL import Image

from conftest import REPO, cli_error
from fatvit.benchmark import PEER_TOP1, run_benchmark, time_interleaved
from fatvit.cli import main
from fatvit.errors import FatvitError


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records():
    models = ["fat_b0", "authors:fat_b0", "edgenext_x_small"]
    return run_benchmark(models, modes=["eager", "deployed", "onnxruntime"], batch_sizes=[1, 2], rounds=2,
                         warmup=0, img_size=64)  # fmt: skip


def test_every_model_mode_and_batch_has_a_record(records):
    keys = {(r["model"], r["mode"], r["batch"]) for r in records}
    for mode in ["eager", "deployed", "onnxruntime"]:
        for batch in [1, 2]:
            assert {("fat_b0", mode, batch), ("authors:fat_b0", mode, batch), ("edgenext_x_small", mode, batch)} <= keys
    assert len(records) == len(keys) == 3 * 3 * 2


def test_ratios_are_to_the_baseline_in_the_same_mode_and_batch(records):
    for r in records:
        base = next(
            b for b in records if b["model"] == "fat_b0" and b["mode"] == r["mode"] and b["batch"] == r["batch"]
        )
        assert r["ratio"] == pytest.approx(r["median_ms"] / base["median_ms"], rel=1e-2, abs=2e-3)
        assert r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
        assert r["images_per_s"] == pytest.approx(1000 * r["batch"] / r["median_ms"], rel=1e-2, abs=0.051)  # 1 decimal
        assert r["input"] == "64x64"
    fat = next(r for r in records if r["model"] == "fat_b0")
    peer = next(r for r in records if r["model"] == "edgenext_x_small")
    assert fat["top1"] == 77.6 and peer["top1"] == PEER_TOP1["edgenext_x_small"]
    assert fat["params_m"] == pytest.approx(4.49, abs=0.01)


def test_interleaving_runs_every_model_once_per_round():
    calls = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert [len(v) for v in times.values()] == [3, 3]
    assert all(sorted(calls[i : i + 2]) == ["a", "b"] for i in range(0, 8, 2))


def test_cli_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "latency.png"
    argv = ["benchmark", "--models", "fat_b0", "mobilevit_xs", "--modes", "eager", "deployed", "--batch-sizes", "1",
            "--rounds", "2", "--warmup", "0", "--img-size", "64", "--baseline", "mobilevit_xs", "--json",
            "--plot", str(plot)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"model", "mode", "batch", "median_ms"} <= set(rows[0])
    assert [r["ratio"] for r in rows if r["model"] == "mobilevit_xs"] == [1.0, 1.0]
    with Image.open(plot) as img:
        img.verify()
    line = cli_error(capsys, argv)
    assert "exists" in line and "--overwrite" in line


def test_cli_table(capsys):
    argv = ["benchmark", "--models", "fat_b0", "efficientnet_b1", "--modes", "eager", "--batch-sizes", "1",
            "--rounds", "1", "--warmup", "0", "--img-size", "64", "--native-size"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "eager, batch 1" in out and "x fat_b0" in out
    assert "240x240" in out  # --native-size: the peer at its pretrained resolution, FAT at --img-size
    assert "64x64" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "no_such_model"], "unknown model"),
        (["--models", "authors:resnet18"], "FAT size"),
        (["--models", "fat_b0", "--baseline", "fat_b1"], "baseline"),
        (["--modes", "turbo"], "invalid choice"),
        (["--plot", "{tmp}"], "is a folder"),
        (["--warmup", "-1"], "--warmup"),
        (
            ["--models", "fat_b0", "edgenext_x_small", "--modes", "eager", "--batch-sizes", "1", "--img-size", "3"],
            "edgenext_x_small fails in eager mode at batch 1, 3x3",
        ),
    ],
)
def test_cli_errors(tmp_path, capsys, argv, message):
    line = cli_error(capsys, ["benchmark", "--rounds", "1", *(a.format(tmp=tmp_path) for a in argv)])
    assert message in line


def test_train_throughput_benchmark_reports_ratios(capsys):
    rows = _load("train_throughput").main(
        [
            "--models",
            "authors:fat_b0",
            "fat_b0",
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
    assert [r["model"] for r in rows] == ["authors:fat_b0", "fat_b0"]
    assert rows[1]["step_ratio"] == pytest.approx(rows[1]["step_s"] / rows[0]["step_s"], rel=0.05)
    out = capsys.readouterr().out
    assert "step x authors:fat_b0" in out and f"{rows[1]['step_ratio']:.2f}" in out


def test_inference_profile_reports_both_forms(capsys):
    report = _load("profile_inference").main(["--img-size", "64", "--iters", "1", "--top", "1000", "--json"])
    assert set(report["forms"]) == {"released", "deployed"}
    for form in report["forms"].values():
        assert form["ops_ms"] and form["median_ms"] > 0
        # the report's own figures, unrounded: the same under any load (a rounded copy was load-sensitive)
        assert form["gmacs_per_s"] == pytest.approx(report["gmacs"] / (form["median_ms"] / 1000), rel=1e-12)
        assert 0 < form["fraction_of_peak"] == pytest.approx(form["gmacs_per_s"] / report["matmul_peak_gmacs_per_s"],
                                                             rel=1e-12)  # fmt: skip
    # the released order runs batch norms and explicit softmax attention; the deployed form neither
    released, deployed = report["forms"]["released"]["ops_ms"], report["forms"]["deployed"]["ops_ms"]
    assert "aten::batch_norm" in released and "aten::softmax" in released
    assert not any("batch_norm" in op or op == "aten::softmax" for op in deployed)
    assert json.loads(capsys.readouterr().out) == report


def test_training_profile_sorts_the_work_of_both_forms(capsys):
    report = _load("profile_training").main(["--batch-size", "2", "--img-size", "64", "--steps", "1", "--json"])
    released, ours = (report["forms"][form]["kinds_ms"] for form in ("released", "fatvit"))
    for form in report["forms"].values():
        assert form["total_ms"] == pytest.approx(sum(form["kinds_ms"].values()), abs=0.1 * len(form["kinds_ms"]))
        assert form["kinds_ms"]["1x1 convolution forward"] > 0 and form["kinds_ms"]["1x1 convolution backward"] > 0
    # fatvit computes depthwise weight gradients with forward convolutions; the released code has none
    assert ours["depthwise weight gradient (forward convolutions)"] > 0
    assert "depthwise weight gradient (forward convolutions)" not in released
    assert json.loads(capsys.readouterr().out) == report


def test_gpu_check_runs_its_code_path_on_the_cpu(capsys):
    """The prepared GPU check: throughput records, a training run whose loss falls, and the dense steps (here on
    the CPU, under bf16 autocast). The dense side is 96: at 64, RetinaNet's P7 runs on a 1x1 map and, on this
    machine's AMX CPU (not on every machine), its bf16 weight gradient comes out NaN in oneDNN."""
    argv = ["--device", "cpu", "--models", "fat_b0", "edgenext_x_small", "--batch-size", "2", "--img-size", "64",
            "--rounds", "1", "--train-steps", "6", "--no-compile", "--amp", "bf16", "--dense-size", "96",
            "--dense-steps", "5", "--json"]  # fmt: skip
    report = _load("gpu_check").main(argv)
    assert [r["model"] for r in report["throughput"]] == ["fat_b0", "edgenext_x_small"]
    assert all(r["images_per_s"] > 0 and r["batch"] == 2 for r in report["throughput"])
    assert report["throughput"][0]["paper_images_per_s"] == 1932
    training = report["training"]
    assert training["amp"] == "bfloat16" and not training["compiled"] and len(training["losses"]) == 6
    assert training["ok"], training["losses"]
    dense = report["dense"]
    assert dense["amp"] == "bfloat16" and dense["retinanet"]["eval_boxes_dtype"] == "float32"
    for name in ("retinanet", "semantic_fpn"):
        assert len(dense[name]["losses"]) == 5 and dense[name]["ok"], dense[name]
    assert json.loads(capsys.readouterr().out) == report


def test_dense_latency_benchmark_reports_ratios_to_resnet18_and_to_eager(capsys):
    bench = _load("dense_latency")
    rows = bench.main(["--sizes", "64x96", "--rounds", "1", "--warmup", "0", "--modes", "eager", "deployed"])
    assert [(r["model"], r["mode"]) for r in rows] == [
        (f"{h}_{b}", m) for h in ("retinanet", "mask_rcnn", "semantic_fpn") for m in ("eager", "deployed")
        for b in ("fat_b0", "resnet18")
    ]  # fmt: skip
    for fat, twin in zip(rows[::2], rows[1::2]):
        assert twin["ratio_to_resnet18"] == 1.0 and fat["input"] == "64x96" and fat["mode"] == twin["mode"]
        assert fat["ratio_to_resnet18"] == pytest.approx(fat["median_ms"] / twin["median_ms"], rel=0.02)
    assert all(r["ratio_to_eager"] == 1.0 for r in rows if r["mode"] == "eager")
    assert "x resnet18 twin" in capsys.readouterr().out
    # ONNX Runtime and OpenVINO: the exported RetinaNets (Mask R-CNN is not exported: no row)
    rows = bench.main(["--sizes", "64x96", "--rounds", "1", "--warmup", "0", "--heads", "retinanet", "mask_rcnn",
                       "--modes", "eager", "onnxruntime", "openvino", "--json"])  # fmt: skip
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("retinanet_fat_b0", "eager"), ("retinanet_resnet18", "eager"), ("retinanet_fat_b0", "onnxruntime"),
        ("retinanet_resnet18", "onnxruntime"), ("retinanet_fat_b0", "openvino"), ("retinanet_resnet18", "openvino"),
        ("mask_rcnn_fat_b0", "eager"), ("mask_rcnn_resnet18", "eager"),
    ]  # fmt: skip
    for runtime in rows[2], rows[4]:
        assert runtime["ratio_to_eager"] == pytest.approx(runtime["median_ms"] / rows[0]["median_ms"], rel=0.02)
    assert json.loads(capsys.readouterr().out) == rows


def test_openvino_mode_times_the_onnx_file_checked_against_pytorch(monkeypatch, capsys):
    pytest.importorskip("openvino", reason="the openvino extra (in dev)")
    import fatvit.benchmark as bench

    records = run_benchmark(["fat_b0", "edgenext_x_small"], modes=["openvino"], batch_sizes=[1], rounds=2, warmup=0,
                            img_size=64)  # fmt: skip
    assert [(r["model"], r["mode"]) for r in records] == [("fat_b0", "openvino"), ("edgenext_x_small", "openvino")]
    assert records[0]["ratio"] == 1.0 and records[1]["median_ms"] > 0
    monkeypatch.setattr(bench, "OPENVINO_TOLERANCE", -1.0)  # any difference, even none, is now too large
    with pytest.raises(FatvitError, match="fat_b0: OpenVINO's outputs differ from PyTorch's"):
        run_benchmark(["fat_b0"], modes=["openvino"], batch_sizes=[1], rounds=1, warmup=0, img_size=64)
    monkeypatch.setitem(sys.modules, "openvino", None)
    for mode in ("openvino", "openvino-int8"):
        line = cli_error(capsys, ["benchmark", "--models", "fat_b0", "--modes", mode, "--img-size", "64"])
        assert line == "fatvit: error: openvino is not installed: pip install 'fatvit[openvino]'"


def test_openvino_int8_mode_runs_the_int8_file_with_openvinos_int8_kernels(monkeypatch):
    """The int8 file (QDQ) compiled by OpenVINO runs its convolutions in 8 bits, unchecked against PyTorch."""
    pytest.importorskip("openvino", reason="the openvino extra (in dev)")
    import fatvit.benchmark as bench
    import fatvit.runtime

    compiled = []

    def keep(path, *args, **kwargs):
        compiled.append(openvino_model(path, *args, **kwargs))
        return compiled[-1]

    openvino_model = fatvit.runtime.openvino_model
    monkeypatch.setattr(fatvit.runtime, "openvino_model", keep)
    monkeypatch.setattr(bench, "OPENVINO_TOLERANCE", -1.0)  # the int8 mode does not compare with PyTorch
    records = run_benchmark(["fat_b0"], modes=["openvino-int8"], batch_sizes=[1], rounds=1, warmup=0, img_size=64)
    assert [(r["model"], r["mode"], r["batch"]) for r in records] == [("fat_b0", "openvino-int8", 1)]
    assert records[0]["median_ms"] > 0
    ops = compiled[0].get_runtime_model().get_ordered_ops()
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in ops
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}  # fmt: skip
    assert precisions == {"u8"}

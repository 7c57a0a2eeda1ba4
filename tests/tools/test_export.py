"""ONNX export: the file passes onnx.checker and ONNX Runtime reproduces PyTorch on several input shapes."""

from __future__ import annotations

import json
import logging
import re

import onnx
import pytest
import torch

from conftest import TINY_ARGS, cli_error, randomize_batchnorm, set_args
from fatvit import FAT
from fatvit.cli import main
from fatvit.errors import FatvitError
from fatvit.export import check_onnx, export_onnx, onnx_session, read_onnx_metadata

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = randomize_batchnorm(FAT(**TINY_ARGS, interaction="reference")).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, path, img_size=64, metadata={"classes": ["a", "b"], "mean": [0.5, 0.5, 0.5]})
    return model, path


def test_dynamic_batch_and_size_match_pytorch(exported):
    model, path = exported
    onnx.checker.check_model(str(path), full_check=True)
    shapes = [(1, 64, 64), (2, 97, 131), (3, 33, 32), (1, 224, 224)]
    records = check_onnx(path, model, shapes)
    assert [r["shape"] for r in records] == [[b, 3, h, w] for b, h, w in shapes]
    assert all(r["max_abs_diff"] <= TOL for r in records), records
    # and the check itself can fail: a model with other weights is far off
    other = FAT(**TINY_ARGS, interaction="reference").eval()
    assert max(r["max_abs_diff"] for r in check_onnx(path, other, shapes[:1])) > 1e-2


def test_metadata_round_trip(exported):
    _, path = exported
    assert read_onnx_metadata(path) == {"classes": ["a", "b"], "mean": [0.5, 0.5, 0.5]}


def test_dynamic_dimensions_are_named(exported):
    _, path = exported
    session = onnx_session(path)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert session.get_outputs()[0].shape == ["batch", 10]
    graph = onnx.load(str(path)).graph
    inferred = {d.dim_param for v in graph.value_info for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert any("height" in p for p in inferred) and any("width" in p for p in inferred)  # the stage maps' sizes
    assert not any(re.search(r"\bs\d+\b", p) for p in inferred), inferred  # no exporter symbol (s77) left


@pytest.mark.parametrize("verb", ["eval", "predict"])
def test_an_onnx_file_without_fatvits_metadata_is_named_as_such(exported, capsys, verb, tmp_path):
    _, path = exported
    argv = [verb, "--checkpoint", str(path)] + ([str(tmp_path)] if verb == "predict" else [])
    line = cli_error(capsys, argv)
    assert f"{path} is not a fatvit export: its metadata has no model, num_classes, input_size" in line
    assert "(write it with fatvit export)" in line


def test_static_export_fixes_the_shape(tmp_path):
    model = FAT(**TINY_ARGS).eval()
    path = export_onnx(model, tmp_path / "static.onnx", img_size=48, dynamic=False, batch=2)
    session = onnx_session(path)
    assert session.get_inputs()[0].shape == [2, 3, 48, 48]
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert abs(session.run(None, {"image": x.numpy()})[0] - model(x).numpy()).max() <= TOL


def test_cli_exports_a_trained_checkpoint_with_its_record(digits_run, tmp_path, capsys):
    run_dir, summary = digits_run
    out = tmp_path / "digits.onnx"
    assert main(["export", "--checkpoint", str(run_dir / "best.pth"), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dynamic"] and len(report["checks"]) >= 3
    assert all(c["max_abs_diff"] <= TOL for c in report["checks"])
    meta = read_onnx_metadata(out)
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["input_size"] == [3, 32, 32] and meta["num_classes"] == 10
    assert len(meta["mean"]) == 3 and meta["model"] == "fat_b0"
    # an existing file is kept unless --overwrite
    line = cli_error(capsys, ["export", "--checkpoint", str(run_dir / "best.pth"), "--output", str(out)])
    assert "exists" in line and "--overwrite" in line


def test_cli_without_checkpoint_says_the_weights_are_random(tmp_path, capsys):
    out = tmp_path / "b0.onnx"
    args = [
        "export",
        "--output",
        str(out),
        "--static",
        "--img-size",
        "64",
        *set_args(["model_kwargs.depths=[1, 1, 1, 1]"]),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "random" in captured.err and "static" in captured.out
    assert onnx_session(out).get_inputs()[0].shape == [1, 3, 64, 64]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "{tmp}/x.onnx", "--set", "batch_size=3"], "does not apply to export"),
        (["--output", "{tmp}/x.onnx", "--model", "resnet18"], "not a FAT model"),
        (["--output", "{tmp}"], "is a folder"),
        (["--output", "{tmp}/x.onnx", "--checkpoint", "{tmp}/nope.pth"], "nope.pth"),
        (["--output", "{tmp}/x.onnx", "--ema"], "--ema needs --checkpoint"),
    ],
)
def test_cli_errors(tmp_path, capsys, argv, message):
    line = cli_error(capsys, ["export", *(a.format(tmp=tmp_path) for a in argv)])
    assert message in line
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("opset", [3, 7, 17, 99])
def test_an_opset_out_of_range_is_refused_before_exporting(tmp_path, capsys, monkeypatch, opset):
    from fatvit.cli import main
    from fatvit.export import opset_range

    def no_export(*args, **kwargs):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    low, high = opset_range()
    assert low == 18 and high >= 21
    assert main(["export", "--output", str(tmp_path / "x.onnx"), "--opset", str(opset)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"fatvit: error: --opset {opset} cannot be written: the ONNX exporter writes "
                                f"opsets {low} to {high}"]  # fmt: skip
    assert not (tmp_path / "x.onnx").exists()


def test_an_opset_the_model_cannot_be_converted_to_is_one_line(tmp_path, capsys, caplog):
    """In range, but the exporter's conversion from its own opset fails for this model (it would write 18):
    one line, none of the converter's logged tracebacks."""
    from fatvit.export import opset_range

    opset = opset_range()[1]  # no converter adapter reaches the newest opset for every op of FAT
    with pytest.raises(FatvitError, match=f"cannot write opset {opset} \\(it would write 18\\)"):
        export_onnx(FAT(**TINY_ARGS), tmp_path / "x.onnx", opset=opset, img_size=64)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not (tmp_path / "x.onnx").exists()

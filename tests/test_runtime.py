"""Exported models evaluated on data: an .onnx file run by ONNX Runtime or OpenVINO gives the checkpoint's
predictions, with the preprocessing and classes of its metadata."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import cli_error, write_held_out_digits
from fatvit.cli import main
from fatvit.data import digits_splits
from fatvit.inference import load_classifier
from fatvit.runtime import RuntimeModel

openvino = pytest.importorskip("openvino", reason="the openvino extra (in dev)")


@pytest.fixture(scope="module")
def exported_digits(digits_run, tmp_path_factory):
    """The digits run's best checkpoint and its dynamic ONNX export."""
    out, summary = digits_run
    path = tmp_path_factory.mktemp("exported") / "digits.onnx"
    assert main(["export", "--checkpoint", str(out / "best.pth"), "--output", str(path)]) == 0
    return out / "best.pth", path, summary


def _predictions(classifier, images):
    """Top-1 index and logits of every image, one batch of 120 at a time."""
    batches = [
        torch.stack([classifier.transform(img) for img in images[i : i + 120]]) for i in range(0, len(images), 120)
    ]
    with torch.no_grad():
        logits = torch.cat([classifier.model(batch) for batch in batches])
    return logits.argmax(1), logits


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_export_predicts_every_held_out_digit_as_its_checkpoint(exported_digits, runtime):
    ckpt, path, _ = exported_digits
    torch_side = load_classifier(ckpt, purpose="eval")
    exported = load_classifier(path, purpose="eval", runtime=runtime)
    assert isinstance(exported.model, RuntimeModel) and exported.model.runtime == runtime
    assert exported.classes == torch_side.classes == [str(d) for d in range(10)]
    _, val = digits_splits()
    images = [val[i][0] for i in range(len(val))]
    # the same preprocessing, from the file's metadata
    assert torch.equal(exported.transform(images[0]), torch_side.transform(images[0]))
    top1, logits = _predictions(exported, images)
    expected_top1, expected = _predictions(torch_side, images)
    assert len(top1) == 360 and int((top1 != expected_top1).sum()) <= 1
    assert (logits - expected).abs().max() <= 1e-4  # parity of the outputs themselves


def test_eval_of_the_export_reports_the_checkpoints_top1(exported_digits, capsys):
    ckpt, path, summary = exported_digits
    results = {}
    for name, argv in {"pytorch": [], "onnxruntime": [], "openvino": ["--runtime", "openvino"]}.items():
        file = ckpt if name == "pytorch" else path
        assert main(["eval", "--checkpoint", str(file), "--json", *argv]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert results["pytorch"]["top1"] == pytest.approx(summary["final_top1"])
    for name in ("onnxruntime", "openvino"):
        got = results[name]
        assert got["runtime"] == name and set(got) == set(results["pytorch"])
        assert got["images"] == 360 and got["model"] == "fat_b0"
        assert abs(got["top1"] - results["pytorch"]["top1"]) <= 100 / 360 + 1e-9
        assert got["loss"] == pytest.approx(results["pytorch"]["loss"], abs=1e-4)
    assert main(["eval", "--checkpoint", str(path)]) == 0
    assert "fat_b0 in onnxruntime on the digits held-out split: top-1" in capsys.readouterr().out


def test_predict_runs_the_export(exported_digits, tmp_path, capsys):
    ckpt, path, _ = exported_digits
    write_held_out_digits(tmp_path / "d", count=6)
    records = {}
    for file, extra in ((ckpt, []), (path, []), (path, ["--runtime", "openvino"])):
        assert main(["predict", str(tmp_path / "d"), "--checkpoint", str(file), "--json", "--topk", "3", *extra]) == 0
        records[(str(file), *extra)] = json.loads(capsys.readouterr().out)
    reference, *others = records.values()
    for got in others:
        assert [r["path"] for r in got] == [r["path"] for r in reference]
        for a, b in zip(got, reference):
            assert [h["class"] for h in a["topk"]] == [h["class"] for h in b["topk"]]
            assert [h["prob"] for h in a["topk"]] == pytest.approx([h["prob"] for h in b["topk"]], abs=1e-5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runtime", "openvino", "--checkpoint", "CKPT"], "--runtime openvino runs exported .onnx files"),
        (["--checkpoint", "ONNX", "--ema"], "is an exported model: it holds one set of weights"),
        (["--checkpoint", "ONNX", "--device", "cuda"], "runs on the CPU with onnxruntime"),
        (["--checkpoint", "ONNX", "--set", "model_kwargs.depths=[1,1,1,1]"], "its model_kwargs is fixed in the file"),
        (["--checkpoint", "ONNX", "--model", "fat_b1"], "its model is fixed in the file ('fat_b0')"),
    ],
)
def test_settings_an_export_cannot_take_are_one_line(exported_digits, capsys, argv, message):
    ckpt, path, _ = exported_digits
    argv = [{"CKPT": str(ckpt), "ONNX": str(path)}.get(a, a) for a in argv]
    assert message in cli_error(capsys, ["eval", *argv])


def test_explain_refuses_an_export(exported_digits, tmp_path, capsys):
    _, path, _ = exported_digits
    write_held_out_digits(tmp_path / "d", count=1)
    line = cli_error(capsys, ["explain", str(tmp_path / "d" / "000.png"), "--checkpoint", str(path),
                              "--output", str(tmp_path / "x")])  # fmt: skip
    assert "is an exported model: fatvit explain reads FASA's gates" in line
    assert not (tmp_path / "x").exists()


def test_a_static_export_refuses_another_size(digits_run, tmp_path, capsys):
    out, _ = digits_run
    path = tmp_path / "static.onnx"
    assert main(["export", "--checkpoint", str(out / "best.pth"), "--output", str(path), "--static"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(path), "--json"]) == 0  # its own size; batches run one image at a time
    assert json.loads(capsys.readouterr().out)["images"] == 360
    line = cli_error(capsys, ["eval", "--checkpoint", str(path), "--img-size", "40"])
    assert "is a static export for 32x32 inputs: it cannot take img_size 40" in line


def test_a_missing_openvino_names_its_extra(exported_digits, capsys, monkeypatch):
    _, path, _ = exported_digits
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    line = cli_error(capsys, ["eval", "--checkpoint", str(path), "--runtime", "openvino"])
    assert line == "fatvit: error: openvino is not installed: pip install 'fatvit[openvino]'"

"""Exported models evaluated on data: an .onnx file run by ONNX Runtime or OpenVINO gives the checkpoint's
predictions, with the preprocessing and classes of its metadata."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_error, write_held_out_digits
from fatvit.cli import main
from fatvit.runtime import RuntimeModel
from fatvit.tasks.classification.data import digits_splits
from fatvit.tasks.classification.inference import load_classifier

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino extra (in dev)")

#: The runtimes an export is checked in.
RUNTIME_PARAMS = ["onnxruntime", pytest.param("openvino", marks=needs_openvino)]


def _runtime_args(runtime):
    """The eval/predict arguments that pick ``runtime`` (ONNX Runtime is the default for .onnx files)."""
    return [] if runtime == "onnxruntime" else ["--runtime", runtime]


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


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
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


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
def test_eval_of_the_export_reports_the_checkpoints_top1(exported_digits, capsys, runtime):
    ckpt, path, summary = exported_digits
    extra = _runtime_args(runtime)
    assert main(["eval", "--checkpoint", str(ckpt), "--json"]) == 0
    reference = json.loads(capsys.readouterr().out)
    assert reference["top1"] == pytest.approx(summary["final_top1"])
    assert main(["eval", "--checkpoint", str(path), "--json", *extra]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["runtime"] == runtime and set(got) == set(reference)
    assert got["images"] == 360 and got["model"] == "fat_b0"
    assert abs(got["top1"] - reference["top1"]) <= 100 / 360 + 1e-9
    assert got["loss"] == pytest.approx(reference["loss"], abs=1e-4)
    assert main(["eval", "--checkpoint", str(path), *extra]) == 0
    assert f"fat_b0 in {runtime} on the digits held-out split: top-1" in capsys.readouterr().out


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
def test_predict_runs_the_export(exported_digits, tmp_path, capsys, runtime):
    ckpt, path, _ = exported_digits
    extra = _runtime_args(runtime)
    write_held_out_digits(tmp_path / "d", count=6)
    records = []
    for file, args in ((ckpt, []), (path, extra)):
        assert main(["predict", str(tmp_path / "d"), "--checkpoint", str(file), "--json", "--topk", "3", *args]) == 0
        records.append(json.loads(capsys.readouterr().out))
    reference, got = records
    assert [r["path"] for r in got] == [r["path"] for r in reference] and len(got) == 6
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


def _alternate_signal_stack():
    """(start, size) of this thread's alternate signal stack, or None when it has none."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    return None if stack.flags & 2 or not stack.sp else (stack.sp, stack.size)  # 2: SS_DISABLE


@needs_openvino
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_openvino_models_freed_leave_the_signal_stack_in_live_memory(exported_digits):
    """OpenVINO's CPU plugin sets the thread's alternate signal stack and puts the previous one back when its Core
    is freed: two Cores freed in the order they were made left the thread on freed memory, and a later signal (a
    subprocess ending) crashed the process. fatvit keeps one Core per process."""
    import gc

    _, path, _ = exported_digits
    models = [RuntimeModel(path, runtime="openvino") for _ in range(2)]
    for model in models:
        model(torch.zeros(1, 3, 32, 32))
    del models, model
    gc.collect()
    stack = _alternate_signal_stack()
    if stack is not None:
        start, size = stack
        maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
        spans = [(*(int(x, 16) for x in m[0].split("-")), m[1]) for m in maps]
        assert any(lo <= start and start + size <= hi and perms.startswith("rw") for lo, hi, perms in spans), (
            f"the alternate signal stack {start:#x}+{size} is not in writable mapped memory"
        )

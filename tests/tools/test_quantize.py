"""`fatvit quantize`: an int8 ONNX file calibrated on images, checked on the held-out ones, refused when it loses
more top-1 than --max-drop; the int8 benchmark mode; the onnx extra's absence in one line."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys

import onnx
import pytest
import torch
from PIL import Image

from conftest import cli_error, write_held_out_digits
from fatvit.benchmark import run_benchmark
from fatvit.cli import main
from fatvit.errors import FatvitError
from fatvit.export import read_onnx_metadata
from fatvit.quantize import split_calibration
from fatvit.tasks.classification.data import digits_splits
from fatvit.tasks.classification.inference import load_classifier


@pytest.fixture(scope="module")
def quantized(digits_run, tmp_path_factory):
    """The digits run's best checkpoint, its int8 file and the record `fatvit quantize --json` printed."""
    out, _ = digits_run
    path = tmp_path_factory.mktemp("quantized") / "digits.int8.onnx"
    argv = ["quantize", "--checkpoint", str(out / "best.pth"), "--output", str(path), "--json"]
    record = json.loads(_stdout(argv))
    return out / "best.pth", path, record


def _stdout(argv):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(argv) == 0
    return buffer.getvalue()


def test_the_record_is_the_checkpoint_and_the_file_on_the_held_out_digits(quantized):
    """The drop printed is what the checkpoint and the int8 file give, image by image, on the digits not
    calibrated on."""
    ckpt, path, record = quantized
    calibration, held_out = split_calibration(360, 100)
    assert (record["calibration_images"], record["images"]) == (100, 260)
    assert record["calibration"] == "the digits held-out split" and record["op_types"] == ["Conv"]
    _, val = digits_splits()
    fp32, int8 = load_classifier(ckpt, purpose="eval"), load_classifier(path, purpose="eval")
    images = torch.stack([fp32.transform(val[i][0]) for i in held_out])
    labels = torch.tensor([val[i][1] for i in held_out])
    with torch.no_grad():
        ours, theirs = fp32.model(images).argmax(1), int8.model(images).argmax(1)
    assert record["top1_fp32"] == pytest.approx(100 * (ours == labels).float().mean().item())
    assert record["top1_int8"] == pytest.approx(100 * (theirs == labels).float().mean().item())
    assert record["differing"] == int((ours != theirs).sum())
    assert record["drop"] == pytest.approx(record["top1_fp32"] - record["top1_int8"]) and record["drop"] <= 1.0


def test_the_file_is_qdq_int8_per_channel_with_the_models_metadata(quantized):
    ckpt, path, record = quantized
    proto = onnx.load(str(path))
    ops = [node.op_type for node in proto.graph.node]
    convs = ops.count("Conv")
    assert convs > 0 and ops.count("QuantizeLinear") >= convs and ops.count("DequantizeLinear") >= 2 * convs
    inits = {init.name: init for init in proto.graph.initializer}
    weights = [inits[n.input[0]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    # int8 weights, int32 biases (their scale the input's times the weight's)
    assert {w.data_type for w in weights} == {onnx.TensorProto.INT8, onnx.TensorProto.INT32}
    # per channel: a weight's scale has one value per output channel
    scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)
    meta = read_onnx_metadata(path)
    assert meta["classes"] == [str(d) for d in range(10)] and meta["input_size"] == [3, 32, 32]
    assert meta["weights"] == str(ckpt)
    assert meta["quantization"] == {k: v for k, v in record.items() if k not in ("output", "model")}


def test_eval_and_predict_run_the_int8_file(quantized, tmp_path, capsys):
    """eval gives the int8 file the checkpoint's metrics and JSON, on all 360 digits, in either runtime."""
    ckpt, path, _ = quantized
    assert main(["eval", "--checkpoint", str(ckpt), "--json"]) == 0
    reference = json.loads(capsys.readouterr().out)
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for runtime in runtimes:  # OpenVINO runs the QDQ file with int8 kernels of its own
        assert main(["eval", "--checkpoint", str(path), "--runtime", runtime, "--json"]) == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["runtime"] == runtime and evaluated["images"] == 360
        assert evaluated.keys() == reference.keys() | {"runtime"}
        assert abs(evaluated["top1"] - reference["top1"]) <= 100 * 3 / 360, runtime
    write_held_out_digits(tmp_path / "d", count=2)
    assert main(["predict", str(tmp_path / "d"), "--checkpoint", str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_an_int8_file_is_not_quantized_again(quantized, tmp_path, capsys):
    _, path, _ = quantized
    line = cli_error(capsys, ["quantize", "--checkpoint", str(path), "--output", str(tmp_path / "again.onnx")])
    assert line == f"fatvit: error: {path} is already quantized; give the float32 file or the checkpoint"
    assert not (tmp_path / "again.onnx").exists()


def _digit_folder(root, black_index=None):
    """The held-out digits as DIR/<label>/<index>.png; the image at ``black_index`` (in the folder's sorted
    order) replaced by a black one."""
    labels = write_held_out_digits(root / "flat")
    for i, label in enumerate(labels):
        (root / str(label)).mkdir(exist_ok=True)
        (root / "flat" / f"{i:03d}.png").rename(root / str(label) / f"{i:03d}.png")
    (root / "flat").rmdir()
    files = sorted(root.glob("*/*.png"))
    if black_index is not None:
        Image.new("L", (8, 8)).save(files[black_index])
    return root


def test_a_drop_over_max_drop_is_printed_and_writes_nothing(digits_run, tmp_path, capsys):
    """Calibrated on one black image, int8 ranges clip every real digit: the drop is refused at the default
    --max-drop and written only when --max-drop allows it; an fp32 .onnx file is taken as the source."""
    out, _ = digits_run
    fp32 = tmp_path / "fp32.onnx"
    assert main(["export", "--checkpoint", str(out / "best.pth"), "--output", str(fp32)]) == 0
    (calibration,), _ = split_calibration(360, 1)
    folder = _digit_folder(tmp_path / "digits", black_index=calibration)
    output = tmp_path / "int8.onnx"
    argv = ["quantize", "--checkpoint", str(fp32), "--calibration", str(folder), "--calibration-images", "1",
            "--output", str(output)]  # fmt: skip
    capsys.readouterr()
    line = cli_error(capsys, argv)
    assert line.startswith(f"fatvit: error: the int8 model's top-1 on the 359 held-out images of {folder} drops by ")
    assert line.endswith(f"over --max-drop 1: {output} not written")
    drop = float(line.split("drops by ")[1].split()[0])
    assert drop > 1.0 and not output.exists()
    assert main([*argv, "--max-drop", "100", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["drop"] == pytest.approx(drop, abs=0.005) and output.exists()
    assert read_onnx_metadata(output)["quantization"]["calibration"] == str(folder)


def test_split_is_seeded_disjoint_and_complete():
    cal, held = split_calibration(50, 10)
    assert (cal, held) == split_calibration(50, 10) and len(cal) == 10
    assert sorted(cal + held) == list(range(50))
    assert split_calibration(50, 10, seed=1) != (cal, held)
    with pytest.raises(FatvitError, match="leaves none held out"):
        split_calibration(10, 10)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--calibration-images", "360"], "the calibration set has 360 images: --calibration-images 360 leaves none"),
        (["--calibration-images", "0"], "argument --calibration-images: must be at least 1, got 0"),
        (["--max-drop", "-1"], "argument --max-drop: expected a number of 0 or more, got '-1'"),
        (["--max-drop", "nan"], "argument --max-drop: expected a number of 0 or more, got 'nan'"),
        (["--calibration", "/no/such/folder"], "/no/such/folder"),
        (["--ema"], "--ema applies to training checkpoints"),
    ],
)
def test_cli_errors(quantized, tmp_path, capsys, extra, message):
    ckpt, path, _ = quantized
    source = str(path) if extra == ["--ema"] else str(ckpt)
    output = tmp_path / "out.onnx"
    line = cli_error(capsys, ["quantize", "--checkpoint", source, "--output", str(output), *extra])
    assert line.startswith("fatvit: error: ") and message in line
    assert not output.exists()


def test_an_existing_output_is_kept(quantized, tmp_path, capsys):
    ckpt, _, _ = quantized
    output = tmp_path / "out.onnx"
    output.write_bytes(b"work")
    line = cli_error(capsys, ["quantize", "--checkpoint", str(ckpt), "--output", str(output)])
    assert "--overwrite" in line and output.read_bytes() == b"work"


def test_benchmark_times_the_int8_file_exported_and_quantized_once(monkeypatch):
    """The ONNX modes of one model and batch share one export, the int8 modes one quantization."""
    import fatvit.export
    import fatvit.quantize

    calls = []
    for module, name in ((fatvit.export, "export_onnx"), (fatvit.quantize, "quantize_onnx")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    modes = ["onnxruntime", "onnxruntime-int8"] + (["openvino-int8"] if importlib.util.find_spec("openvino") else [])
    records = run_benchmark(["fat_b0"], modes=modes, batch_sizes=[1, 2], rounds=1, warmup=0, img_size=64)
    assert [(r["model"], r["mode"], r["batch"]) for r in records] == [("fat_b0", m, b) for m in modes for b in (1, 2)]
    assert all(r["median_ms"] > 0 for r in records)
    assert sorted(calls) == ["export_onnx"] * 2 + ["quantize_onnx"] * 2


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--output", "{tmp}/m.onnx"],
        ["quantize", "--checkpoint", "{ckpt}", "--output", "{tmp}/m.onnx"],
        ["eval", "--checkpoint", "{onnx}"],
        ["benchmark", "--models", "fat_b0", "--modes", "onnxruntime", "--img-size", "64"],
    ],
)
def test_a_missing_onnx_extra_is_one_line(quantized, tmp_path, capsys, monkeypatch, argv):
    ckpt, path, _ = quantized
    argv = [a.format(tmp=tmp_path, ckpt=ckpt, onnx=path) for a in argv]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    line = cli_error(capsys, argv)
    assert line == "fatvit: error: onnxruntime is not installed: pip install 'fatvit[onnx]'"
    assert not (tmp_path / "m.onnx").exists()

"""Segmentation on the shared training engine: learning, the commands and their errors, iterations or
epochs, skipped images, export, and --set for the test mode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SEGMENT_FAST, cli_error, logged_steps, set_args
from fatvit.config import load_config
from fatvit.engine import Trainer
from fatvit.tasks.segmentation.config import SegmentConfig


def test_segmentation_learns(scenes, tmp_path):
    """Val = train and two classes (background, digit), as for detection."""
    from PIL import Image

    root = tmp_path / "ade"
    for split in ("training", "validation"):
        shutil.copytree(scenes / "ade/images/training", root / "images" / split)
        (root / "annotations" / split).mkdir(parents=True)
        for png in (scenes / "ade/annotations/training").iterdir():
            label = np.asarray(Image.open(png))
            Image.fromarray(np.minimum(label, 2)).save(root / "annotations" / split / png.name)
    (root / "classes.txt").write_text("background\ndigit\n")
    # torchvision's FPN start: with mmseg's Xavier this short run ends at mIoU 0.63, under its bar of 0.64
    recipe = [*SEGMENT_FAST, "epochs=8", "lr=2e-3", "fpn_init=kaiming", f"data={root}", f"output={tmp_path / 'r'}"]
    seg = Trainer(load_config(None, recipe, cls=SegmentConfig))
    before = seg._evaluate(seg.model)["mIoU"]
    seg.fit()
    curve = [r["val_mIoU"] for r in seg.state.history]
    assert curve[-1] > before + 0.2 and curve[-1] > 0.5, (before, curve)


def test_segment_commands(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "run"
    args = ["segment", "train", "--data", str(scenes / "ade"), "--iterations", "2", "--output", str(run),
            *set_args(SEGMENT_FAST)]  # fmt: skip
    assert main(args) == 0
    done = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["final_epoch"], summary["best_epoch"]) == (1, 1)
    assert done.startswith(
        f"done: semantic_fpn_fat_b0 mIoU {summary['final_metrics']['mIoU']:.3f} at the last epoch (1, last.pth); "
        f"best mIoU {summary['best_mIoU']:.3f} at epoch 1 (best.pth)"
    )
    ckpt = str(run / "last.pth")
    assert main(["segment", "eval", "--checkpoint", ckpt, "--data", str(scenes / "ade"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mIoU"] == pytest.approx(summary["final_metrics"]["mIoU"], abs=1e-9)
    assert list(result["per_class_iou"]) == ["background", *[str(d) for d in range(10)]]
    assert main(["segment", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(scenes / "ade"),
                 "--mode", "slide"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["class", "IoU", "(%)", "Acc", "(%)"] and "mIoU" in out
    assert out.splitlines()[-1] == f"{run / 'last.pth'}: weights after epoch 1 (step 2)"
    drawn = tmp_path / "drawn"
    assert main(["segment", "predict", str(scenes / "ade/images/validation"), "--checkpoint",
                 str(run / "model.safetensors"), "--output", str(drawn)]) == 0  # fmt: skip
    assert sorted(p.name for p in drawn.iterdir()) == ["val_00000.png", "val_00001.png", "val_00002.png"]

    with Image.open(drawn / "val_00000.png") as img:
        assert min(img.size) >= 512 and img.width > img.height  # drawn at a readable size, a legend at the right


def test_leftovers_of_a_killed_first_checkpoint_do_not_block_the_next_start(scenes, tmp_path, capsys):
    """SIGKILL before (or while) the first checkpoint is written leaves logs and an empty last.pth.tmp: the next
    start in that folder removes them and says so; a resumed run removes a stale .tmp too."""
    from fatvit.cli import main

    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "steps.csv").write_text("step,epoch,loss,lr\n1,1,2.0,0.001\n")
    (out / "last.pth.tmp").write_bytes(b"")
    argv = ["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(out),
            *set_args(SEGMENT_FAST)]  # fmt: skip
    assert main([*argv, "--max-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "holds only what a run stopped before its first checkpoint left (last.pth.tmp, steps.csv, tensorboard)" \
        in err  # fmt: skip
    assert not (out / "last.pth.tmp").exists() and [r[0] for r in logged_steps(out / "steps.csv")] == [1]
    (out / "last.pth.tmp").write_bytes(b"")  # killed while writing a later checkpoint
    assert main(["segment", "train", "--resume", str(out / "last.pth"), "--iterations", "2"]) == 0
    assert not (out / "last.pth.tmp").exists()
    (out / "notes.txt").write_text("mine")  # anything else is work: refused as before
    (out / "last.pth").unlink()
    line = cli_error(capsys, [*argv, "--set", "seed=1"])
    assert "is not empty" in line


def test_segment_eval_prints_the_skipped_image_count(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "seg"
    assert main(["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(run),
                 *set_args(SEGMENT_FAST)]) == 0  # fmt: skip
    data = tmp_path / "ade"
    shutil.copytree(scenes / "ade", data)
    (data / "images/validation/val_00001.jpg").write_bytes(b"truncated")
    capsys.readouterr()
    assert main(["segment", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(data)]) == 0
    assert "(2 images, 1 unreadable)" in capsys.readouterr().out.splitlines()[-2]  # the last: the file's epoch
    # predict skips it with the line every predict verb prints, and draws the others
    assert main(["segment", "predict", str(data / "images/validation"), "--checkpoint", str(run / "last.pth"),
                 "--output", str(tmp_path / "drawn"), "--json"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2 and len(list((tmp_path / "drawn").iterdir())) == 2
    bad = data / "images/validation/val_00001.jpg"
    assert f"fatvit: skipping unreadable image {bad}: UnidentifiedImageError: " in captured.err


def test_epochs_and_iterations_together_are_an_error_and_the_start_line_says_which_is_used(scenes, tmp_path, capsys):
    from fatvit.cli import main

    base = ["segment", "train", "--data", str(scenes / "ade"), "--output", str(tmp_path / "r"), *set_args(SEGMENT_FAST)]
    for extra in (["--epochs", "2", "--iterations", "3"], ["--epochs", "2", "--set", "iterations=3"]):
        line = cli_error(capsys, [*base, *extra])
        assert "epochs=2 and iterations=3 are both given: a run lasts a number of epochs or of iterations" in line
    # the recipe's epochs, the flag's iterations: the flag wins
    assert main([*base, "--config", "digit_scenes_segment", "--iterations", "1"]) == 0
    assert "1 iterations (iterations=1 given: the recipe's epochs=8 is not used)" in capsys.readouterr().err


def test_segment_export_writes_onnx_matching_pytorch_at_any_size(scenes, tmp_path, capsys):
    from PIL import Image

    from fatvit.cli import main
    from fatvit.export import onnx_session, read_onnx_metadata
    from fatvit.tasks.segmentation.data import SegmentationEvalTransform
    from fatvit.tasks.segmentation.inference import load_segmenter

    run = tmp_path / "run"
    assert main(["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(run),
                 *set_args(SEGMENT_FAST)]) == 0  # fmt: skip
    capsys.readouterr()
    onnx = tmp_path / "seg.onnx"
    argv = ["segment", "export", "--checkpoint", str(run / "last.pth"), "--output", str(onnx), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["shape"][2:] for r in report["checks"]] == [[128, 128], [97, 131], [64, 48]]
    assert all(r["max_abs_diff"] <= 1e-4 for r in report["checks"]), report
    meta = read_onnx_metadata(onnx)
    assert meta["task"] == "segment" and meta["classes"] == ["background", *[str(d) for d in range(10)]]
    model, record = load_segmenter(run / "last.pth")
    assert meta["mean"] == record["mean"] and meta["scale"] == record["scale"]
    image = sorted((scenes / "ade/images/validation").iterdir())[0]
    with Image.open(image) as img:
        pixels, _ = SegmentationEvalTransform(meta["scale"], meta["mean"], meta["std"])(img.convert("RGB"), None)
    with torch.no_grad():
        expected = model(pixels[None]).argmax(1)
    logits = onnx_session(onnx).run(None, {"image": pixels[None].numpy()})[0]
    assert np.array_equal(logits.argmax(1), expected.numpy())
    # the same file in OpenVINO: logits within the export check's 1e-4, batched and at odd sizes too
    from fatvit.runtime import RuntimeModel

    openvino = RuntimeModel(onnx, "openvino")
    for x in (pixels[None], torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(0))):
        with torch.no_grad():
            torch.testing.assert_close(openvino(x), model(x), rtol=0, atol=1e-4)
    assert "exists; give --overwrite" in cli_error(capsys, argv)
    assert main([*argv, "--overwrite"]) == 0 and sorted(p.name for p in tmp_path.glob("seg*")) == ["seg.onnx"]


def test_segment_eval_set_test_mode_is_the_mode_flag(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "seg"
    assert main(["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(run),
                 *set_args(SEGMENT_FAST)]) == 0  # fmt: skip
    base = ["segment", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(scenes / "ade"), "--json"]
    capsys.readouterr()
    results = []
    for extra in (
        ["--mode", "slide", "--set", "test_stride=16"],
        ["--set", "test_mode=slide", "--set", "test_stride=16"],
    ):
        assert main([*base, *extra]) == 0
        result = json.loads(capsys.readouterr().out)
        results.append({k: v for k, v in result.items() if k != "images_per_s"})
    assert results[0] == results[1]
    message = "'test_stride' must be in 1..crop_size (64)"
    assert message in cli_error(capsys, [*base, "--set", "test_stride=65"])

"""Detection and segmentation on the shared training engine: learning, exact resume, the files a run leaves,
the commands, and their errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import TINY_MODEL_OVERRIDES, assert_resumed_as_uninterrupted, cli_error, logged_steps, set_args
from fatvit.config import load_config
from fatvit.engine import Trainer
from fatvit.tasks.detection.config import DetectConfig
from fatvit.tasks.scenes import write_digit_scenes
from fatvit.tasks.segmentation.config import SegmentConfig

# a tiny backbone, small images, no workers: behaviour, not accuracy
DETECT_FAST = [*TINY_MODEL_OVERRIDES, "min_size=64", "max_size=64", "batch_size=2", "workers=0", "log_every=1",
               "warmup_steps=2", "lr=1e-3", "lr_base_batch=2", "decay_milestones=[1]"]  # fmt: skip
SEGMENT_FAST = [*TINY_MODEL_OVERRIDES, "scale=[64, 64]", "crop_size=64", "test_stride=32", "batch_size=2",
                "workers=0", "log_every=1", "lr=1e-3", "lr_base_batch=2", "warmup_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_digit_scenes(tmp_path_factory.mktemp("scenes"), train=8, val=3, size=64)


@pytest.mark.parametrize(
    "cls, fast, extra",
    [
        (DetectConfig, DETECT_FAST, ["model=retinanet_fat_b0"]),
        (SegmentConfig, SEGMENT_FAST, ["iterations=6"]),
    ],
    ids=["retinanet", "semantic_fpn"],
)
def test_resume_is_exact(scenes, tmp_path, cls, fast, extra):
    data = scenes / ("coco" if cls is DetectConfig else "ade")
    recipe = [*fast, *extra, f"data={data}", "drop_path_rate=0.1", "ema=true", "deterministic=true"]
    if cls is DetectConfig:
        recipe.append("epochs=2")  # 4 steps per epoch
    full = Trainer(load_config(None, [*recipe, f"output={tmp_path / 'full'}"], cls=cls))
    full.fit()
    first = Trainer(load_config(None, [*recipe, f"output={tmp_path / 'split'}"], cls=cls), max_steps=5)
    assert not first.fit()["finished"]
    resumed = Trainer.resume(tmp_path / "split" / "last.pth", task=cls.TASK)
    assert resumed.state.global_step == 5
    summary = resumed.fit()
    assert_resumed_as_uninterrupted(full, resumed)
    assert summary["finished"] and summary["task"] == cls.TASK
    final = summary["final_metrics"]
    assert all(v is None or 0.0 <= v <= 1.0 for v in final.values())
    if cls is SegmentConfig:
        assert summary["steps"] == 6 and summary["epochs"] == 2  # 6 iterations of 4 steps per epoch: 2 epochs
        assert set(final) == {"mIoU", "mAcc", "aAcc"} and len(summary["per_class_iou"]) == 11
    else:
        keys = {"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl"}
        assert set(final) == keys
    for name in ("last.pth", "best.pth", "model.safetensors", "metrics.csv", "steps.csv", "training_curves.png"):
        assert (tmp_path / "split" / name).is_file(), name


def _one_class_overfit_set(tmp_path, scenes_root, train_count):
    """Scenes with val = train and one class ("digit"): a short run's rise is then measured without the noise
    of generalisation and of telling ten digits apart."""
    scenes = write_digit_scenes(scenes_root, train=train_count, val=1, size=64)
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    coco = json.loads((scenes / "coco/annotations/instances_train.json").read_text())
    coco["categories"] = [dict(id=1, name="digit")]
    for ann in coco["annotations"]:
        ann["category_id"] = 1
    for split in ("train", "val"):
        shutil.copytree(scenes / "coco" / "train", root / split)
        (root / f"annotations/instances_{split}.json").write_text(json.dumps(coco))
    return root


def test_detection_learns(tmp_path):
    data = _one_class_overfit_set(tmp_path, tmp_path / "scenes", 4)
    recipe = [
        "min_size=64",
        "max_size=64",
        "batch_size=4",
        "lr_base_batch=4",
        "lr=5e-4",  # at 1e-3 the run spikes and its last epochs swing with float32 rounding
        "workers=0",
        "epochs=25",
        "decay_milestones=[24]",
        "warmup_steps=2",
        "clip_grad=5",
        f"data={data}",
        f"output={tmp_path / 'run'}",
    ]
    det = Trainer(load_config(None, recipe, cls=DetectConfig))  # FAT-B0, one step per epoch
    before = det._evaluate(det.model)["bbox_AP50"]
    det.fit()
    curve = [r["val_bbox_AP50"] for r in det.state.history]
    assert before < 0.05 and curve[-1] > 0.25, (before, curve)


def test_segmentation_learns(scenes, tmp_path):
    """Val = train and two classes (background, digit), as for detection."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "ade"
    for split in ("training", "validation"):
        shutil.copytree(scenes / "ade/images/training", root / "images" / split)
        (root / "annotations" / split).mkdir(parents=True)
        for png in (scenes / "ade/annotations/training").iterdir():
            label = np.asarray(Image.open(png))
            Image.fromarray(np.minimum(label, 2)).save(root / "annotations" / split / png.name)
    (root / "classes.txt").write_text("background\ndigit\n")
    recipe = [*SEGMENT_FAST, "epochs=8", "lr=2e-3", f"data={root}", f"output={tmp_path / 'r'}"]
    seg = Trainer(load_config(None, recipe, cls=SegmentConfig))
    before = seg._evaluate(seg.model)["mIoU"]
    seg.fit()
    curve = [r["val_mIoU"] for r in seg.state.history]
    assert curve[-1] > before + 0.2 and curve[-1] > 0.5, (before, curve)


def test_detect_commands(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "run"
    args = ["detect", "train", "--model", "mask_rcnn_fat_b0", "--data", str(scenes / "coco"), "--epochs", "1",
            "--output", str(run), "--json", *set_args([*DETECT_FAST, "score_thresh=0.0"])]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["steps"] == 4
    for checkpoint in (run / "last.pth", run / "model.safetensors"):
        assert main(["detect", "eval", "--checkpoint", str(checkpoint), "--data", str(scenes / "coco"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        for key, value in summary["final_metrics"].items():  # the same figures as the run's own evaluation
            assert result[key] == pytest.approx(value, abs=1e-6) if value is not None else result[key] is None, key
        assert result["images"] == 3
    assert main(["detect", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(scenes / "coco")]) == 0
    out = capsys.readouterr().out
    assert "bbox:" in out and "segm:" in out and "Average Precision  (AP) @[ IoU=0.50:0.95" in out
    images = scenes / "coco" / "val"
    drawn = tmp_path / "drawn"
    argv = ["detect", "predict", str(images), "--checkpoint", str(run / "last.pth"), "--output", str(drawn),
            "--score-threshold", "0.0", "--json"]  # fmt: skip
    assert main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3 and all(r["detections"] for r in records)
    from PIL import Image

    for r in records:
        img = Image.open(r["drawn"])
        assert img.size[1] == 512 and img.size[0] > 512 and img.mode == "RGB"  # 64 px drawn 8x, with a legend
        assert r["detections"][0]["label"] in [str(d) for d in range(10)]
        assert all(len(d["box"]) == 4 and 0 <= d["score"] <= 1 for d in r["detections"])
    assert main([*argv[:-1], "--overwrite"]) == 0  # the text form: one row per detection, with its box
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "class", "score", "x0", "y0", "x1", "y1"]
    rows = [line.split() for line in lines[2:-1]]
    expected = [[r["path"], d["label"], f"{d['score']:.2f}", *(f"{v:.1f}" for v in d["box"])]
                for r in records for d in r["detections"]]  # fmt: skip
    assert rows == expected
    assert lines[-1] == f"{len(expected)} detections in 3 images; drawn in {drawn}"
    line = cli_error(capsys, argv)
    assert "exists; give --overwrite" in line
    assert main([*argv, "--overwrite"]) == 0
    onnx = tmp_path / "mask_rcnn.onnx"
    line = cli_error(capsys, ["detect", "export", "--checkpoint", str(run / "last.pth"), "--output", str(onnx)])
    assert "mask_rcnn_fat_b0: only RetinaNet detectors are exported" in line and not list(tmp_path.glob("*.onnx*"))


def test_segment_commands(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "run"
    args = ["segment", "train", "--data", str(scenes / "ade"), "--iterations", "2", "--output", str(run),
            *set_args(SEGMENT_FAST)]  # fmt: skip
    assert main(args) == 0
    assert "done: semantic_fpn_fat_b0 mIoU" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    ckpt = str(run / "last.pth")
    assert main(["segment", "eval", "--checkpoint", ckpt, "--data", str(scenes / "ade"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mIoU"] == pytest.approx(summary["final_metrics"]["mIoU"], abs=1e-9)
    assert list(result["per_class_iou"]) == ["background", *[str(d) for d in range(10)]]
    assert main(["segment", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(scenes / "ade"),
                 "--mode", "slide"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["class", "IoU", "(%)", "Acc", "(%)"] and "mIoU" in out
    drawn = tmp_path / "drawn"
    assert main(["segment", "predict", str(scenes / "ade/images/validation"), "--checkpoint",
                 str(run / "model.safetensors"), "--output", str(drawn)]) == 0  # fmt: skip
    assert sorted(p.name for p in drawn.iterdir()) == ["val_00000.png", "val_00001.png", "val_00002.png"]
    from PIL import Image

    with Image.open(drawn / "val_00000.png") as img:
        assert min(img.size) >= 512 and img.width > img.height  # drawn at a readable size, a legend at the right


def test_dense_errors_are_one_line(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "seg"
    assert main(["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(run),
                 *set_args(SEGMENT_FAST)]) == 0  # fmt: skip
    capsys.readouterr()
    ckpt = str(run / "last.pth")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    cases = [
        (["detect", "eval", "--checkpoint", ckpt], "holds a 'segment' model: give a checkpoint of fatvit detect"),
        (["eval", "--checkpoint", ckpt], "holds a 'segment' model: use fatvit segment eval"),
        (["predict", "x.png", "--checkpoint", ckpt], "holds a 'segment' model: use fatvit segment predict"),
        (["export", "--checkpoint", ckpt, "--output", str(tmp_path / "x.onnx")],
         "holds a 'segment' model: use fatvit segment export"),
        (["explain", str(scenes / "ade/images/validation/val_00000.jpg"), "--checkpoint", ckpt, "--output",
          str(tmp_path)],
         "holds a 'segment' model: fatvit explain takes classification models (fatvit segment has train, eval, "
         "predict, export)"),
        (["detect", "train", "--resume", ckpt], "is a 'segment' run: resume it with fatvit segment train"),
        (["detect", "train", "--config", "digits"], "recipe digits is for task 'classify', not 'detect'"),
        (["train", "--config", "digit_scenes_detect"], "for task 'detect', not 'classify': use fatvit detect"),
        (["detect", "train", "--set", "crop_size=3"], "config key 'crop_size' is one of task 'segment'"),
        (["detect", "train", "--model", "retinanet_fat_bo"], "unknown detector 'retinanet_fat_bo'"),
        (["segment", "train", "--set", "test_mode=tiles"], "'test_mode' must be whole or slide"),
        (["detect", "train", "--data", str(tmp_path / "nowhere")], "data folder not found"),
        (["detect", "train", "--data", str(scenes / "ade")], "holds no COCO train split"),
        (["segment", "train", "--data", str(scenes / "coco")], "a segmentation data set holds images/"),
        (["segment", "train", "--data", str(scenes / "ade"), "--set", "num_classes=5"], "names 11 classes"),
        (["detect", "predict", str(tmp_path / "none.png"), "--checkpoint", ckpt, "--output", str(tmp_path / "o")],
         "not found"),
        (["segment", "eval", "--checkpoint", ckpt, "--device", "gpu"],
         "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        (["detect", "eval", "--checkpoint", ckpt, "--workers", "-1"], "--workers: must be 0 or more, got -1"),
        (["segment", "eval", "--checkpoint", ckpt, "--batch-size", "4"], "unrecognized arguments: --batch-size"),
        (["detect", "predict", "x.png", "--checkpoint", ckpt, "--output", "o", "--score-threshold", "2"],
         "--score-threshold must be in [0, 1]"),
        (["detect", "export", "--checkpoint", ckpt, "--output", str(tmp_path / "d.onnx"), "--opset", "9"],
         "--opset 9: a detector is exported in opsets 11 to 23"),
        (["detect", "export", "--checkpoint", ckpt, "--output", str(tmp_path / "d.onnx"), "--images",
          str(broken)], f"cannot read check image {broken}"),
    ]  # fmt: skip
    for argv, message in cases:
        assert message in cli_error(capsys, argv), argv


# ----- hardening, round two: the dense verbs ----------------------------------------------------------


@pytest.fixture(scope="module")
def detect_run(scenes, tmp_path_factory):
    """A RetinaNet trained for one step on the scenes (weights to evaluate, not accuracy)."""
    from fatvit.cli import main

    run = tmp_path_factory.mktemp("det") / "run"
    assert main(["detect", "train", "--data", str(scenes / "coco"), "--iterations", "1", "--output", str(run),
                 *set_args([*DETECT_FAST, "model=retinanet_fat_b0"])]) == 0  # fmt: skip
    return run


def _copy_coco(scenes, tmp_path, edit_val=None, edit_train=None):
    data = tmp_path / "coco"
    shutil.copytree(scenes / "coco", data)
    for split, edit in (("val", edit_val), ("train", edit_train)):
        if edit is not None:
            path = data / "annotations" / f"instances_{split}.json"
            content = json.loads(path.read_text())
            edit(content)
            path.write_text(json.dumps(content))
    return data


def test_detect_eval_refuses_a_data_set_whose_category_names_differ(detect_run, scenes, tmp_path, capsys):
    def rename(content):
        content["categories"][3]["name"] = "three"

    data = _copy_coco(scenes, tmp_path, edit_val=rename)
    line = cli_error(capsys, ["detect", "eval", "--checkpoint", str(detect_run / "last.pth"), "--data", str(data)])
    assert "names other categories than" in line and ": 'three' in the data, '3' in the checkpoint" in line


def test_detect_eval_data_errors_are_one_line_with_loader_workers(detect_run, scenes, tmp_path, capsys):
    from PIL import Image

    data = _copy_coco(scenes, tmp_path)
    first = json.loads((data / "annotations/instances_val.json").read_text())["images"][0]["file_name"]
    Image.new("RGB", (50, 40)).save(data / "val" / first)  # the JSON says 64x64
    argv = ["detect", "eval", "--checkpoint", str(detect_run / "last.pth"), "--data", str(data)]
    plain = cli_error(capsys, argv)
    assert plain.endswith(f"is 50x40 but {data / 'annotations/instances_val.json'} says 64x64")
    assert cli_error(capsys, [*argv, "--workers", "1"]) == plain


def test_a_run_failing_before_its_first_checkpoint_removes_what_it_wrote(scenes, tmp_path, capsys):
    from PIL import Image

    from fatvit.cli import main

    data = _copy_coco(scenes, tmp_path)
    names = [i["file_name"] for i in json.loads((data / "annotations/instances_train.json").read_text())["images"]]
    Image.new("RGB", (50, 40)).save(data / "train" / names[-1])  # a data error within the first epoch
    out = tmp_path / "run"
    argv = ["detect", "train", "--data", str(data), "--epochs", "1", "--output", str(out),
            *set_args([*DETECT_FAST, "model=retinanet_fat_b0"])]  # fmt: skip
    assert "is 50x40 but" in cli_error(capsys, argv)
    assert not out.exists()  # steps.csv and tensorboard were written, then removed with the folder it made
    out.mkdir()
    assert "is 50x40 but" in cli_error(capsys, argv)
    assert out.is_dir() and not any(out.iterdir())  # a folder it did not make is kept, emptied of its files
    Image.new("RGB", (64, 64)).save(data / "train" / names[-1])
    assert main(argv) == 0  # the same --output, without --overwrite
    assert (out / "last.pth").is_file()


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


def test_failed_dense_predict_leaves_no_output_folder(detect_run, scenes, tmp_path, capsys):
    images = scenes / "coco" / "val"
    out = tmp_path / "drawn"
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    for verb in ("detect", "segment"):
        cli_error(capsys, [verb, "predict", str(images), "--checkpoint", str(bad), "--output", str(out)])
        assert not out.exists(), verb
    unreadable = tmp_path / "photos"
    unreadable.mkdir()
    (unreadable / "x.png").write_bytes(b"not a png")
    argv = ["detect", "predict", str(unreadable), "--checkpoint", str(detect_run / "last.pth"), "--output", str(out)]
    assert "none of the images could be read" in cli_error(capsys, argv)
    assert not out.exists()
    # beside a readable image, the unreadable one is skipped with the line every predict verb prints
    good = sorted(images.iterdir())[0]
    from fatvit.cli import main

    assert main([*argv[:2], str(good), *argv[2:], "--json"]) == 0
    captured = capsys.readouterr()
    assert [r["path"] for r in json.loads(captured.out)] == [str(good)]
    assert f"fatvit: skipping unreadable image {unreadable / 'x.png'}: UnidentifiedImageError: " in captured.err


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
    assert "(2 images, 1 unreadable)" in capsys.readouterr().out.splitlines()[-1]
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


# ----- the dense recipes as mmdet's and mmseg's ------------------------------------------------------


def test_bf16_training_evaluates_in_float32_boxes_as_detect_eval_does(detect_run, scenes, tmp_path, capsys):
    """Under bf16 autocast (on the CPU) the run's own evaluation scores float32 boxes, and equals
    ``fatvit detect eval --amp bf16`` of its weights."""
    from fatvit.cli import main

    run = tmp_path / "bf16"
    recipe = [*DETECT_FAST, "model=retinanet_fat_b0", "amp=bf16", "score_thresh=0.0"]
    assert main(["detect", "train", "--data", str(scenes / "coco"), "--iterations", "1", "--output", str(run),
                 "--json", *set_args(recipe)]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["final_metrics"]["bbox_AP"] is not None
    argv = ["detect", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(scenes / "coco"), "--json"]
    assert main([*argv, "--amp", "bf16"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key, value in summary["final_metrics"].items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    from fatvit.models.backbone import features_autocast
    from fatvit.tasks.detection.inference import load_detector
    from fatvit.tasks.detection.predict import detect_images

    model, _ = load_detector(run / "last.pth")
    image = sorted((scenes / "coco" / "val").iterdir())[0]
    with features_autocast(model, torch.bfloat16):
        (out,) = detect_images(model, [image])
    assert out["boxes"].dtype == torch.float32 and len(out["boxes"])
    assert "bf16" in cli_error(capsys, [*argv, "--amp", "bf17"])


def test_dense_recipes_decay_every_parameter_and_classification_keeps_timm_groups(scenes, tmp_path):
    from fatvit.tasks.classification.config import ClassifyConfig

    def groups(cls, extra):
        trainer = Trainer(load_config(None, [*extra, f"output={tmp_path / str(len(extra))}"], cls=cls))
        return trainer, [(len(g["params"]), g["weight_decay"]) for g in trainer.opt.optimizer.param_groups]

    seg, seg_groups = groups(SegmentConfig, [*SEGMENT_FAST, f"data={scenes / 'ade'}", "iterations=2"])
    assert seg_groups == [(len(list(seg.model.parameters())), 1e-4)]  # biases and norms decayed too
    for name in ("coco_retinanet_1x", "coco_mask_rcnn_1x", "ade20k_semantic_fpn", "digit_scenes_detect"):
        cls = SegmentConfig if "fpn" in name or "segment" in name else DetectConfig
        assert load_config(name, [], cls=cls).no_decay_1d is False, name
    _, kept = groups(SegmentConfig, [*SEGMENT_FAST, f"data={scenes / 'ade'}", "iterations=2", "no_decay_1d=true"])
    assert len(kept) == 2 and kept[0][1] == 0.0 and kept[1][1] == 1e-4  # timm's: 1-D parameters not decayed
    classify = load_config("digits", [*TINY_MODEL_OVERRIDES], cls=ClassifyConfig)
    assert classify.no_decay_1d is True
    from fatvit.engine import create_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert [len(g["params"]) for g in create_optimizer(model, "adamw", 1e-3, 0.05).param_groups] == [3, 1]
    # a run from before the key resumes with the groups it was trained with
    seg.fit()
    last = seg.folder / "last.pth"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["no_decay_1d"]
    ckpt["optimizer"] = create_optimizer(seg.model, "adamw", 1e-3, 1e-4, no_decay_1d=True).state_dict()  # timm's
    torch.save(ckpt, last)
    resumed = Trainer.resume(last, ["iterations=3"], task="segment")
    assert resumed.cfg.no_decay_1d is True and len(resumed.opt.optimizer.param_groups) == 2


def test_detection_training_leaves_out_empty_images_and_groups_batches_by_aspect_ratio(scenes, tmp_path, caplog):
    import logging

    from PIL import Image

    def add_images(content):
        for n, (w, h) in enumerate([(64, 64), (48, 64), (64, 20)]):  # no annotations; portrait; too small
            ident = 1000 + n
            content["images"].append(dict(id=ident, file_name=f"extra_{n}.png", width=w, height=h))
            Image.new("RGB", (w, h)).save(data / "train" / f"extra_{n}.png")
            if n:
                box = dict(id=5000 + n, image_id=ident, category_id=content["categories"][0]["id"],
                           bbox=[2, 2, 10, 10], area=100, iscrowd=0)  # fmt: skip
                content["annotations"].append(box)

    data = tmp_path / "coco"
    shutil.copytree(scenes / "coco", data)
    path = data / "annotations" / "instances_train.json"
    content = json.loads(path.read_text())
    add_images(content)
    path.write_text(json.dumps(content))
    recipe = [*DETECT_FAST, f"data={data}", "iterations=1"]
    with caplog.at_level(logging.INFO, logger="fatvit.train"):
        trainer = Trainer(load_config(None, [*recipe, f"output={tmp_path / 'a'}"], cls=DetectConfig))
    assert len(trainer.data.train_set) == 8 + 1  # the 8 scenes and the annotated portrait image
    assert "2 training image(s) left out: without annotations, or under 32 px" in caplog.text
    assert trainer.data.train_sampler.groups == [1] * 8 + [0]
    plain = Trainer(load_config(None, [*recipe, f"output={tmp_path / 'b'}", "filter_empty_gt=false",
                                       "group_by_aspect_ratio=false"], cls=DetectConfig))  # fmt: skip
    assert len(plain.data.train_set) == 11 and plain.data.train_sampler.groups is None


def test_detection_recipes_name_their_drop_path_and_use_the_segmentation_rates():
    from fatvit.catalog import BACKBONE_DROP_PATH
    from fatvit.config import _recipe_files
    from fatvit.tasks.detection.models import build_detector

    for name in ("coco_retinanet_1x", "coco_mask_rcnn_1x"):
        text = _recipe_files()[name].read_text()
        assert "Drop path: the authors publish no detection config" in text and "PVTv2" in text
        cfg = load_config(name, [], cls=DetectConfig)
        assert cfg.drop_path_rate is None  # the backbone's rate in the authors' Semantic FPN configs
    for size, rate in BACKBONE_DROP_PATH.items():
        model = build_detector(f"retinanet_{size}", min_size=64, max_size=64)
        rates = [m.drop_prob for m in model.backbone.body.modules() if type(m).__name__ == "DropPath"]
        assert max(rates, default=0.0) == pytest.approx(rate), size


def test_segment_export_writes_onnx_matching_pytorch_at_any_size(scenes, tmp_path, capsys):
    import numpy as np
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
    assert "exists; give --overwrite" in cli_error(capsys, argv)
    assert main([*argv, "--overwrite"]) == 0 and sorted(p.name for p in tmp_path.glob("seg*")) == ["seg.onnx"]


def test_detect_export_writes_onnx_whose_detections_match_pytorch(detect_run, scenes, tmp_path, capsys):
    from fatvit.cli import main
    from fatvit.export import onnx_session, read_onnx_metadata
    from fatvit.tasks.detection.export import match_detections
    from fatvit.tasks.detection.inference import load_detector

    # sharper class scores than one training step gives (detections that are not a tie of near-equal scores)
    ckpt = torch.load(detect_run / "last.pth", weights_only=True)
    ckpt["model"]["head.classification_head.cls_logits.weight"] *= 30
    ckpt["meta"]["score_thresh"] = 0.0
    sharp = tmp_path / "sharp.pth"
    torch.save(ckpt, sharp)
    onnx = tmp_path / "det.onnx"
    images = scenes / "coco" / "val"
    assert main(["detect", "export", "--checkpoint", str(sharp), "--output", str(onnx), "--images", str(images),
                 "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert len(report["checks"]) == 3 and all(r["detections"] > 0 and r["labels_equal"] for r in report["checks"])
    assert all(r["max_score_diff"] <= 1e-4 and r["max_box_diff"] <= 1e-2 for r in report["checks"]), report
    meta = read_onnx_metadata(onnx)
    assert meta["task"] == "detect" and meta["label_offset"] == 0 and len(meta["classes"]) == 10
    model, _ = load_detector(sharp)
    session = onnx_session(onnx)
    image = torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(5))  # a size the check did not use
    boxes, scores, labels = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        (expected,) = model([image])
    got = dict(boxes=torch.from_numpy(boxes), scores=torch.from_numpy(scores), labels=torch.from_numpy(labels))
    record = match_detections(expected, got)
    assert record["labels_equal"] and record["max_score_diff"] <= 1e-4 and record["max_box_diff"] <= 1e-2
    assert main(["detect", "export", "--checkpoint", str(sharp), "--output", str(tmp_path / "random.onnx")]) == 0
    out = capsys.readouterr().out
    assert "random 97x131" in out and "max |box diff| (px)" in out


def test_files_and_runs_from_before_the_mmdet_settings_keep_what_they_did(detect_run, tmp_path):
    """A file without the new record entries is rebuilt as it was trained (torchvision's P7 ReLU and RoIAlign);
    a run without the new config keys resumes with the settings it started with."""
    from fatvit.engine import create_optimizer
    from fatvit.tasks.detection.inference import load_detector

    ckpt = torch.load(detect_run / "last.pth", weights_only=True)
    assert ckpt["meta"]["p7_relu"] is False and ckpt["meta"]["aligned_roi"] is True
    model, _ = load_detector(detect_run / "last.pth")
    assert model.backbone.fpn.extra_blocks.relu is False
    old = tmp_path / "old" / "last.pth"
    old.parent.mkdir()
    for key in ("p7_relu", "aligned_roi"):
        del ckpt["meta"][key]
    keys = ("no_decay_1d", "filter_empty_gt", "min_image_side", "group_by_aspect_ratio", "box_loss",
            "rpn_post_nms_train", "aligned_roi", "p7_relu")  # fmt: skip
    for key in keys:
        del ckpt["config"][key]
    ckpt["config"]["output"] = str(old.parent)
    ckpt["optimizer"] = create_optimizer(model, "adamw", 1e-3, 1e-4, no_decay_1d=True).state_dict()  # timm's groups
    torch.save(ckpt, old)
    model, _ = load_detector(old)
    assert model.backbone.fpn.extra_blocks.relu is True
    resumed = Trainer.resume(old, ["iterations=2"], task="detect")
    cfg = resumed.cfg
    assert (cfg.filter_empty_gt, cfg.min_image_side, cfg.group_by_aspect_ratio) == (False, 0, False)
    assert (cfg.box_loss, cfg.rpn_post_nms_train, cfg.aligned_roi, cfg.p7_relu) == ("smooth_l1", 2000, False, True)
    assert resumed.model.backbone.fpn.extra_blocks.relu is True and len(resumed.opt.optimizer.param_groups) == 2


def test_dense_eval_and_predict_change_the_recorded_settings_with_set(detect_run, scenes, tmp_path, capsys):
    """--set KEY=VALUE on detect and segment eval/predict changes what the file records (checked as the config
    checks it); keys that are no such setting are one-line errors."""
    from fatvit.cli import main
    from fatvit.tasks.detection.inference import load_detector

    ckpt = str(detect_run / "last.pth")
    model, meta = load_detector(ckpt, settings={"score_thresh": 0.9, "max_size": 96})
    assert (meta["score_thresh"], meta["max_size"], meta["min_size"]) == (0.9, 96, 64)
    assert model.score_thresh == 0.9 and model.transform.max_size == 96
    images = [str(p) for p in sorted((scenes / "coco" / "val").iterdir())]
    argv = ["detect", "predict", *images, "--checkpoint", ckpt, "--output", str(tmp_path / "d"), "--json",
            "--score-threshold", "0", "--set", "score_thresh=0.99"]  # fmt: skip
    assert main(argv) == 0
    scores = [d["score"] for r in json.loads(capsys.readouterr().out) for d in r["detections"]]
    assert all(s >= 0.99 for s in scores)  # the detector itself drops what scores less
    for args, message in [
        (["detect", "eval", "--checkpoint", ckpt, "--set", "lr=1"],
         "config key 'lr' does not apply to detect eval (it takes min_size, max_size, detections_per_img, "
         "score_thresh)"),
        (["detect", "eval", "--checkpoint", ckpt, "--set", "max_size=32"], "'max_size' must be at least min_size (64)"),
        (["detect", "predict", *images, "--checkpoint", ckpt, "--output", str(tmp_path / "e"), "--set", "crop_size=3"],
         "config key 'crop_size' is one of task 'segment', not of 'detect'"),
    ]:  # fmt: skip
        assert message in cli_error(capsys, args), args
    assert not (tmp_path / "e").exists()


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

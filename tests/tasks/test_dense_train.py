"""What detection and segmentation share on the engine: exact resume, one-line errors, predict leaving nothing
behind when it fails, and the dense recipes' weight decay."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import (
    DETECT_FAST,
    SEGMENT_FAST,
    TINY_MODEL_OVERRIDES,
    assert_resumed_as_uninterrupted,
    cli_error,
    set_args,
)
from fatvit.config import load_config
from fatvit.engine import Trainer
from fatvit.tasks.detection.config import DetectConfig
from fatvit.tasks.segmentation.config import SegmentConfig


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


def test_dense_errors_are_one_line(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "seg"
    assert main(["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(run),
                 *set_args(SEGMENT_FAST)]) == 0  # fmt: skip
    capsys.readouterr()
    ckpt = str(run / "last.pth")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    scratch = ["--backbone-weights", "none"]
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
        (["detect", "train", "--data", str(tmp_path / "nowhere"), *scratch], "data folder not found"),
        (["detect", "train", "--data", str(scenes / "ade"), *scratch], "holds no COCO train split"),
        (["segment", "train", "--data", str(scenes / "coco"), *scratch], "a segmentation data set holds images/"),
        (["segment", "train", "--data", str(scenes / "ade"), "--set", "num_classes=5", *scratch], "names 11 classes"),
        (["detect", "train", "--data", str(scenes / "coco")], "backbone_weights is not set: on data of your own"),
        (["segment", "train", "--data", str(scenes / "ade")], "or to none to train the backbone from random weights"),
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


def test_dense_predict_reads_images_in_workers_as_in_this_process(detect_run, scenes, tmp_path, capsys):
    """--workers N reads the images in loader processes: the same records in the same order, the same skip line."""
    from fatvit.cli import main

    seg = tmp_path / "seg"
    assert main(["segment", "train", "--data", str(scenes / "ade"), "--iterations", "1", "--output", str(seg),
                 *set_args(SEGMENT_FAST)]) == 0  # fmt: skip
    (tmp_path / "x.png").write_bytes(b"not a png")
    images = [*sorted(str(p) for p in (scenes / "coco" / "val").iterdir()), str(tmp_path / "x.png")]
    for verb, ckpt in (("detect", detect_run / "last.pth"), ("segment", seg / "last.pth")):
        capsys.readouterr()
        runs = []
        for workers in ("0", "2"):
            out = tmp_path / f"{verb}{workers}"
            argv = [verb, "predict", *images, "--checkpoint", str(ckpt), "--output", str(out), "--json"]
            assert main([*argv, "--workers", workers]) == 0
            captured = capsys.readouterr()
            assert f"skipping unreadable image {tmp_path / 'x.png'}: UnidentifiedImageError" in captured.err
            runs.append([{k: v for k, v in r.items() if k != "drawn"} for r in json.loads(captured.out)])
            assert len(list(out.iterdir())) == 3
        assert [r["path"] for r in runs[0]] == images[:3] and runs[0] == runs[1], verb


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

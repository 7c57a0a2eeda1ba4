"""Detection on the shared training engine: learning, the commands and their errors, the files a run leaves,
export, and checkpoints from before the mmdet settings."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from conftest import DETECT_FAST, cli_error, mixed_orientation_coco, set_args
from fatvit.config import load_config
from fatvit.engine import Trainer
from fatvit.models.backbone import features_autocast
from fatvit.tasks.detection.config import DetectConfig
from fatvit.tasks.detection.models import build_detector
from fatvit.tasks.scenes import write_digit_scenes


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
        "backbone_weights=none",
        "fpn_init=kaiming",  # as the scenes recipe: from scratch it trains better than mmdet's Xavier
        f"output={tmp_path / 'run'}",
    ]
    det = Trainer(load_config(None, recipe, cls=DetectConfig))  # FAT-B0, one step per epoch
    before = det._evaluate(det.model)["bbox_AP50"]
    det.fit()
    curve = [r["val_bbox_AP50"] for r in det.state.history]
    assert before < 0.05 and curve[-1] > 0.25, (before, curve)


def test_detect_commands(scenes, tmp_path, capsys):
    from fatvit.cli import main

    run = tmp_path / "run"
    args = ["detect", "train", "--model", "mask_rcnn_fat_b0", "--data", str(scenes / "coco"), "--epochs", "1",
            "--output", str(run), "--json", *set_args([*DETECT_FAST, "score_thresh=0.0"])]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["steps"] == 4
    assert summary["final_epoch"] == summary["best_epoch"] == 1  # last.pth's figures, and best.pth's epoch
    for checkpoint in (run / "last.pth", run / "model.safetensors"):
        assert main(["detect", "eval", "--checkpoint", str(checkpoint), "--data", str(scenes / "coco"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["epoch"], result["step"]) == (1, 4)  # how far the file's weights were trained
        for key, value in summary["final_metrics"].items():  # the same figures as the run's own evaluation
            assert result[key] == pytest.approx(value, abs=1e-6) if value is not None else result[key] is None, key
        assert result["images"] == 3
    assert main(["detect", "eval", "--checkpoint", str(run / "last.pth"), "--data", str(scenes / "coco")]) == 0
    out = capsys.readouterr().out
    assert "bbox:" in out and "segm:" in out and "Average Precision  (AP) @[ IoU=0.50:0.95" in out
    assert out.splitlines()[-1] == f"{run / 'last.pth'}: weights after epoch 1 (step 4)"
    images = scenes / "coco" / "val"
    drawn = tmp_path / "drawn"
    argv = ["detect", "predict", str(images), "--checkpoint", str(run / "last.pth"), "--output", str(drawn),
            "--score-threshold", "0.0", "--json"]  # fmt: skip
    assert main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3 and all(r["detections"] for r in records)

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

    data = _copy_coco(scenes, tmp_path)
    first = json.loads((data / "annotations/instances_val.json").read_text())["images"][0]["file_name"]
    Image.new("RGB", (50, 40)).save(data / "val" / first)  # the JSON says 64x64
    argv = ["detect", "eval", "--checkpoint", str(detect_run / "last.pth"), "--data", str(data)]
    plain = cli_error(capsys, argv)
    assert plain.endswith(f"is 50x40 but {data / 'annotations/instances_val.json'} says 64x64")
    assert cli_error(capsys, [*argv, "--workers", "1"]) == plain


@pytest.mark.parametrize("where", ["loader worker", "step"])
def test_a_training_error_is_the_last_line_printed(where, scenes, tmp_path, capsys, monkeypatch):
    """The progress bar is closed before an error reaches the user, whether a loader worker raised it (a training
    image of another size than its record) or the step did: the error line ends stderr."""
    import gc

    from fatvit.cli import main
    from fatvit.errors import FatvitError
    from fatvit.tasks.detection.task import DetectionTask

    data = _copy_coco(scenes, tmp_path)
    if where == "loader worker":
        for image in sorted((data / "train").iterdir())[-2:]:
            Image.new("RGB", (50, 40)).save(image)  # the JSON says 64x64
        expected = "is 50x40 but"
    else:
        calls = []

        def loss(self, model, inputs, targets):
            calls.append(1)
            if len(calls) > 1:
                raise FatvitError("a box of the second batch is bad")
            return sum(model(inputs, targets).values())

        monkeypatch.setattr(DetectionTask, "loss", loss)
        expected = "a box of the second batch is bad"
    argv = ["detect", "train", "--data", str(data), "--epochs", "1", "--output", str(tmp_path / "run"),
            "--workers", "1", *set_args(DETECT_FAST)]  # fmt: skip
    assert main(argv) == 1
    gc.collect()  # a bar left open prints its last state when it is collected
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("fatvit: error: ") and expected in last and err.endswith(last + "\n"), repr(err[-300:])


def test_a_run_failing_before_its_first_checkpoint_removes_what_it_wrote(scenes, tmp_path, capsys):

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
    from fatvit.tasks.detection.inference import load_detector
    from fatvit.tasks.detection.predict import detect_images

    model, _ = load_detector(run / "last.pth")
    image = sorted((scenes / "coco" / "val").iterdir())[0]
    with features_autocast(model, torch.bfloat16):
        (out,) = detect_images(model, [image])
    assert out["boxes"].dtype == torch.float32 and len(out["boxes"])
    assert "bf16" in cli_error(capsys, [*argv, "--amp", "bf17"])


def test_detections_of_mixed_orientations_do_not_depend_on_the_batch(scenes, tmp_path, capsys):
    """Landscape and portrait images read 1, 2 or 3 at a time score the same, in the run's own evaluation and in
    ``detect eval``; ``--padded-batches`` (one padded forward per batch) changes them, since FAT's GroupNorm(1, C)
    and global attention see the padding."""
    from fatvit.cli import main

    data, run = mixed_orientation_coco(scenes, tmp_path / "mixed"), tmp_path / "run"
    sizes = ["max_size=96", "score_thresh=0.0"]  # landscape 64x96 and portrait 96x64 kept; every box scored
    fast = [*DETECT_FAST, "fpn_init=kaiming"]  # one step from there gives boxes that score some AP
    assert main(["detect", "train", "--data", str(data), "--iterations", "1", "--output", str(run), "--json",
                 *set_args([*fast, *sizes, "model=retinanet_fat_b0"])]) == 0  # fmt: skip
    trained = json.loads(capsys.readouterr().out)["final_metrics"]
    argv = ["detect", "eval", "--checkpoint", str(run / "model.safetensors"), "--data", str(data), "--json",
            *set_args(sizes)]  # fmt: skip
    results = {}
    for extra in (["--batch-size", "1"], [], ["--batch-size", "3"], ["--padded-batches", "--batch-size", "3"]):
        assert main([*argv, *extra]) == 0
        metrics = json.loads(capsys.readouterr().out)
        results[" ".join(extra)] = {k: v for k, v in metrics.items() if k in trained}
    alone = results.pop("--batch-size 1")
    assert alone["bbox_AP"] > 0
    padded = results.pop("--padded-batches --batch-size 3")
    assert padded != alone
    for metrics in [trained, *results.values()]:
        assert metrics == pytest.approx(alone, abs=1e-9, nan_ok=True)


def test_detection_training_leaves_out_empty_images_and_groups_batches_by_aspect_ratio(scenes, tmp_path, caplog):
    import logging

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

    for name in ("coco_retinanet_1x", "coco_mask_rcnn_1x"):
        text = _recipe_files()[name].read_text()
        assert "Drop path: the authors publish no detection config" in text and "PVTv2" in text
        cfg = load_config(name, [], cls=DetectConfig)
        assert cfg.drop_path_rate is None  # the backbone's rate in the authors' Semantic FPN configs
    for size, rate in BACKBONE_DROP_PATH.items():
        model = build_detector(f"retinanet_{size}", min_size=64, max_size=64)
        rates = [m.drop_prob for m in model.backbone.body.modules() if type(m).__name__ == "DropPath"]
        assert max(rates, default=0.0) == pytest.approx(rate), size


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
    # the same file in OpenVINO: the same detections, at the checked sizes and another
    from fatvit.tasks.detection.export import check_detector_onnx, check_images

    records = check_detector_onnx(onnx, model, [*check_images(), ("random 70x90", image)], runtime="openvino")
    assert len(records) == 4 and all(r["detections"] > 0 and r["labels_equal"] for r in records)
    assert all(r["max_score_diff"] <= 1e-4 and r["max_box_diff"] <= 1e-2 for r in records), records


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
            "rpn_post_nms_train", "aligned_roi", "p7_relu", "mmdet_targets")  # fmt: skip
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
    assert not cfg.mmdet_targets and type(resumed.model.head).__name__ == "RetinaNetHead"  # torchvision's losses


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

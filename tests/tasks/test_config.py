"""Recipes as package data, typed overrides, and values checked where they are defined."""

from __future__ import annotations

import pytest
import torch

from fatvit.config import apply_overrides, load_config, make_config, read_recipe, recipe_names
from fatvit.engine import resolve_amp
from fatvit.errors import FatvitError
from fatvit.tasks.classification.config import ClassifyConfig


def test_named_recipes_come_from_the_package():
    names = recipe_names()
    assert {"digits", "imagenet", "released", "fat_b0", "fat_b5", "fat_b3_st_released"} <= set(names)
    assert load_config("digits").img_size == 32
    assert load_config("fat_b2").model == "fat_b2"


def test_released_recipe_builds_the_authors_model():
    cfg = load_config("fat_b1_released")
    assert cfg.model == "fat_b1"
    assert cfg.model_kwargs == {"interaction": "reference", "head_init": "default"}
    assert (cfg.lr, cfg.epochs, cfg.mixup) == (5e-4, 300, 0.8)  # otherwise the paper's recipe
    assert load_config("fat_b1").model_kwargs == {}  # the paper's bidirectional FASA


def test_missing_recipe_is_loud(tmp_path):
    with pytest.raises(FatvitError, match="unknown recipe 'fat_b9'; did you mean"):
        read_recipe("fat_b9")
    with pytest.raises(FatvitError, match="recipe file not found"):
        read_recipe(tmp_path / "mine.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(FatvitError, match="must be a mapping"):
        read_recipe(tmp_path / "list.yaml")
    (tmp_path / "mine.yaml").write_text("model: fat_b1\nlr: 1.0e-3\nmodel_kwargs:\n  interaction: reference\n")
    cfg = load_config(tmp_path / "mine.yaml", ["model_kwargs.cpe=false"])
    assert (cfg.model, cfg.lr, cfg.model_kwargs) == ("fat_b1", 1e-3, {"interaction": "reference", "cpe": False})


def test_typed_values_need_no_round_trip_through_text():
    values = apply_overrides({}, ["lr=2e-3"], typed={"output": "runs/007", "epochs": 3, "lr": 1e-3})
    cfg = make_config(values)
    assert (cfg.output, cfg.epochs, cfg.lr) == ("runs/007", 3, 2e-3)  # --set comes last
    assert load_config(None, typed={"output": "007"}).output == "007"  # not the number 7


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("img_size", 0, "at least 1"),
        ("lr", 0.0, "positive"),
        ("crop_pct", 1.5, "in (0, 1]"),
        ("smoothing", 1.0, "in [0, 1)"),
        ("interpolation", "cubic", "one of"),
        ("device", "gpu", "auto, cpu, cuda or cuda:N"),
        ("clip_grad", 0.0, "positive or null"),
        ("ema_decay", 1.0, "in (0, 1)"),
        ("scale", [0.9, 0.1], "0 < min <= max <= 1"),
    ],
)
def test_config_checks_its_values(field, value, message):
    with pytest.raises(FatvitError) as err:
        ClassifyConfig(**{field: value})
    assert str(err.value).startswith(f"config key '{field}' must be") and message in str(err.value)


def test_amp_auto_is_fp32_on_cpu_and_mixed_on_cuda(monkeypatch):
    assert resolve_amp("auto", torch.device("cpu")) is None
    assert resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", torch.device("cuda", 0)) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", torch.device("cuda", 0)) is torch.float16
    assert load_config("fat_b0").amp == "auto" and load_config("digits").amp == "auto"


def test_dense_configs_recipes_and_run_length():
    from fatvit.tasks.detection.config import DetectConfig
    from fatvit.tasks.segmentation.config import SegmentConfig

    det = load_config("coco_retinanet_1x", cls=DetectConfig)
    assert det == load_config(None, cls=DetectConfig)  # the paper's 1x is the config's default
    assert (det.epochs, det.sched, det.decay_milestones, det.lr, det.lr_base_batch) == (12, "multistep", [8, 11],
                                                                                        1e-4, 16)  # fmt: skip
    assert (det.min_size, det.max_size, det.batch_size, det.warmup_steps) == (800, 1333, 2, 500)
    assert load_config("coco_mask_rcnn_1x", cls=DetectConfig).lr == 2e-4
    seg = load_config("ade20k_semantic_fpn", cls=SegmentConfig)
    assert seg == load_config(None, cls=SegmentConfig)
    assert (seg.iterations, seg.epochs, seg.sched, seg.poly_power, seg.min_lr) == (80000, None, "poly", 0.9, 1e-6)
    assert (seg.crop_size, seg.scale, seg.ratio_range, seg.cat_max_ratio) == (512, [2048, 512], [0.5, 2.0], 0.75)
    # epochs and iterations: setting one clears the other
    assert load_config(None, ["epochs=3"], cls=SegmentConfig).iterations is None
    assert load_config(None, ["iterations=7"], cls=DetectConfig).epochs is None
    assert load_config(None, ["iterations=7"]).epochs is None  # classification too
    with pytest.raises(FatvitError, match="set one of epochs and iterations"):
        make_config({"epochs": None, "iterations": None}, DetectConfig)
    assert recipe_names("detect") == ["coco_mask_rcnn_1x", "coco_retinanet_1x", "digit_scenes_detect"]
    assert recipe_names("segment") == ["ade20k_semantic_fpn", "digit_scenes_segment"]
    assert "digit_scenes_detect" not in recipe_names()


@pytest.mark.parametrize(
    "cls, overrides, message",
    [
        ("DetectConfig", ["min_size=16"], "'min_size' must be at least 32"),
        ("DetectConfig", ["max_size=100", "min_size=200"], "'max_size' must be at least min_size"),
        ("DetectConfig", ["score_thresh=1.5"], "'score_thresh' must be in [0, 1)"),
        ("DetectConfig", ["sched=multistep", "decay_milestones=[]"], "set for sched multistep"),
        ("DetectConfig", ["decay_milestones=[8, 2]"], "increasing positive epochs"),
        ("DetectConfig", ["img_size=64"], "'img_size' is one of task 'classify'"),
        ("SegmentConfig", ["crop_size=600", "test_stride=700"], "'test_stride' must be in 1..crop_size"),
        ("SegmentConfig", ["ratio_range=[2, 1]"], "'ratio_range' must be [min, max]"),
        ("SegmentConfig", ["num_classes=1"], "'num_classes' must be 2..254"),
        ("SegmentConfig", ["sched=linear"], "'sched' must be one of cosine, multistep, poly"),
        ("ClassifyConfig", ["task=detect"], "this recipe is for task 'detect'"),
    ],
)
def test_dense_config_values_are_checked(cls, overrides, message):
    import fatvit

    with pytest.raises(FatvitError) as err:
        load_config(None, overrides, cls=getattr(fatvit, cls))
    assert message in str(err.value)


def test_a_run_length_given_twice_in_one_layer_is_an_error(tmp_path):
    """The recipe may set one of epochs and iterations and the command line the other (it wins, and the run's
    start line says so); one layer setting both is an error, not a silent pick."""
    from fatvit.tasks.detection.config import DetectConfig

    with pytest.raises(FatvitError, match="epochs=2 and iterations=3 are both given"):
        load_config(None, ["iterations=3"], {"epochs": 2}, cls=DetectConfig)
    with pytest.raises(FatvitError, match="epochs=2 and iterations=3 are both given"):
        load_config(None, ["epochs=2", "iterations=3"])
    recipe = tmp_path / "both.yaml"
    recipe.write_text("task: detect\nepochs: 2\niterations: 3\n")
    with pytest.raises(FatvitError, match="are both set by recipe .*both.yaml"):
        load_config(recipe, cls=DetectConfig)
    cfg = load_config("digit_scenes_detect", ["iterations=3"], cls=DetectConfig)
    assert (cfg.epochs, cfg.iterations) == (None, 3)
    assert cfg.notes == ("iterations=3 given: the recipe's epochs=6 is not used",)
    assert load_config("digit_scenes_detect", ["epochs=2"], cls=DetectConfig).notes == ()
    assert load_config(None, ["epochs=3", "iterations=null"]).epochs == 3  # null is not a length

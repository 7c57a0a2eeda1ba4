"""The start line's account of a run's set-up: how the lr was scaled from the recipe's batch, what restores that
batch, whether BatchNorm is synchronised, and where a dense run's weights come from."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import DETECT_FAST, cli_error, set_args
from fatvit.config import load_config
from fatvit.distributed import DistInfo
from fatvit.engine.report import batchnorm_note, lr_scaling
from fatvit.engine.setup import TrainModels
from fatvit.tasks.detection.config import DetectConfig


@pytest.mark.parametrize(
    "batch, world, accum, expected",
    [
        (2, 1, 1, "(1.00e-04 per 16 images, scaled linearly to 2; accum_steps=8 restores the recipe's batch of 16)"),
        (2, 2, 1, "scaled linearly to 4; accum_steps=4 restores the recipe's batch of 16)"),
        (2, 8, 1, " (the recipe's, for its batch of 16)"),
        (2, 1, 8, " (the recipe's, for its batch of 16)"),
        (3, 1, 1, "scaled linearly to 3; no accum_steps gives the recipe's batch of 16 from 3 images per step)"),
    ],
)
def test_start_line_says_how_the_lr_was_scaled_and_what_restores_the_recipes_batch(batch, world, accum, expected):
    cfg = load_config("coco_retinanet_1x", [f"batch_size={batch}", f"accum_steps={accum}"], cls=DetectConfig)
    assert lr_scaling(cfg, batch * world * accum, world).endswith(expected)


@pytest.mark.parametrize(
    "world, device, expected",
    [
        (1, "cpu", "BatchNorm over each batch (SyncBatchNorm only under DDP on GPUs)"),
        (2, "cpu", "BatchNorm per process (no SyncBatchNorm on CPUs; statistics averaged before evaluations)"),
        (8, "cuda", "SyncBatchNorm over 8 processes"),
    ],
)
def test_start_line_says_whether_batchnorm_is_synchronised(world, device, expected):
    models = TrainModels(nn.Identity(), nn.Identity(), None, DistInfo(world_size=world, device=torch.device(device)))
    assert batchnorm_note(models) == expected


def test_a_dense_run_on_given_data_says_where_its_backbone_weights_come_from(scenes, tmp_path, capsys):
    """On data of one's own, random backbone weights must be asked for (none) and the start line says so; a
    backbone file or a finetune file is named; the embedded scenes' recipe trains from scratch, said too."""
    from fatvit.cli import main

    fast = [f for f in DETECT_FAST if not f.startswith(("backbone_weights", "lr_base_batch"))]
    argv = ["detect", "train", "--data", str(scenes / "coco"), "--iterations", "1", *set_args(fast)]
    line = cli_error(capsys, [*argv, "--output", str(tmp_path / "refused")])
    assert "backbone_weights is not set" in line and not (tmp_path / "refused").exists()
    assert main([*argv, "--output", str(tmp_path / "run"), "--backbone-weights", "none"]) == 0
    start = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("training "))
    assert "backbone from random weights (backbone_weights: none)" in start
    assert "accum_steps=8 restores the recipe's batch of 16" in start and "BatchNorm over each batch" in start
    assert main([*argv, "--output", str(tmp_path / "tuned"), "--set", f"finetune={tmp_path / 'run/last.pth'}"]) == 0
    assert f"whole model from {tmp_path / 'run/last.pth'}" in capsys.readouterr().err
    cfg = load_config(None, ["backbone_weights=fat_b0.pth"], cls=DetectConfig)
    assert cfg.weights_origin() == "backbone from fat_b0.pth" and cfg.backbone_file == "fat_b0.pth"
    assert load_config(None, [], cls=DetectConfig).weights_origin().startswith("backbone from random weights, as")

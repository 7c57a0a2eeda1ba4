"""Training: folders in every format, exact resume, fine-tuning, options, and what a run leaves behind."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import FAST_RECIPE, assert_resumed_as_uninterrupted, make_image_folder
from fatvit.checkpoint import read_state_dict
from fatvit.config import load_config
from fatvit.engine import Trainer, create_optimizer
from fatvit.models import create_model


def _recipe(tmp_path, name, *extra):
    return load_config(None, [*FAST_RECIPE, f"data={tmp_path / 'data'}", f"output={tmp_path / name}", *extra])


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data")


def test_paper_recipe_is_the_default():
    assert load_config("fat_b0") == load_config("imagenet") == load_config(None)
    cfg = load_config("fat_b0")
    assert (cfg.opt, cfg.lr, cfg.lr_base_batch, cfg.weight_decay) == ("adamw", 5e-4, 512, 0.05)
    assert (cfg.warmup_epochs, cfg.warmup_lr, cfg.min_lr, cfg.clip_grad, cfg.epochs) == (20, 5e-7, 5e-6, 5.0, 300)
    assert (cfg.smoothing, cfg.auto_augment, cfg.color_jitter, cfg.reprob, cfg.remode) == (
        0.1, "rand-m9-mstd0.5-inc1", 0.4, 0.25, "pixel")  # fmt: skip
    assert (cfg.mixup, cfg.cutmix, cfg.mixup_switch_prob, cfg.interpolation, cfg.crop_pct) == (
        0.8, 1.0, 0.5, "bicubic", 0.875)  # fmt: skip
    # a size's drop path rate lives in its configuration only
    assert load_config("fat_b3").drop_path_rate is None
    assert create_model("fat_b3").layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.15)


def test_run_leaves_checkpoints_logs_plot_and_summary(folder, tmp_path):
    trainer = Trainer(_recipe(tmp_path, "run", "epochs=2"))
    summary = trainer.fit()
    out = tmp_path / "run"
    for name in ("last.pth", "best.pth", "model.safetensors", "metrics.csv", "steps.csv", "training_curves.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    for key in ("model", "epochs", "final_top1", "best_top1", "train_seconds", "checkpoints"):
        assert key in saved
    assert saved["epochs"] == 2 and saved["finished"]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(saved["best_top1"]) == max(float(r["val_top1"]) for r in rows)
    # every format read (JPEG, PNG, WebP, grey, palette, RGBA, CMYK): nothing skipped
    assert saved["skipped_images"] == 0
    # exported weights equal the model's
    sd = read_state_dict(out / "model.safetensors")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(sd[k], v), k
    # a checkpoint holds everything a resume needs
    ckpt = torch.load(out / "last.pth", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "model_ema", "epoch", "global_step", "rng", "config"):
        assert key in ckpt, key


def test_unreadable_images_are_reported_and_skipped(folder, tmp_path):
    (folder / "train" / "cat" / "truncated.jpg").write_bytes((folder / "train" / "cat" / "0.jpg").read_bytes()[:200])
    (folder / "train" / "dog" / "garbage.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*(truncated\.jpg|garbage\.png)"):
        summary = Trainer(_recipe(tmp_path, "run", "epochs=2", "batch_size=2")).fit()
    assert summary["skipped_images"] == 4  # two files, seen in each of two epochs (26 images in batches of 2)
    assert summary["finished"]


@pytest.mark.parametrize("stop_at", [3, 9])  # step 3 is in epoch 1; step 9 in the middle of epoch 2 (6 per epoch)
def test_resume_is_exact(folder, tmp_path, stop_at):
    recipe = ["epochs=2", "mixup=0.8", "cutmix=1.0", "drop_path_rate=0.1", "ema=true", "deterministic=true"]
    full = Trainer(_recipe(tmp_path, "full", *recipe))
    full.fit()

    first = Trainer(_recipe(tmp_path, "split", *recipe), max_steps=stop_at)
    assert not first.fit()["finished"]
    resumed = Trainer.resume(tmp_path / "split" / "last.pth")
    assert resumed.state.global_step == stop_at
    resumed.fit()
    assert_resumed_as_uninterrupted(full, resumed)


def test_global_batch_scales_the_learning_rates(folder, tmp_path):
    recipe = ["batch_size=4", "accum_steps=2", "lr=5e-4", "lr_base_batch=512", "warmup_lr=5e-7", "min_lr=5e-6"]
    trainer = Trainer(_recipe(tmp_path, "run", *recipe))
    assert trainer.opt.global_batch == 8
    assert trainer.opt.lr == pytest.approx(5e-4 * 8 / 512)
    # as the authors' main.py: the warmup and final lrs scale with the global batch too
    assert trainer.opt.scheduler.warmup_lr_init == pytest.approx(5e-7 * 8 / 512)
    assert trainer.opt.scheduler.lr_min == pytest.approx(5e-6 * 8 / 512)
    assert trainer.opt.current_lr() == pytest.approx(5e-7 * 8 / 512)  # the first step's lr


def test_no_weight_decay_on_biases_and_norms(folder, tmp_path):
    trainer = Trainer(_recipe(tmp_path, "run"))
    by_decay = {g["weight_decay"]: g["params"] for g in trainer.opt.optimizer.param_groups}
    assert set(by_decay) == {0.0, 0.05}
    assert all(p.ndim <= 1 for p in by_decay[0.0])
    assert all(p.ndim > 1 for p in by_decay[0.05])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_options_run(folder, tmp_path, amp):
    options = ["epochs=1", f"amp={amp}", "channels_last=false", "grad_checkpointing=true", "accum_steps=2", "ema=true"]
    summary = Trainer(_recipe(tmp_path, "run", *options)).fit()
    assert summary["finished"] and summary["steps"] == 3  # 24 images / (4 x 2)
    ckpt = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert (ckpt["scaler"] is not None) == (amp == "fp16")  # fp16 trains with a GradScaler, saved for resume
    assert ckpt["model_ema"] is not None


def test_finetune_with_a_new_number_of_classes(folder, tmp_path):
    Trainer(_recipe(tmp_path, "three", "epochs=1")).fit()
    two = make_image_folder(tmp_path / "two", classes=("a", "b"))
    cfg = load_config(None, [*FAST_RECIPE, f"data={two}", f"output={tmp_path / 'ft'}", "epochs=1",
                             f"finetune={tmp_path / 'three' / 'last.pth'}"])  # fmt: skip
    trainer = Trainer(cfg)
    source = read_state_dict(tmp_path / "three" / "last.pth")
    assert trainer.model.head.out_features == 2
    assert torch.equal(trainer.model.norm.weight, source["norm.weight"])
    assert trainer.fit()["finished"]


@pytest.mark.slow
def test_training_under_torch_compile(folder, tmp_path):
    assert Trainer(_recipe(tmp_path, "run", "epochs=1", "compile=true")).fit()["finished"]


@pytest.mark.parametrize("opt, fused", [("adamw", True), ("sgd", True), ("lamb", False)])
def test_optimizers_run_fused_where_torch_has_a_fused_form(opt, fused):
    """Fused AdamW/SGD make the same update as their loop over parameters; other optimizers are left alone."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    twin.load_state_dict(model.state_dict())
    optimizer = create_optimizer(model, opt, lr=0.1, weight_decay=0.05)
    assert bool(optimizer.defaults.get("fused")) is fused
    # no weight decay on biases and 1-D parameters, as timm's factory does
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.05]
    if not fused:
        return
    from timm.optim import create_optimizer_v2

    reference = create_optimizer_v2(twin, opt, lr=0.1, weight_decay=0.05)
    assert not reference.defaults.get("fused")
    for _ in range(3):  # the same gradients into both
        for a, b in zip(model.parameters(), twin.parameters()):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        optimizer.step()
        reference.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

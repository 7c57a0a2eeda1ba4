"""The defects of the hardening walkthrough, each pinned by a test (item numbers are the issue's)."""

from __future__ import annotations

import csv
import json
import re
import time

import pytest
import torch
from safetensors import safe_open

from conftest import FAST_RECIPE, make_image_folder
from conftest import cli_error as _error
from conftest import set_args as _sets
from fatvit.checkpoint import read_checkpoint, save_checkpoint
from fatvit.cli import main
from fatvit.errors import FatvitError
from fatvit.files import atomic_write


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model trained for 2 epochs at 32 px (the checkpoints then differ from the defaults: 224 px)."""
    root = tmp_path_factory.mktemp("hard")
    data = make_image_folder(root / "data")
    out = root / "run"
    argv = ["train", "--data", str(data), "--output", str(out), "--epochs", "2", *_sets(FAST_RECIPE), "--set",
            "crop_pct=1.0", "--set", "interpolation=bilinear"]  # fmt: skip
    assert main(argv) == 0
    return data, out, json.loads((out / "summary.json").read_text())


# ----- 1. every file records the model, its arguments, classes and preprocessing; eval uses them -----


def test_files_record_what_eval_needs(run, capsys):
    data, out, summary = run
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        record = json.loads(f.metadata()["fatvit"])
    ckpt = torch.load(out / "last.pth", weights_only=True)
    for meta in (record, ckpt["meta"]):
        assert meta["model"] == "fat_b0" and meta["model_kwargs"]["embed_dims"] == [16, 32, 48, 64]
        assert meta["classes"] == ["cat", "dog", "owl"] and meta["num_classes"] == 3
        assert (meta["img_size"], meta["crop_pct"], meta["interpolation"]) == (32, 1.0, "bilinear")
        assert meta["interaction"] == "bidirectional" and len(meta["mean"]) == 3
    capsys.readouterr()
    for name in ("model.safetensors", "last.pth"):  # no flag: the record sets size, crop and model
        assert main(["eval", "--checkpoint", str(out / name), "--data", str(data), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["top1"] == pytest.approx(summary["final_top1"]) and result["images"] == 9


# ----- 2. an existing run is never overwritten silently ---------------------------------------------


def test_non_empty_output_is_refused_unless_overwrite(run, capsys, tmp_path):
    data, out, _ = run
    before = (out / "last.pth").read_bytes()
    msg = _error(capsys, ["train", "--data", str(data), "--output", str(out), *_sets(FAST_RECIPE)])
    assert "is not empty" in msg and "--resume" in msg and "--overwrite" in msg
    assert (out / "last.pth").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    argv = ["train", "--data", str(data), "--output", str(other), "--epochs", "1", *_sets(FAST_RECIPE)]
    assert "not empty" in _error(capsys, argv)
    assert main([*argv, "--max-steps", "2"]) == 1  # still refused
    capsys.readouterr()
    assert main([*argv, "--max-steps", "2", "--overwrite"]) == 0
    assert main([*argv, "--max-steps", "3", "--overwrite"]) == 0
    assert [int(r["step"]) for r in _rows(other / "steps.csv")] == [1, 2, 3]  # replaced, not appended
    assert (other / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


# ----- 4. eval checks the class names -----------------------------------------------------------------


def test_eval_on_other_class_names_is_an_error(run, capsys, tmp_path):
    _, out, _ = run
    renamed = make_image_folder(tmp_path / "r", classes=("cat", "dog", "zebra"), n_train=1, n_val=1)
    msg = _error(capsys, ["eval", "--checkpoint", str(out / "best.pth"), "--data", str(renamed)])
    assert "other classes" in msg and "'owl' vs 'zebra'" in msg


# ----- 7. a resumed run does not repeat what it logged after its checkpoint -------------------------


def test_resume_drops_the_steps_logged_after_the_checkpoint(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    base = ["train", "--data", str(data), "--output", str(out), "--epochs", "2", *_sets(FAST_RECIPE)]
    assert main([*base, "--max-steps", "3"]) == 0
    kept = out / "kept.pth"
    kept.write_bytes((out / "last.pth").read_bytes())  # the checkpoint at step 3
    # TensorBoard orders a folder's event files by name: the time in whole seconds, then a per-process counter
    # compared as text ("10" < "9"). Runs in different seconds, as real resumed runs are, sort in order.
    time.sleep(1.1)
    assert main(["train", "--resume", str(out / "last.pth"), "--max-steps", "8"]) == 0  # logs 4..8, epoch 1
    time.sleep(1.1)
    assert main(["train", "--resume", str(kept)]) == 0  # as if killed after step 8 with the step-3 checkpoint
    steps = [int(r["step"]) for r in _rows(out / "steps.csv")]
    assert steps == list(range(1, 13))  # 6 steps an epoch, each once
    assert [int(r["epoch"]) for r in _rows(out / "metrics.csv")] == [1, 2]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"step/loss", "step/lr", "epoch/train_loss", "epoch/val_top1"} <= set(tags)
    assert [e.step for e in events.Scalars("step/loss")] == list(range(1, 13))
    assert [e.step for e in events.Scalars("epoch/val_top1")] == [6, 12]  # per epoch, at its last step


# ----- 8. options that used to be ignored -------------------------------------------------------------


def test_ignored_options_are_errors_or_work(run, capsys, tmp_path):
    data, out, summary = run
    assert "no EMA weights" in _error(capsys, ["eval", "--checkpoint", str(out / "last.pth"), "--ema"])
    assert "--img-size" in _error(capsys, ["eval", "--checkpoint", str(out / "last.pth"), "--img-size", "0"])
    msg = _error(capsys, ["train", "--resume", str(out / "last.pth"), "--output", str(tmp_path / "y")])
    assert "resumes in its own folder" in msg
    msg = _error(capsys, ["train", "--resume", str(out / "last.pth"), "--set", "lr=0.1"])
    assert "cannot change lr when resuming" in msg
    msg = _error(capsys, ["train", "--resume", str(out / "last.pth"), "--epochs", "3", "--set", "lr=0.1"])
    assert "cannot change lr when resuming" in msg and "--finetune" in msg
    assert "finished its 2 epochs" in _error(capsys, ["train", "--resume", str(out / "last.pth")])


def test_resume_with_more_epochs_replans_the_schedule_and_says_so(tmp_path, capsys):
    from fatvit.config import load_config
    from fatvit.engine import Trainer

    data = make_image_folder(tmp_path / "data")
    cfg = load_config(None, [*FAST_RECIPE, f"data={data}", f"output={tmp_path / 'run'}", "epochs=2", "min_lr=0"])
    Trainer(cfg).fit()
    capsys.readouterr()
    longer = Trainer.resume(tmp_path / "run" / "last.pth", ["epochs=4"])
    assert "epochs 2 -> 4: the cosine schedule is re-planned" in capsys.readouterr().err
    # halfway through a 4-epoch cosine (after warmup) the lr is well above the finished schedule's 0
    assert longer.opt.current_lr() > 0.1 * longer.opt.lr
    assert longer.fit()["epochs"] == 4


# ----- 9. failed starts, messages, counts ------------------------------------------------------------


def test_failed_start_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(capsys, ["train", "--set", "model_kwargs.interaction=foo", "--max-steps", "1"])
    _error(capsys, ["train", "--data", str(tmp_path / "missing")])
    assert not (tmp_path / "runs").exists()


def test_nan_error_without_a_checkpoint_says_so(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "nan"), *_sets([*FAST_RECIPE, "lr=inf"])]
    msg = _error(capsys, argv)
    assert "loss is nan at step" in msg and "no checkpoint was written before it" in msg


def test_interrupt_prints_how_to_resume(tmp_path, capsys, monkeypatch):
    from fatvit.engine import Trainer

    data = make_image_folder(tmp_path / "data")
    calls = {"n": 0}
    original = Trainer._train_micro_batch

    def interrupted(self, *batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *batch)

    monkeypatch.setattr(Trainer, "_train_micro_batch", interrupted)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--output", str(out), *_sets([*FAST_RECIPE, "checkpoint_every=1"])]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"interrupted; resume with: fatvit train --resume {out / 'last.pth'}" in err
    assert torch.load(out / "last.pth", weights_only=True)["global_step"] == 2


def test_unreadable_val_images_are_counted_and_other_files_reported(tmp_path, capsys):
    from PIL import Image

    data = make_image_folder(tmp_path / "data")
    (data / "val" / "cat" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (20, 20), (200, 0, 0)).save(data / "train" / "cat" / "anim.gif")
    (data / "train" / "cat" / "readme.txt").write_text("notes")
    (data / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--output", str(out), "--epochs", "1", *_sets(FAST_RECIPE)]
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    # warnings are worded by the command, one line each: not Python's "file.py:N: UserWarning:" and source line
    texts = [line for line in err.splitlines() if line.startswith("fatvit: warning: ")]
    assert any("ignored 1 file(s)" in t and "1 .txt" in t for t in texts), err
    assert any("skipping unreadable image" in t and "broken.png" in t for t in texts), err
    assert "UserWarning" not in err and not re.search(r"\.py:\d+:", err), err
    row = _rows(out / "metrics.csv")[0]
    assert (int(row["val_images"]), int(row["val_skipped_images"])) == (9, 1)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pth"), "--data", str(data), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_images"] == 1
    from fatvit.tasks.classification.data import SafeImageFolder

    assert any(p.endswith("anim.gif") for p, _ in SafeImageFolder(data / "train").samples)


# ----- tracebacks turned into one line ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--lr", "-0.1"], "config key 'lr' must be positive"),
        (["train", "--set", "img_size=0"], "config key 'img_size' must be at least 1"),
        (["train", "--set", "model_kwargs.interaction=foo"], "interaction must be one of"),
        (["train", "--set", "model_kwargs.depth=3"], "cannot build fat_b0"),
        (["train", "--set", "scale=[0.5]"], "config key 'scale' must be [min, max]"),
        (["train", "--set", "amp=fp8"], "config key 'amp' must be one of"),
        (["train", "--set", "opt=adamx"], "unknown optimizer 'adamx'"),
        (["train", "--max-steps", "0"], "argument --max-steps: must be at least 1"),
        (["train", "--epochs", "many"], "argument --epochs: expected an integer"),
        (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["eval", "--checkpoint", "x.pth", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["summary", "--img-size", "0"], "argument --img-size: must be at least 1"),
        (["table"], "the following arguments are required"),
    ],
)
def test_bad_values_are_one_line(capsys, argv, expected):
    assert expected in _error(capsys, argv)


def test_bad_eval_settings_are_one_line(run, capsys, tmp_path):
    _, out, _ = run
    ckpt = ["eval", "--checkpoint", str(out / "last.pth")]
    assert "config key 'interpolation' must be one of" in _error(capsys, [*ckpt, "--interpolation", "foo"])
    assert "unknown config key 'foo'" in _error(capsys, [*ckpt, "--set", "foo=1"])
    assert "model_kwargs.interaction" in _error(capsys, [*ckpt, "--set", "interaction=foo"])
    assert "interaction must be one of" in _error(capsys, [*ckpt, "--set", "model_kwargs.interaction=foo"])
    assert "does not apply to eval" in _error(capsys, [*ckpt, "--set", "lr=0.1"])
    msg = _error(capsys, ["eval", "--model", "fat_b0", "--checkpoint", str(out / "last.pth"), "--set",
                          "model_kwargs.num_classes=10"])  # fmt: skip
    assert "model_kwargs.num_classes cannot be set" in msg
    (tmp_path / "notes.pth").write_text("just text")
    assert "not a PyTorch or safetensors checkpoint" in _error(
        capsys, ["eval", "--checkpoint", str(tmp_path / "notes.pth")]
    )


@pytest.mark.parametrize("where", ["file", "under_file", "unwritable"])
def test_bad_output_places_are_one_line(tmp_path, capsys, where):
    (tmp_path / "f").write_text("a file")
    output = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "run", "unwritable": "/proc/fatvit-run"}[where]
    msg = _error(capsys, ["train", "--output", str(output), "--max-steps", "1", *_sets(FAST_RECIPE)])
    assert str(output) in msg or "/proc" in msg


def test_full_disk_while_saving_keeps_the_old_file_and_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint({"step": 1}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(FatvitError, match=r"cannot write .*last\.pth: No space left on device"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]
    with pytest.raises(FatvitError, match="cannot write"), atomic_write(tmp_path / "x.json", "w") as f:
        f.write("{")
        raise OSError(28, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


# ----- 12. any timm model trains under the same recipe -------------------------------------------------


def test_train_any_timm_model(tmp_path, capsys):
    argv = ["train", "--model", "resnet18", "--output", str(tmp_path / "r"), "--max-steps", "1", "--json",
            "--set", "batch_size=16"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "resnet18" and summary["steps"] == 1
    _, meta = read_checkpoint(tmp_path / "r" / "last.pth")
    assert meta["model"] == "resnet18" and "interaction" not in meta
    assert "unknown model 'resnet_18'; did you mean" in _error(capsys, ["train", "--model", "resnet_18"])


def test_an_output_file_in_a_missing_folder_is_written_there_and_one_under_a_file_is_refused(tmp_path, capsys):
    from fatvit.files import check_output_file

    target = check_output_file(tmp_path / "new" / "sub" / "x.csv", "--csv", overwrite=False)
    assert not (tmp_path / "new").exists()  # nothing is made before the work
    with atomic_write(target, "w") as f:
        f.write("a,b\n")
    assert target.read_text() == "a,b\n" and sorted(p.name for p in target.parent.iterdir()) == ["x.csv"]
    (tmp_path / "f").write_text("not a folder")
    line = _error(capsys, ["export", "--model", "fat_b0", "--output", str(tmp_path / "f" / "x.onnx")])
    assert line == f"fatvit: error: output {tmp_path / 'f'} is a file, not a folder"

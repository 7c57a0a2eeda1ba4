"""`fatvit train` and `fatvit eval` from the command line: results, and one-line errors with exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAST_RECIPE, TINY_MODEL_OVERRIDES, make_image_folder
from conftest import cli_error as _error
from conftest import set_args as _sets
from fatvit.checkpoint import read_state_dict, save_safetensors
from fatvit.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for one epoch on a 3-class folder, through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data = make_image_folder(root / "data")
    out = root / "run"
    assert main(["train", "--data", str(data), "--output", str(out), "--epochs", "1", *_sets(FAST_RECIPE)]) == 0
    return data, out, json.loads((out / "summary.json").read_text())


def test_eval_reads_every_checkpoint_format(trained, tmp_path, capsys):
    data, out, summary = trained
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pth"), "--data", str(data), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours["top1"] == pytest.approx(summary["best_top1"])
    assert ours["images"] == 9 and ours["images_per_s"] > 0 and 0 <= ours["top5"] <= 100
    # the authors' layout and safetensors: the model and its input size come from the command line
    state = read_state_dict(out / "best.pth")
    torch.save({"model": state}, tmp_path / "authors.pth")
    save_safetensors(state, tmp_path / "w.safetensors")
    for path in (tmp_path / "authors.pth", tmp_path / "w.safetensors"):
        argv = ["eval", "--model", "fat_b0", "--checkpoint", str(path), "--data", str(data), "--img-size", "32",
                "--crop-pct", "0.875", "--json", *_sets(TINY_MODEL_OVERRIDES)]  # fmt: skip
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(ours["top1"])


def test_resume_continues_a_run(trained, capsys):
    data, out, summary = trained
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "last.pth"), "--set", "epochs=2"]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["epochs"] == 2 and resumed["steps"] == 2 * summary["steps"]


def test_missing_data_folder(capsys, tmp_path):
    assert "data folder not found" in _error(capsys, ["train", "--data", str(tmp_path / "nope")])


def test_empty_data_folders(capsys, tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    assert "no images in" in _error(capsys, ["train", "--data", str(tmp_path / "d")])
    (tmp_path / "d" / "train" / "cat").mkdir()
    (tmp_path / "d" / "val" / "cat").mkdir()
    assert "no images in" in _error(capsys, ["train", "--data", str(tmp_path / "d")])
    (tmp_path / "e").mkdir()
    assert "has no train/ folder" in _error(capsys, ["train", "--data", str(tmp_path / "e")])


def test_class_in_train_but_not_in_val(capsys, tmp_path):
    data = make_image_folder(tmp_path / "d", n_train=2, n_val=1)
    for f in (data / "val" / "owl").iterdir():
        f.unlink()
    (data / "val" / "owl").rmdir()
    assert "in train but not in val: owl" in _error(capsys, ["train", "--data", str(data)])


def test_checkpoint_of_another_model(trained, capsys, tmp_path):
    data, _, _ = trained
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, tmp_path / "other.pth")
    msg = _error(
        capsys, ["eval", "--model", "fat_b0", "--checkpoint", str(tmp_path / "other.pth"), "--data", str(data)]
    )
    assert "does not fit" in msg and "missing keys" in msg
    argv = ["train", "--data", str(data), "--finetune", str(tmp_path / "other.pth"), *_sets(FAST_RECIPE)]
    assert "does not fit" in _error(capsys, argv)


def test_checkpoint_with_another_number_of_classes(trained, capsys, tmp_path):
    _, out, _ = trained
    two = make_image_folder(tmp_path / "two", classes=("a", "b"), n_train=2, n_val=1)
    msg = _error(capsys, ["eval", "--checkpoint", str(out / "best.pth"), "--data", str(two)])
    assert "classifies 3 classes" in msg and "has 2" in msg
    argv = ["train", "--resume", str(out / "best.pth"), "--data", str(two), "--epochs", "2"]
    assert "other classes" in _error(capsys, argv)


def test_not_a_training_checkpoint(trained, capsys, tmp_path):
    _, out, _ = trained
    save_safetensors(read_state_dict(out / "best.pth"), tmp_path / "w.safetensors")
    torch.save(read_state_dict(out / "best.pth"), tmp_path / "bare.pth")
    assert "not a fatvit training checkpoint" in _error(capsys, ["train", "--resume", str(tmp_path / "bare.pth")])
    assert "not found" in _error(capsys, ["train", "--resume", str(tmp_path / "missing.pth")])


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(trained, capsys, tmp_path):
    data, _, _ = trained
    out = tmp_path / "nan"
    recipe = [*FAST_RECIPE, "epochs=1", "checkpoint_every=1", "lr=inf"]  # lr last: --set items apply in order
    argv = ["train", "--data", str(data), "--output", str(out), *_sets(recipe)]
    msg = _error(capsys, argv)
    assert "loss is nan at step" in msg and str(out) in msg
    step = int(msg.split("at step ")[1].split()[0])
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["global_step"] == step - 1


def test_unknown_model_and_config_key(capsys):
    assert "unknown model 'fat-b1'; did you mean 'fat_b1'?" in _error(capsys, ["train", "--model", "fat-b1"])
    assert "unknown config key 'lrate'; did you mean 'lr'?" in _error(capsys, ["train", "--set", "lrate=0.1"])
    assert "expects float" in _error(capsys, ["train", "--set", "lr=fast"])
    assert "not of the form key=value" in _error(capsys, ["train", "--set", "lr"])
    assert "unknown recipe 'no_such_recipe'" in _error(capsys, ["train", "--config", "no_such_recipe"])


def test_errors_exit_1_without_traceback_from_a_shell(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fatvit", "train", "--data", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("fatvit: error: data folder not found")


def test_every_stop_writes_the_same_files_and_the_summary_names_only_existing_ones(tmp_path, capsys):
    """A --max-steps stop before any evaluation: last.pth, model.safetensors, config.json and summary.json, whose file
    entries are the files there (null for best.pth, metrics.csv and the curves, which need an evaluation)."""
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--output", str(out), "--epochs", "2", *_sets(FAST_RECIPE)]
    assert main([*argv, "--max-steps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["finished"]
    assert {p.name for p in out.iterdir()} == {"last.pth", "model.safetensors", "config.json", "summary.json",
                                               "steps.csv", "tensorboard"}  # fmt: skip
    assert summary["checkpoints"] == dict(last=str(out / "last.pth"), best=None,
                                          safetensors=str(out / "model.safetensors"),
                                          timm_config=str(out / "config.json"))  # fmt: skip
    assert (summary["metrics_csv"], summary["plot"], summary["steps_csv"]) == (None, None, str(out / "steps.csv"))
    capsys.readouterr()
    assert main(["predict", str(data / "val"), "--checkpoint", str(out / "model.safetensors"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 9  # the stopped run's weights are usable as they are
    assert main(["train", "--resume", str(out / "last.pth")]) == 0  # to the end: every file, all named
    summary = json.loads((out / "summary.json").read_text())
    named = [summary["metrics_csv"], summary["plot"], summary["steps_csv"], *summary["checkpoints"].values()]
    assert summary["finished"] and all(name is not None and Path(name).exists() for name in named)

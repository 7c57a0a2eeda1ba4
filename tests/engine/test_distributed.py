"""Two CPU processes under torchrun (DDP, Gloo) stay in sync, and the global batch sets the learning rate."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import FAST_RECIPE, REPO, make_image_folder


def _torchrun(*args: str, env_extra=None) -> subprocess.CompletedProcess:
    # the worker imports conftest, which lives in tests/
    path = os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def test_two_processes_stay_in_sync(tmp_path):
    data = make_image_folder(tmp_path / "data")
    proc = _torchrun(str(REPO / "tests" / "engine" / "ddp_worker.py"), str(tmp_path), str(data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [i["world_size"] for i in infos] == [2, 2]
    # global batch = 2 per process x 2 processes; lr = 0.004 per 512 images, scaled linearly
    assert infos[0]["global_batch"] == 4
    assert infos[0]["lr"] == infos[1]["lr"] == 0.004 * 4 / 512
    assert infos[0]["steps"] == 4
    # each process trained on its own half of the data
    assert not set(infos[0]["shard"]) & set(infos[1]["shard"])
    for name, value in states[0]["final"].items():
        assert torch.equal(value, states[1]["final"][name]), name  # same parameters after the steps
    assert states[0]["initial"]["head.weight"].equal(states[1]["initial"]["head.weight"])
    assert not states[0]["final"]["head.weight"].equal(states[0]["initial"]["head.weight"])  # it trained
    # only rank 0 writes the run's files
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and (tmp_path / "run" / "last.pth").is_file()


def test_cli_under_torchrun(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    sets = [a for item in [*FAST_RECIPE, "epochs=1", "batch_size=2"] for a in ("--set", item)]
    proc = _torchrun("-m", "fatvit", "train", "--data", str(data), "--output", str(tmp_path / "run"), "--json", *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"] and summary["global_batch"] == 4
    assert summary["steps"] == 6  # 24 images / 2 processes / batch 2
    assert proc.stdout.count('"world_size": 2') == 1  # printed once, by rank 0
    # the reported metrics are exact: over the 9 real val images (not padded to 10), for the saved weights
    with open(tmp_path / "run" / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    assert int(row["val_images"]) == 9
    from fatvit.cli import main

    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "last.pth"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 9
    assert result["top1"] == pytest.approx(float(row["val_top1"])) and result["loss"] == pytest.approx(
        float(row["val_loss"]), rel=1e-4
    )


def test_two_processes_train_a_detector_in_sync(tmp_path):
    """Mask R-CNN under 2-process Gloo DDP: the same weights on both ranks after the steps, each rank on its own
    half of the images; the evaluation (COCOeval on the gathered detections) runs on every rank."""
    from fatvit.tasks.scenes import write_digit_scenes

    scenes = write_digit_scenes(tmp_path / "scenes", train=8, val=2, size=64)
    proc = _torchrun(str(REPO / "tests" / "engine" / "ddp_worker.py"), str(tmp_path), str(scenes / "coco"), "detect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [i["steps"] for i in infos] == [4, 4] and infos[0]["global_batch"] == 4
    assert not set(infos[0]["shard"]) & set(infos[1]["shard"])
    for name, value in states[0]["final"].items():
        assert torch.equal(value, states[1]["final"][name]), name
    head = "roi_heads.box_predictor.cls_score.weight"
    assert not states[0]["final"][head].equal(states[0]["initial"][head])  # it trained
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and set(summary["final_metrics"]) >= {"bbox_AP", "segm_AP"}

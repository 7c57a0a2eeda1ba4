"""`fatvit predict` and `fatvit.predict`: top-k records from a checkpoint's own classes and preprocessing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import cli_error, write_held_out_digits
from fatvit.cli import main
from fatvit.tasks.classification.predict import find_images, predict


def _records(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_held_out_digits_are_classified_as_the_run_evaluated_them(digits_run, tmp_path, capsys):
    """Every held-out digit written to disk: predict's top-1 hits equal the run's own final top-1, exactly."""
    out, summary = digits_run
    labels = write_held_out_digits(tmp_path / "digits")
    records = _records(capsys, ["predict", str(tmp_path / "digits"), "--checkpoint", str(out / "last.pth"), "--json"])
    assert [Path(r["path"]).name for r in records] == [f"{i:03d}.png" for i in range(len(labels))]
    hits = sum(r["topk"][0]["class"] == str(label) for r, label in zip(records, labels))
    assert hits == round(summary["final_top1"] * len(labels) / 100)
    assert hits / len(labels) >= 0.85
    for r in records:
        probs = [hit["prob"] for hit in r["topk"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # the library returns the same records, from the safetensors export too
    same = predict(out / "model.safetensors", tmp_path / "digits")
    assert [r["path"] for r in same] == [r["path"] for r in records]
    for a, b in zip(same, records):
        assert [h["class"] for h in a["topk"]] == [h["class"] for h in b["topk"]]
        assert [h["prob"] for h in a["topk"]] == pytest.approx([h["prob"] for h in b["topk"]], abs=1e-5)


def test_table_csv_and_topk(digits_run, tmp_path, capsys):
    out, _ = digits_run
    write_held_out_digits(tmp_path / "d", count=3)
    images = [str(tmp_path / "d" / f"00{i}.png") for i in range(3)]
    assert main(["predict", *images, "--checkpoint", str(out / "best.pth"), "--topk", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "#1", "#2"] and len(table) == 2 + 3
    assert table[2].startswith(images[0]) and table[2].endswith("%")
    csv_path = tmp_path / "p.csv"
    argv = ["predict", *images, "--checkpoint", str(out / "best.pth"), "--topk", "20", "--csv", str(csv_path), "--json"]
    records = _records(capsys, argv)
    assert all(len(r["topk"]) == 10 for r in records)  # at most the number of classes
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == images
    assert list(rows[0]) == ["path"] + [f"{k}_{i}" for i in range(1, 11) for k in ("class", "prob")]
    assert rows[1]["class_1"] == records[1]["topk"][0]["class"]
    assert float(rows[1]["prob_1"]) == pytest.approx(records[1]["topk"][0]["prob"])
    # an existing CSV is kept unless --overwrite
    assert "exists; give --overwrite" in cli_error(capsys, argv)
    assert main([*argv, "--overwrite"]) == 0


def test_unreadable_files_are_reported_and_skipped(digits_run, tmp_path, capsys):
    out, _ = digits_run
    write_held_out_digits(tmp_path / "d", count=2)
    (tmp_path / "d" / "notes.png").write_text("not an image")
    (tmp_path / "d" / "cut.png").write_bytes((tmp_path / "d" / "000.png").read_bytes()[:40])
    (tmp_path / "d" / "readme.txt").write_text("ignored: not an image suffix inside a folder")
    assert main(["predict", str(tmp_path / "d"), "--checkpoint", str(out / "last.pth"), "--json"]) == 0
    captured = capsys.readouterr()
    assert [Path(r["path"]).name for r in json.loads(captured.out)] == ["000.png", "001.png"]
    skipped = [line for line in captured.err.splitlines() if line.startswith("fatvit: skipping unreadable image")]
    assert len(skipped) == 2 and any("notes.png" in s for s in skipped) and any("cut.png" in s for s in skipped)
    # nothing readable at all: an error
    msg = cli_error(capsys, ["predict", str(tmp_path / "d" / "notes.png"), "--checkpoint", str(out / "last.pth")])
    assert "none of the images could be read" in msg


def test_bad_inputs_are_one_line(digits_run, tmp_path, capsys):
    out, _ = digits_run
    ckpt = ["--checkpoint", str(out / "last.pth")]
    assert "image not found" in cli_error(capsys, ["predict", str(tmp_path / "missing.png"), *ckpt])
    (tmp_path / "empty").mkdir()
    assert "no images in" in cli_error(capsys, ["predict", str(tmp_path / "empty"), *ckpt])
    write_held_out_digits(tmp_path / "d", count=1)
    image = str(tmp_path / "d" / "000.png")
    assert "must be at least 1" in cli_error(capsys, ["predict", image, *ckpt, "--topk", "0"])
    assert "does not apply to predict" in cli_error(capsys, ["predict", image, *ckpt, "--set", "data=x"])
    assert "checkpoint not found" in cli_error(capsys, ["predict", image, "--checkpoint", str(tmp_path / "no.pth")])
    (tmp_path / "out.csv").mkdir()
    assert "is a folder" in cli_error(capsys, ["predict", image, *ckpt, "--csv", str(tmp_path / "out.csv")])


@pytest.mark.filterwarnings("ignore::fatvit.models.fat.InteractionMismatchWarning")  # a bare state dict records none
def test_a_checkpoint_without_class_names(digits_run, tmp_path, capsys):
    """A bare state dict (as the authors' files) records no classes: an error naming --classes, which supplies them."""
    out, _ = digits_run
    from fatvit.checkpoint import read_checkpoint

    state_dict, meta = read_checkpoint(out / "last.pth")
    bare = tmp_path / "bare.pth"
    torch.save(state_dict, bare)
    write_held_out_digits(tmp_path / "d", count=2)
    image = str(tmp_path / "d" / "000.png")
    model = [f"--set=model_kwargs.{k}={v}" for k, v in meta["model_kwargs"].items()]
    prep = ["--img-size", "32", "--crop-pct", "1.0", *model]
    msg = cli_error(capsys, ["predict", image, "--checkpoint", str(bare), *prep])
    assert "records no class names" in msg and "--classes FILE" in msg and "10 lines" in msg
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    records = _records(capsys, ["predict", image, "--checkpoint", str(bare), *prep, "--classes", str(names), "--json"])
    ours = _records(capsys, ["predict", image, "--checkpoint", str(out / "last.pth"), "--json"])
    assert records[0]["topk"][0]["class"] == f"digit {ours[0]['topk'][0]['class']}"
    assert records[0]["topk"][0]["prob"] == pytest.approx(ours[0]["topk"][0]["prob"], abs=1e-6)
    names.write_text("a\nb\n")
    msg = cli_error(capsys, ["predict", image, "--checkpoint", str(bare), *prep, "--classes", str(names)])
    assert "classifies 10 classes, but 2 class names were given" in msg


def test_find_images_order_and_hidden_files(tmp_path):
    for name in ("b/2.png", "a/1.jpg", ".hidden/3.png", "a/.4.png", "c.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])] == ["a/1.jpg", "b/2.png"]
    # a file named directly is always tried, whatever its suffix
    assert find_images([tmp_path / "c.txt"]) == [tmp_path / "c.txt"]


def test_eval_finds_an_evaluation_folder_and_names_it(digits_run, tmp_path, capsys):
    """A root with evaluation/<class>/* (timm's name) is evaluated on that folder, which the log names."""
    out, summary = digits_run
    labels = write_held_out_digits(tmp_path / "flat")
    for i, label in enumerate(labels):
        (tmp_path / "root" / "evaluation" / str(label)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "flat" / f"{i:03d}.png").rename(tmp_path / "root" / "evaluation" / str(label) / f"{i:03d}.png")
    assert main(["eval", "--checkpoint", str(out / "last.pth"), "--data", str(tmp_path / "root"), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"fatvit: evaluating on {tmp_path / 'root' / 'evaluation'}" in captured.err
    assert json.loads(captured.out)["top1"] == pytest.approx(summary["final_top1"])

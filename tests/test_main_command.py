"""The README's main job: `fatvit train` on the embedded digits set reaches at least 90% top-1."""

from __future__ import annotations

import json

from fatvit.cli import main


def test_default_training_reaches_90_percent(tmp_path, capsys):
    assert main(["train", "--output", str(tmp_path / "digits")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "digits" / "summary.json").read_text())
    assert summary["model"] == "fat_b0" and summary["finished"]
    assert summary["final_top1"] >= 90.0, summary
    assert f"top-1 {summary['final_top1']:.2f}%" in out  # the result is printed
    print(f"digits: top-1 {summary['final_top1']:.2f}% in {summary['train_seconds']:.0f}s of training")

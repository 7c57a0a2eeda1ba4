"""The README's main job, as written: `fatvit train` in a fresh copy of the checkout reaches at least 90% top-1."""

from __future__ import annotations

import json

from conftest import fatvit_argv, fresh_copy, readme_examples
from fatvit.cli import main


def test_the_main_job_as_written_reaches_90_percent(tmp_path, capsys, monkeypatch):
    first = next(c for _, kind, c in readme_examples() if kind == "bash")  # the README's first line
    argv = fatvit_argv(first)
    assert argv == ["train"]
    monkeypatch.chdir(fresh_copy(tmp_path / "checkout"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    (run,) = (tmp_path / "checkout" / "runs").iterdir()  # runs/<model>-<time>, the default output
    summary = json.loads((run / "summary.json").read_text())
    assert run.name.startswith("fat_b0-") and summary["model"] == "fat_b0" and summary["finished"]
    assert summary["final_top1"] >= 90.0, summary
    assert f"top-1 {summary['final_top1']:.2f}%" in out  # the result is printed
    print(f"digits: top-1 {summary['final_top1']:.2f}% in {summary['train_seconds']:.0f}s of training")

"""The fatvit command: help texts, and one-line errors with exit code 1."""

from __future__ import annotations

import subprocess
import sys

from fatvit.cli import main


def test_help_lists_verbs(capsys):
    assert main(["--help"]) == 0
    assert "summary" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "fat_b0_released" in out and "--overwrite" in out  # the recipes are named in the help


def test_argparse_errors_are_one_line_with_exit_1():
    proc = subprocess.run([sys.executable, "-m", "fatvit", "train", "--epochs", "x"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "fatvit: error: argument --epochs: expected an integer, got 'x' (see 'fatvit train --help')"
    ]


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "fatvit", "--help"], capture_output=True, text=True, check=True)
    assert "usage: fatvit" in out.stdout

"""The fatvit command: help texts, and one-line errors with exit code 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fatvit.cli import main


def test_help_lists_verbs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "summary" in capsys.readouterr().out


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "fatvit", "--help"], capture_output=True, text=True, check=True)
    assert "usage: fatvit" in out.stdout

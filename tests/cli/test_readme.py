"""The README's commands as a newcomer meets them, on a fresh copy of the checkout.

Every ``fatvit`` command in its shell blocks is a valid command line. Those
that name no placeholder run exactly as written, in the README's order, with
the README's Python examples between them, in a copy of the checkout's files:
each must succeed and write only under ``runs/``. The classification examples
run here (about two minutes); the three long trainings of the embedded sets
and what follows them run in the ``slow`` test (the fast tests of training,
detection and segmentation cover the same behaviour, and the main job,
``fatvit train``, runs as written in ``test_main_command.py``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import REPO, Example, fatvit_argv, fresh_copy, readme_examples
from fatvit.cli import build_parser

#: What marks a template: a command whose data or files are the reader's own.
PLACEHOLDERS = ("/path/to/", "...", "fat_b0.pth")
PLACEHOLDER_WORDS = ("DIR",)

#: The sections whose commands the fast test runs (with every Python example); the others' run in the slow one.
QUICK_SECTIONS = ("## Predictions and explanations", "## Speed: deployment, ONNX and benchmarks")


def is_template(command: str) -> bool:
    words = shlex.split(command)
    return any(p in command for p in PLACEHOLDERS) or any(w in PLACEHOLDER_WORDS for w in words)


def test_every_readme_command_is_a_valid_command_line():
    commands = [c for _, kind, c in readme_examples() if kind == "bash"]
    argvs = [fatvit_argv(c) for c in commands]
    assert sum(a is not None for a in argvs) >= 25
    for command, argv in zip(commands, argvs):
        if argv is None:
            assert command.startswith("python3 -m venv .venv && .venv/bin/pip install"), command
            continue
        try:
            build_parser(argv).parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"the README's {command!r} is not a valid command line (exit {exit_.code})")


def test_the_readme_test_command_is_what_ci_runs():
    setup = [c for _, kind, c in readme_examples() if kind == "bash" and c.startswith("python3 -m venv")]
    assert len(setup) == 2 and setup[0].endswith(".venv/bin/fatvit train")
    assert (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1] == setup[1]


def _shell_env(tmp_path: Path) -> Dict[str, str]:
    """The environment the commands run in: ``fatvit`` on the PATH (the installed console script, else a shim
    running ``python -m fatvit``)."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "fatvit").is_file():
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "fatvit"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fatvit "$@"\n')
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _snapshot(root: Path) -> Dict[str, Tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def run_examples(examples: List[Example], checkout: Path, env: Dict[str, str]) -> None:
    """Run ``examples`` in ``checkout`` as a reader would, each exactly as written; every one must succeed and
    leave the files outside ``runs/`` as they were."""
    before = _snapshot(checkout)
    for _, kind, text in examples:
        argv = ["bash", "-c", text] if kind == "bash" else [sys.executable, "-c", text]
        proc = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"README example failed as written:\n{text}\n{proc.stderr[-3000:]}"
    after = {k: v for k, v in _snapshot(checkout).items() if not k.startswith("runs/")}
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:10]


def _runnable(quick: bool) -> List[Example]:
    """The examples that name no placeholder: the Python blocks and the quick sections' commands, or the others."""
    chosen = []
    for section, kind, text in readme_examples():
        if kind == "bash" and (text.startswith("python3 -m venv") or fatvit_argv(text) is None or is_template(text)):
            continue  # the set-up lines (what CI runs, and test_main_command's job) and the templates
        if kind == "python" and any(p in text for p in PLACEHOLDERS):
            continue
        if (kind == "python" or section in QUICK_SECTIONS) == quick:
            chosen.append((section, kind, text))
    return chosen


def test_the_classification_examples_run_as_written_in_a_fresh_copy(tmp_path):
    examples = _runnable(quick=True)
    commands = [fatvit_argv(c)[0] for _, kind, c in examples if kind == "bash"]
    assert commands == ["train", "predict", "predict", "explain", "export", "export", "eval", "eval", "predict",
                        "export", "benchmark"]  # fmt: skip
    assert sum(kind == "python" for _, kind, _ in examples) == 4
    checkout = fresh_copy(tmp_path / "checkout")
    run_examples(examples, checkout, _shell_env(tmp_path))
    runs = checkout / "runs"
    made_files = (
        "digits64/model.safetensors",
        "predictions.csv",
        "explain/digit_7_explain.png",
        "fat_b0.onnx",
        "digits.onnx",
        "digits64-timm/config.json",
        "digits64-timm/model.safetensors",
        "latency.png",
    )
    for made in made_files:
        assert (runs / made).is_file(), made


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_other_examples_run_as_written_in_a_fresh_copy(tmp_path):
    """The main job and the dense examples (three trainings of about 4, 7 and 7 minutes on 2 cores)."""
    examples = _runnable(quick=False)
    commands = [" ".join(fatvit_argv(c)[:2]) for _, kind, c in examples if kind == "bash"]
    assert commands[0] == "train" and "detect predict" in commands and "segment predict" in commands
    checkout = fresh_copy(tmp_path / "checkout")
    run_examples(examples, checkout, _shell_env(tmp_path))
    assert len(list((checkout / "runs" / "detected").glob("*.png"))) == 2
    assert len(list((checkout / "runs" / "segmented").glob("*.png"))) == 2

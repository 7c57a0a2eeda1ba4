"""The fatvit command: help texts, and one-line errors with exit code 1."""

from __future__ import annotations

import subprocess
import sys

from conftest import cli_error
from fatvit.cli import VERBS, main


def _help(capsys, argv) -> str:
    assert main([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # argparse's line breaks undone


def test_help_lists_verbs(capsys):
    assert "summary" in _help(capsys, [])
    out = _help(capsys, ["train"])
    assert "digits, imagenet, released or, for every FAT size NAME" in out and "NAME_released" in out
    assert "--overwrite" in out


def test_help_texts_give_defaults_and_allowed_values(capsys):
    out = _help(capsys, ["train"])
    assert "--epochs N the run's length in epochs (config key epochs; default: 8 with recipe digits, 300 with " \
        "recipe imagenet)" in out  # fmt: skip
    assert "--seed N the random seed (config key seed; default: 0)" in out
    assert "mixed precision: auto, none, bf16, fp16" in out and "(config key amp; default: auto)" in out
    assert "--output DIR the run folder (config key output; default: runs/<model>-<time>)" in out
    assert "config key" in out and "(default: the run's length)" in out
    out = _help(capsys, ["detect", "train"])
    assert "default: 6 with recipe digit_scenes_detect, 12 with recipe coco_retinanet_1x" in out
    assert "--model NAME the model to train: one of retinanet_fat_b0," in out
    out = _help(capsys, ["segment", "train"])
    assert "(config key iterations; default: null with recipe digit_scenes_segment, 80000 with recipe " \
        "ade20k_semantic_fpn)" in out  # fmt: skip
    assert "--json print the result as JSON (keys model, checkpoint, data, top1" in _help(capsys, ["eval"])
    assert "in [0, 1] (default: 0.5)" in _help(capsys, ["detect", "predict"])
    workers = "data loading processes (default: 4, at most the cores available)"
    assert workers in _help(capsys, ["detect", "eval"]) and workers in _help(capsys, ["segment", "eval"])
    assert "config key workers (default: 4, at most the cores available)" in _help(capsys, ["eval"])
    assert "config key workers (default: 0, images read in this process)" in _help(capsys, ["predict"])


def test_an_unknown_flag_names_the_help_page_of_the_verb_given(capsys):
    assert cli_error(capsys, ["train", "--bogus", "1"]) == (
        "fatvit: error: unrecognized arguments: --bogus 1 (see 'fatvit train --help')"
    )
    line = cli_error(capsys, ["detect", "train", "--img-size", "64"])
    assert line.startswith("fatvit: error: unrecognized arguments: --img-size 64 (detection images are resized by ")
    assert "--set min_size=N" in line and line.endswith("(see 'fatvit detect train --help')")
    line = cli_error(capsys, ["segment", "train", "--img-size=64"])
    assert "--set crop_size=N" in line and line.endswith("(see 'fatvit segment train --help')")
    assert cli_error(capsys, ["segment", "eval", "--checkpoint", "x", "--bogus"]).endswith(
        "(see 'fatvit segment eval --help')"
    )


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_help_and_argument_errors_load_neither_torch_nor_other_verbs():
    """What makes ``fatvit --help`` answer at once (timed by benchmarks/cli_startup.py): the package and the
    parser of the given verb import no torch, timm or torchvision."""
    helps = [[verb, "--help"] for verb in VERBS] + [[dense, action, "--help"] for dense in ("detect", "segment")
                                                    for action in ("train", "eval", "predict", "export")]  # fmt: skip
    errors = [["trian"], ["train", "--epochs", "x"], ["eval", "--bogus"], ["detect", "train", "--img-size", "3"],
              ["segment", "eval"], ["export", "--opset", "x"], ["benchmark", "--modes", "x"], ["table", "x"],
              ["summary", "--img-size", "0"]]  # fmt: skip
    for argv in [["--help"], *helps, *errors]:
        loaded = _fresh_python(
            "import contextlib, io, sys\n"
            "from fatvit.cli import VERBS, main\n"
            f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    main({argv!r})\n"
            "verbs = [f'fatvit.cli.{v}' for v in VERBS]\n"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', *verbs) if m in sys.modules))"
        )
        given = [f"fatvit.cli.{argv[0]}"] if argv[0] in VERBS else []
        uses_train = ["fatvit.cli.train"] if argv[0] in ("detect", "segment") else []  # its training flags
        assert loaded == str(sorted(given + uses_train)), argv


def test_importing_the_package_registers_the_models_with_timm_however_timm_comes():
    checks = {
        "import fatvit, timm": "import fatvit, timm",
        "timm first": "import timm, fatvit",
        "through a submodule that imports timm": "import fatvit.layers, timm",
        "timm.models": "import fatvit; from timm.models import is_model as _",
    }
    for what, code in checks.items():
        out = _fresh_python(f"{code}\nimport sys, timm\nprint(timm.is_model('fat_b0'), timm.is_model('fat_b3_st'), "
                            "[f for f in sys.meta_path if type(f).__module__ == 'fatvit'])")  # fmt: skip
        assert out == "True True []", what
    names = "print(fatvit.FAT.__name__, fatvit.deploy.__name__, sorted(set(fatvit.__all__) - set(dir(fatvit))))"
    assert _fresh_python(f"import fatvit; {names}") == "FAT deploy []"
    assert _fresh_python("import fatvit, sys; print('torch' in sys.modules)") == "False"
    # a submodule named as a public name leaves the name to the function, as an eager import did
    assert _fresh_python("import fatvit.deploy, fatvit; print(type(fatvit.deploy).__name__)") == "function"


def test_argparse_errors_are_one_line_with_exit_1():
    proc = subprocess.run([sys.executable, "-m", "fatvit", "train", "--epochs", "x"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "fatvit: error: argument --epochs: expected an integer, got 'x' (see 'fatvit train --help')"
    ]


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "fatvit", "--help"], capture_output=True, text=True, check=True)
    assert "usage: fatvit" in out.stdout

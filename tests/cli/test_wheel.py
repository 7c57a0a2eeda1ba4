"""fatvit installed from a wheel, away from the checkout: the recipes travel inside the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO
from fatvit.tasks.scenes import SCENES_VERSION


def scenes_cache_of(base: Path) -> Path:
    return base / f"digit_scenes-v{SCENES_VERSION}"


def test_wheel_in_a_clean_venv_trains(tmp_path):
    # build from a copy, so that the checkout gets no build/ or egg-info
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "tests",
                                                             "__pycache__", ".*_cache"))  # fmt: skip
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    wheel = next(wheels.glob("fatvit-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the new venv sees the installed dependencies (torch, timm, ...) but not this checkout
    deps = sysconfig.get_paths()["purelib"]
    Path(target, "deps.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(python), "-c", "import fatvit; print(fatvit.__file__)"], cwd=work, env=env, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert where.startswith(target), where  # the wheel's copy, not the checkout's
    proc = subprocess.run(
        [str(venv / "bin" / "fatvit"), "train", "--max-steps", "2", "--output", "run", "--json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 2
    ckpt_config = json.loads((work / "run" / "summary.json").read_text())
    assert ckpt_config["model"] == "fat_b0"
    # the digits recipe, not the ImageNet one: 32 px, batch 64
    assert summary["global_batch"] == 64
    named = subprocess.run(
        [str(venv / "bin" / "fatvit"), "train", "--config", "no_such_recipe"], cwd=work, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert named.returncode == 1 and "unknown recipe 'no_such_recipe'" in named.stderr
    # the dense tasks' recipes and embedded scenes work from the wheel too
    dense = subprocess.run(
        [str(venv / "bin" / "fatvit"), "segment", "train", "--max-steps", "1", "--output", "seg", "--json"],
        cwd=work, env={**env, "FATVIT_CACHE": str(tmp_path / "cache")}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert dense.returncode == 0, dense.stderr[-2000:]
    assert json.loads(dense.stdout)["steps"] == 1 and (scenes_cache_of(tmp_path / "cache") / "ade").is_dir()

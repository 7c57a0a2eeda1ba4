"""Shared fixtures: the authors' reference outputs (copied from shared/reference into tests/data), small data sets."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "tests" / "data"

torch.set_num_threads(2)


def _checkout_files() -> set:
    """Files in the checkout that git would report (untracked, not ignored), and anything under runs/."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return set()
    runs = {str(p.relative_to(REPO)) for p in (REPO / "runs").rglob("*")} if (REPO / "runs").exists() else set()
    return {line[3:] for line in out.splitlines() if line.startswith("??")} | runs


@pytest.fixture(scope="session", autouse=True)
def scenes_cache(tmp_path_factory):
    """The embedded digit scenes of the dense tasks are written under a temporary cache, not ~/.cache."""
    import os

    old = os.environ.get("FATVIT_CACHE")
    os.environ["FATVIT_CACHE"] = str(tmp_path_factory.mktemp("fatvit_cache"))
    yield
    if old is None:
        os.environ.pop("FATVIT_CACHE", None)
    else:
        os.environ["FATVIT_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def leaves_nothing_behind():
    """The suite must not leave files in the checkout (runs/, build outputs, stray files)."""
    before = _checkout_files()
    yield
    left = _checkout_files() - before
    assert not left, f"the tests left files in the checkout: {sorted(left)[:10]}"


def _reference_module():
    path = REFERENCE_DIR / "reference_weights.py"
    if not path.is_file():
        pytest.fail(f"reference data not found at {REFERENCE_DIR}")
    spec = importlib.util.spec_from_file_location("reference_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference(name: str):
    """(manifest, state_dict, [(input, case), ...]) of reference model ``name``."""
    ref = _reference_module()
    manifest = json.loads((REFERENCE_DIR / f"{name}_manifest.json").read_text())
    state_dict = ref.make_state_dict(manifest["keys"], manifest["seed"])
    cases = torch.load(REFERENCE_DIR / f"{name}_outputs.pt", weights_only=True)
    g = torch.Generator().manual_seed(manifest["seed"] + 1)
    inputs = [torch.randn(case["input_shape"], generator=g) for case in cases]
    return manifest, state_dict, list(zip(inputs, cases))


@pytest.fixture(scope="session")
def tiny_reference():
    return load_reference("tiny")


# a small FAT for fast behavioural tests (the reference 'tiny' configuration)
TINY_ARGS = dict(
    embed_dims=(16, 32, 48, 64),
    depths=(1, 2, 2, 1),
    num_heads=(1, 2, 3, 4),
    num_classes=10,
)


def make_image_folder(root: Path, classes=("cat", "dog", "owl"), n_train: int = 8, n_val: int = 3) -> Path:
    """An ImageNet-style folder of small synthetic images in every format we promise to read.

    Each class has its own colour pattern, so a model can learn it.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    formats = [("RGB", ".jpg"), ("RGB", ".png"), ("RGB", ".webp"), ("L", ".png"), ("P", ".png"), ("RGBA", ".png"),
               ("CMYK", ".jpg")]  # fmt: skip
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((36, 36, 3), np.uint8)
                base[..., c % 3] = 200
                base[:: 2 + c, :, (c + 1) % 3] = 120
                noisy = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
                mode, ext = formats[(i + c) % len(formats)]
                Image.fromarray(noisy).convert(mode).save(folder / f"{i}{ext}")
    return root


TINY_MODEL_OVERRIDES = [
    "model_kwargs.embed_dims=[16, 32, 48, 64]",
    "model_kwargs.depths=[1, 2, 2, 1]",
    "model_kwargs.num_heads=[1, 2, 3, 4]",
]

# a fast recipe for behavioural tests: tiny model, small images, one worker-less process
FAST_RECIPE = [
    *TINY_MODEL_OVERRIDES,
    "img_size=32",
    "batch_size=4",
    "workers=0",
    "warmup_epochs=1",
    "lr=0.004",
    "log_every=1",
]


def set_args(items):
    """``--set`` arguments for a list of ``key=value`` items."""
    return [arg for item in items for arg in ("--set", item)]


def cli_error(capsys, argv):
    """Run the CLI expecting a user error: exit code 1 and one line on stderr, no traceback; returns the line."""
    from fatvit.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("fatvit: error: ")]
    assert code == 1, err
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err  # progress bars may come before it
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small FAT trained on the embedded digits set (3 epochs, about 15 s): its output folder and summary."""
    from fatvit.cli import main

    out = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", "--output", str(out), "--epochs", "3", *set_args(TINY_MODEL_OVERRIDES)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def write_held_out_digits(folder: Path, count: int | None = None) -> list:
    """The digits set's held-out images as PNG files ``<index>.png``; returns their labels in order."""
    from fatvit.tasks.classification.data import digits_splits

    folder.mkdir(parents=True, exist_ok=True)
    _, val = digits_splits()
    labels = []
    for i in range(len(val) if count is None else count):
        img, label = val[i]
        img.save(folder / f"{i:03d}.png")
        labels.append(label)
    return labels


def fresh_copy(folder: Path) -> Path:
    """The checkout's files (tracked and new, not ignored: what a clone of a commit of them holds) copied into
    ``folder``; outside a git checkout, the source tree without build outputs."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        ignore = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".*cache")
        shutil.copytree(REPO, folder, ignore=ignore)
        return folder
    for name in filter(None, listed):
        if (REPO / name).is_file():  # a file deleted but not yet committed is listed and absent
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    return folder


README = REPO / "README.md"

Example = Tuple[str, str, str]  # (section, "bash" or "python", the command or code)


def readme_examples() -> List[Example]:
    """Every shell command (comments dropped) and Python block of the README, in order, with its section."""
    examples: List[Example] = []
    section = ""
    for part in re.split(r"(^## .*$)", README.read_text(), flags=re.M):
        if part.startswith("## "):
            section = part.strip()
            continue
        for kind, body in re.findall(r"```(bash|python)\n(.*?)```", part, re.S):
            if kind == "python":
                examples.append((section, kind, body))
                continue
            for line in body.splitlines():
                command = line.split(" #", 1)[0].strip()
                if command:
                    examples.append((section, kind, command))
    return examples


def fatvit_argv(command: str) -> Optional[List[str]]:
    """The arguments a shell command gives ``fatvit`` (``fatvit ...``, ``.venv/bin/fatvit ...`` after ``&&``,
    ``torchrun ... -m fatvit ...``), or None if it runs no fatvit command."""
    words = shlex.split(command.split("&&")[-1])
    if words and Path(words[0]).name == "fatvit":
        return words[1:]
    if words and words[0] == "torchrun" and "-m" in words and words[words.index("-m") + 1] == "fatvit":
        return words[words.index("-m") + 2 :]
    return None


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm statistics and affine values far from the identity, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=g) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.5)
    return model


def logged_steps(path: Path) -> list:
    """(step, loss, lr) of each row of a run's ``steps.csv``."""
    import csv

    with open(path) as f:
        return [(int(r["step"]), r["loss"], r["lr"]) for r in csv.DictReader(f)]


def assert_resumed_as_uninterrupted(full, resumed) -> None:
    """Two finished Trainers, one run straight and one stopped and resumed, ended alike: the same steps logged,
    the same weights and EMA weights to the bit, the same epoch rows but their times (NaN equal to NaN)."""
    assert logged_steps(resumed.folder / "steps.csv") == logged_steps(full.folder / "steps.csv")
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    if full.models.ema is not None:
        for a, b in zip(full.models.ema.module.state_dict().values(), resumed.models.ema.module.state_dict().values()):
            assert torch.equal(a, b)

    def timeless(history: list) -> str:
        return json.dumps([{k: v for k, v in r.items() if k != "train_seconds"} for r in history])

    assert timeless(resumed.state.history) == timeless(full.state.history)


# ----- the dense tasks: digit scenes, COCO and ADE20K folders, fast recipes, one trained detector -----

# a tiny backbone, small images, no workers: behaviour, not accuracy
# "backbone_weights=none": the tests train from random weights on their own data sets on purpose
DETECT_FAST = [*TINY_MODEL_OVERRIDES, "backbone_weights=none", "min_size=64", "max_size=64", "batch_size=2",
               "workers=0", "log_every=1", "warmup_steps=2", "lr=1e-3", "lr_base_batch=2",
               "decay_milestones=[1]"]  # fmt: skip
SEGMENT_FAST = [*TINY_MODEL_OVERRIDES, "backbone_weights=none", "scale=[64, 64]", "crop_size=64", "test_stride=32",
                "batch_size=2", "workers=0", "log_every=1", "lr=1e-3", "lr_base_batch=2", "warmup_steps=2"]  # fmt: skip


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    """The digit scenes (8 train, 3 val, 64x64) as COCO and ADE20K folders; tests copy them before changing them."""
    from fatvit.tasks.scenes import write_digit_scenes

    return write_digit_scenes(tmp_path_factory.mktemp("scenes"), train=8, val=3, size=64)


@pytest.fixture(scope="session")
def detect_run(scenes, tmp_path_factory) -> Path:
    """A RetinaNet trained for one step on the scenes (weights to evaluate, not accuracy): its run folder."""
    from fatvit.cli import main

    run = tmp_path_factory.mktemp("det") / "run"
    assert main(["detect", "train", "--data", str(scenes / "coco"), "--iterations", "1", "--output", str(run),
                 *set_args([*DETECT_FAST, "model=retinanet_fat_b0"])]) == 0  # fmt: skip
    return run


def mixed_orientation_coco(scenes: Path, root: Path, extra: int = 32) -> Path:
    """The scenes' COCO set with landscape and portrait images alternating: each scene pasted at the top left of a
    canvas ``extra`` pixels wider (even images) or taller (odd ones), its boxes and polygons unchanged (RLE masks
    padded). Its root."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        coco = json.loads((scenes / f"coco/annotations/instances_{split}.json").read_text())
        (root / split).mkdir()
        for i, info in enumerate(coco["images"]):
            scene = Image.open(scenes / "coco" / split / info["file_name"]).convert("RGB")
            w, h = scene.size
            size = (w + extra, h) if i % 2 == 0 else (w, h + extra)
            canvas = Image.fromarray(rng.integers(0, 90, (size[1], size[0], 3), dtype=np.uint8))
            canvas.paste(scene, (0, 0))
            canvas.save(root / split / info["file_name"])
            info.update(width=size[0], height=size[1])
            for ann in coco["annotations"]:
                seg = ann.get("segmentation")
                if ann["image_id"] == info["id"] and isinstance(seg, dict):
                    rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
                    mask = np.zeros((size[1], size[0]), np.uint8)
                    mask[:h, :w] = mask_utils.decode(rle)
                    encoded = mask_utils.encode(np.asfortranarray(mask))
                    ann["segmentation"] = dict(size=encoded["size"], counts=encoded["counts"].decode("ascii"))
        (root / f"annotations/instances_{split}.json").write_text(json.dumps(coco))
    return root


def quiet_coco(path: Path):
    """pycocotools' COCO index of ``path``, without its prints."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def coco_file(tmp_path: Path, annotations, images=None, categories=None, drop=()) -> Tuple[Path, Path]:
    """A COCO file of ``images`` (each written as an image file, at 8x8 where its entry has no valid size) and
    ``annotations``, without the top-level keys in ``drop``: (image folder, annotation file)."""
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    images = images or [dict(id=1, file_name="a.png", width=40, height=30), dict(id=2, file_name="b.png", width=40,
                                                                                  height=30)]  # fmt: skip
    for info in images:
        size = [info.get(k) for k in ("width", "height")]
        size = size if all(isinstance(v, int) and v > 0 for v in size) else [8, 8]
        if not (root / info["file_name"]).exists():
            Image.new("RGB", tuple(size), (90, 20, 20)).save(root / info["file_name"])
    path = tmp_path / "instances.json"
    cats = categories or [dict(id=3, name="three"), dict(id=7, name="seven")]
    data = dict(images=images, annotations=annotations, categories=cats)
    path.write_text(json.dumps({k: v for k, v in data.items() if k not in drop}))
    return root, path


def coco_ann(i: int, image_id: int, cat: int, box: list, **kw) -> dict:
    """A COCO annotation of one box (x, y, w, h)."""
    return dict(id=i, image_id=image_id, category_id=cat, bbox=box, area=box[2] * box[3], iscrowd=0, **kw)


def ade_folder(root: Path, labels, classes=None) -> Path:
    """An ADE20K-style folder under ``root``: one training image per label map in ``labels``, and ``classes.txt``
    if ``classes`` are given."""
    import numpy as np
    from PIL import Image

    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(labels):
        Image.new("RGB", (label.shape[1], label.shape[0]), (10, 200, 30)).save(root / f"images/training/{i}.jpg")
        Image.fromarray(label.astype(np.uint8)).save(root / f"annotations/training/{i}.png")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root

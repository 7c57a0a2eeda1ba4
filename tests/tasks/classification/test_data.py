"""Data: formats, the digits set, deterministic augmentation, resumable sharded sampling."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from conftest import make_image_folder
from fatvit.data import ResumableSampler, SeededDataset, load_rgb
from fatvit.tasks.classification.data import SafeImageFolder, build_splits, digits_splits, find_split


def test_every_format_is_read_as_rgb(tmp_path):
    data = make_image_folder(tmp_path / "d", n_train=7, n_val=1)
    folder = SafeImageFolder(data / "train")
    suffixes = {p.rsplit(".", 1)[1] for p, _ in folder.samples}
    assert suffixes == {"jpg", "png", "webp"}
    modes = {Image.open(p).mode for p, _ in folder.samples}
    assert {"L", "P", "RGBA", "CMYK", "RGB"} <= modes
    assert all(load_rgb(p).mode == "RGB" for p, _ in folder.samples)


def test_digits_split_is_fixed_stratified_and_held_out():
    train, val = digits_splits()
    assert (len(train), len(val)) == (1437, 360)
    assert sorted(set(val.targets)) == list(range(10))
    assert np.bincount(val.targets).min() >= 35
    again, _ = digits_splits()
    assert train.targets == again.targets
    splits = build_splits(None)
    assert splits.classes == [str(i) for i in range(10)]


def test_paper_randaugment_runs_at_full_magnitude():
    # rand-m9-mstd0.5 draws magnitudes up to 10: posterize must then keep 0 bits (needs Pillow < 13)
    tf = create_transform(32, is_training=True, auto_augment="rand-m9-mstd0.5-inc1")
    img = Image.new("RGB", (40, 40), (120, 30, 200))
    random.seed(0)
    outs = [tf(img) for _ in range(300)]
    assert all(o.shape == (3, 32, 32) and torch.isfinite(o).all() for o in outs)


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    train, _ = digits_splits()
    tf = create_transform(32, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5)
    ds = SeededDataset(train, tf, seed=3)
    a = ds[5][0]
    torch.manual_seed(123)  # the caller's RNG must not matter, nor be disturbed
    state = torch.get_rng_state()
    assert torch.equal(ds[5][0], a)
    assert torch.equal(torch.get_rng_state(), state)
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], a)


def test_sampler_shards_are_disjoint_cover_all_and_resume():
    shards = [ResumableSampler(10, True, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    indices = [list(s) for s in shards]
    assert all(len(i) == 4 for i in indices)  # padded to equal length
    assert set(sum(indices, [])) == set(range(10))
    shards[0].set_epoch(2, start=2)
    assert list(shards[0]) == indices[0][2:] and len(shards[0]) == 2
    other = ResumableSampler(10, True, seed=1)
    other.set_epoch(3)
    first = list(other)
    other.set_epoch(3)
    assert list(other) == first


@pytest.mark.parametrize("bad", [b"", b"\xff\xd8\xff\xe0 truncated"])
def test_unreadable_file_gives_none_with_a_warning(tmp_path, bad):
    data = make_image_folder(tmp_path / "d", n_train=1, n_val=1)
    (data / "train" / "cat" / "bad.jpg").write_bytes(bad)
    folder = SafeImageFolder(data / "train")
    index = [i for i, (p, _) in enumerate(folder.samples) if p.endswith("bad.jpg")][0]
    with pytest.warns(UserWarning, match="bad.jpg"):
        assert folder[index] is None


def test_16_bit_and_float_images_are_scaled_to_8_bits(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float64).reshape(8, 8)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "float01.tiff")
    Image.fromarray((ramp * 255).astype(np.float32), mode="F").save(tmp_path / "float255.tiff")
    Image.fromarray((ramp * 1000 - 500).astype(np.float32), mode="F").save(tmp_path / "float_any.tiff")
    expected = np.round(ramp * 255)
    for name in ("grey16.png", "float01.tiff", "float255.tiff", "float_any.tiff"):
        img = load_rgb(str(tmp_path / name))
        assert img.mode == "RGB"
        got = np.asarray(img)[..., 0].astype(np.float64)
        assert np.abs(got - expected).max() <= 1, name  # the full range, neither white nor black


def test_validation_shards_are_exact():
    shards = [ResumableSampler(10, False, num_replicas=3, rank=r, pad=False) for r in range(3)]
    indices = [list(s) for s in shards]
    assert sorted(sum(indices, [])) == list(range(10))  # every image once, none repeated
    assert [len(s) for s in shards] == [4, 3, 3]


def test_loader_workers_are_capped_at_the_cores_available_and_the_cap_is_said_once(monkeypatch):
    import warnings

    import fatvit.data as data

    monkeypatch.setattr(data, "usable_cores", lambda: 2)
    monkeypatch.setattr(data, "_capped", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert data.loader_workers(2) == 2 and data.loader_workers(0) == 0
        assert not caught
        assert data.loader_workers(4) == 2
        loader = data.make_loader(torch.utils.data.TensorDataset(torch.zeros(4)), ResumableSampler(4, shuffle=False),
                                  2, 4, drop_last=False)  # fmt: skip
        assert loader.num_workers == 2
    assert [str(w.message) for w in caught] == ["4 loader workers asked for, 2 used: this process may run on 2 cores"]
    # the evaluation verbs' default adapts to the cores, without a warning
    from fatvit.tasks.classification.inference import inference_config

    assert data.default_workers() == 2 and inference_config({})[0].workers == 2
    monkeypatch.setattr(data, "usable_cores", lambda: 16)
    assert data.default_workers() == 4 and inference_config({})[0].workers == 4
    assert inference_config({}, {"workers": 0})[0].workers == 0


def test_usable_cores_is_the_affinity_mask():
    import os

    from fatvit.data import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


@pytest.mark.parametrize(("train_name", "val_name"), [("train", "validation"), ("training", "valid"),
                                                      ("train", "eval"), ("train", "evaluation")])  # fmt: skip
def test_split_folders_are_found_under_timms_names(tmp_path, caplog, train_name, val_name):
    data = make_image_folder(tmp_path / "d", n_train=2, n_val=1)
    (data / "train").rename(data / train_name)
    (data / "val").rename(data / val_name)
    with caplog.at_level("INFO", logger="fatvit.train"):
        splits = build_splits(str(data))
    assert (len(splits.train), len(splits.val)) == (6, 3) and splits.classes == ["cat", "dog", "owl"]
    assert f"training images from {data / train_name}, validation images from {data / val_name}" in caplog.text
    assert {p.split("/")[-3] for p, _ in splits.val.samples} == {val_name}


def test_val_is_taken_before_its_synonyms(tmp_path):
    data = make_image_folder(tmp_path / "d", n_train=2, n_val=1)
    (data / "validation" / "cat").mkdir(parents=True)  # an empty synonym beside val/ is not read
    assert find_split(data, "val") == data / "val"
    assert find_split(data / "val", "val") is None

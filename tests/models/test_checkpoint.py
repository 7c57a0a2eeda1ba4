"""load_checkpoint reads every format we promise and names what does not fit."""

from __future__ import annotations

import pickle

import pytest
import torch

from conftest import TINY_ARGS
from fatvit import FAT, CheckpointError, load_checkpoint, save_safetensors
from fatvit.checkpoint import read_file
from fatvit.models.fat import InteractionMismatchWarning


@pytest.fixture
def pair():
    torch.manual_seed(1)
    return FAT(**TINY_ARGS), FAT(**TINY_ARGS)


def _same(a, b):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


@pytest.mark.parametrize("fmt", ["authors", "bare", "safetensors", "ddp"])
def test_formats_round_trip(pair, tmp_path, fmt):
    src, dst = pair
    if fmt == "authors":
        path = tmp_path / "ckpt.pth"
        torch.save({"model": src.state_dict(), "epoch": 3, "max_accuracy": 77.6}, path)
    elif fmt == "bare":
        path = tmp_path / "ckpt.pth"
        torch.save(src.state_dict(), path)
    elif fmt == "ddp":
        path = tmp_path / "ckpt.pth"
        torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    else:
        path = tmp_path / "ckpt.safetensors"
        save_safetensors(src, path)
    load_checkpoint(dst, path)
    _same(src, dst)


def test_reference_checkpoint_loads(tiny_reference, tmp_path):
    manifest, state_dict, _ = tiny_reference
    torch.save({"model": state_dict}, tmp_path / "authors.pth")
    model = FAT(**manifest["config"], interaction="reference")
    load_checkpoint(model, tmp_path / "authors.pth")
    torch.testing.assert_close(model.head.weight, state_dict["head.weight"])


def test_missing_and_unexpected_keys_are_named(pair, tmp_path):
    src, dst = pair
    sd = src.state_dict()
    sd.pop("norm.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: norm\.weight.*unexpected keys: extra\.weight"):
        load_checkpoint(dst, tmp_path / "bad.pth")


def test_other_num_classes_is_a_shape_error_unless_not_strict(pair, tmp_path):
    src, _ = pair
    torch.save({"model": src.state_dict()}, tmp_path / "c10.pth")
    other = FAT(**{**TINY_ARGS, "num_classes": 3})
    with pytest.raises(
        CheckpointError, match=r"shape mismatch: head\.weight \(checkpoint \(10, 64\), model \(3, 64\)\)"
    ):
        load_checkpoint(other, tmp_path / "c10.pth")
    skipped = load_checkpoint(other, tmp_path / "c10.pth", strict=False)
    assert skipped == ["head.weight", "head.bias"]
    torch.testing.assert_close(other.norm.weight, src.norm.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(FAT(**TINY_ARGS), path)
    torch.save({"model": _Evil(), "epoch": 1}, tmp_path / "evil_zip.pth")  # PyTorch's format
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_checkpoint(FAT(**TINY_ARGS), tmp_path / "evil_zip.pth")
    assert "must never run" not in capsys.readouterr().out


def test_authors_file_with_a_yacs_config_loads_without_importing_yacs(pair, tmp_path, monkeypatch):
    """Their trainer saves {'model': ..., 'config': CfgNode, ...}: weights_only refuses it, we read it inertly."""
    import sys

    yacs_config = pytest.importorskip("yacs.config")
    src, dst = pair
    cfg = yacs_config.CfgNode({"MODEL": {"TYPE": "FAT", "NAME": "fat_b0"}, "TRAIN": {"BASE_LR": 5e-4}})
    path = tmp_path / "authors.pth"
    state = dict(src.state_dict())  # a plain dict: their state dicts carry no fatvit record
    torch.save({"model": state, "config": cfg, "epoch": 299, "max_accuracy": 77.6}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    for name in [m for m in sys.modules if m == "yacs" or m.startswith("yacs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [])  # nothing can be imported while reading
    obj = read_file(path)
    assert "yacs" not in sys.modules
    assert type(obj["config"]).__name__ == "CfgNode" and obj["epoch"] == 299
    assert obj["config"]["TRAIN"]["BASE_LR"] == 5e-4  # its values stay readable
    with pytest.warns(InteractionMismatchWarning):  # the file records no interaction
        load_checkpoint(dst, path)
    _same(src, dst)


def test_files_record_the_interaction(tmp_path):
    torch.manual_seed(0)
    reference = FAT(**TINY_ARGS, interaction="reference")
    save_safetensors(reference, tmp_path / "ref.safetensors")
    torch.save(reference.state_dict(), tmp_path / "ref_bare.pth")
    for path in (tmp_path / "ref.safetensors", tmp_path / "ref_bare.pth"):
        with pytest.raises(CheckpointError, match="trained with interaction='reference'"):
            load_checkpoint(FAT(**TINY_ARGS), path)
        load_checkpoint(FAT(**TINY_ARGS, interaction="reference"), path)  # no warning, no error
    # the plain PyTorch path checks it too
    with pytest.raises(RuntimeError, match="interaction='reference'"):
        FAT(**TINY_ARGS).load_state_dict(torch.load(tmp_path / "ref_bare.pth", weights_only=True))


def test_unrecorded_weights_warn_once_in_a_bidirectional_model(tmp_path):
    import warnings

    import timm

    state = {k: v for k, v in FAT(**TINY_ARGS, interaction="reference").state_dict().items()}  # no record
    torch.save({"model": state}, tmp_path / "authors.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(FAT(**TINY_ARGS), tmp_path / "authors.pth")
        timm.create_model("fat_b0", checkpoint_path=str(tmp_path / "authors.pth"), **TINY_ARGS)
        load_checkpoint(FAT(**TINY_ARGS, interaction="reference"), tmp_path / "authors.pth")
    ours = [w for w in caught if issubclass(w.category, InteractionMismatchWarning)]
    assert len(ours) == 2  # once per load into a bidirectional model; none into a reference one
    assert all('interaction="reference"' in str(w.message) for w in ours)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(FAT(**TINY_ARGS), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(FAT(**TINY_ARGS), tmp_path / "junk.pth")
    torch.save({"epoch": 1}, tmp_path / "nomodel.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_checkpoint(FAT(**TINY_ARGS), tmp_path / "nomodel.pth")

"""timm's formats: a run folder (or `fatvit export --format timm`) loads with timm's `local-dir:`, and
`pretrained=True` with `pretrained_cfg_overlay=dict(file=...)` loads a fatvit file or the authors' `.pth`."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
from timm.data import create_transform, resolve_data_config

from conftest import TINY_ARGS, cli_error, write_held_out_digits
from fatvit import FAT
from fatvit.checkpoint import CheckpointError, save_safetensors
from fatvit.cli import main
from fatvit.errors import FatvitError
from fatvit.models.fat import InteractionMismatchWarning
from fatvit.tasks.classification.inference import load_classifier


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 32) -> bool:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_a_run_folder_is_timms_format(digits_run, tmp_path):
    out, summary = digits_run
    assert summary["checkpoints"]["timm_config"] == str(out / "config.json")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "fat_b0" and config["num_classes"] == 10
    assert config["label_names"] == [str(d) for d in range(10)]
    assert config["model_args"]["embed_dims"] == [16, 32, 48, 64] and "drop_path_rate" not in config["model_args"]
    trained = load_classifier(out / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InteractionMismatchWarning)  # the folder's record goes with the weights
        model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert _same_outputs(model, trained.model)
    assert model.pretrained_cfg["label_names"] == trained.classes
    data = resolve_data_config(model=model)
    assert tuple(data["input_size"]) == (3, 32, 32) and tuple(data["mean"]) == tuple(trained.meta["mean"])
    assert data["crop_pct"] == trained.config.crop_pct and data["interpolation"] == trained.config.interpolation
    # the preprocessing timm derives is the one fatvit evaluates with
    write_held_out_digits(tmp_path / "d", count=1)
    from fatvit.data import load_rgb

    image = load_rgb(str(tmp_path / "d" / "000.png"))
    assert torch.equal(create_transform(**data)(image), trained.transform(image))
    # without pretrained=True, timm builds the architecture and its classes only, as for any local folder
    assert not _same_outputs(timm.create_model(f"local-dir:{out}"), trained.model)


def test_export_format_timm_writes_a_folder_from_any_checkpoint(digits_run, tmp_path, capsys):
    out, _ = digits_run
    folder = tmp_path / "hub"
    assert main(["export", "--checkpoint", str(out / "best.pth"), "--format", "timm", "--output", str(folder)]) == 0
    assert "local-dir:" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert _same_outputs(model, load_classifier(out / "best.pth").model)
    assert model.pretrained_cfg["label_names"] == [str(d) for d in range(10)]
    line = cli_error(capsys, ["export", "--checkpoint", str(out / "best.pth"), "--format", "timm",
                              "--output", str(folder)])  # fmt: skip
    assert "holds config.json, model.safetensors; give --overwrite to replace them" in line
    argv = ["export", "--checkpoint", str(out / "last.pth"), "--format", "timm", "--output", str(folder), "--overwrite"]
    assert main(argv) == 0
    capsys.readouterr()
    assert _same_outputs(
        timm.create_model(f"local-dir:{folder}", pretrained=True), load_classifier(out / "last.pth").model
    )


def test_the_overlay_loads_fatvit_files_and_the_authors_layout(digits_run, tmp_path):
    out, _ = digits_run
    trained = load_classifier(out / "last.pth").model
    kwargs = dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 2, 1), num_heads=(1, 2, 3, 4), num_classes=10)
    for name in ("last.pth", "best.pth", "model.safetensors"):
        model = timm.create_model(
            "fat_b0", pretrained=True, pretrained_cfg_overlay=dict(file=str(out / name)), **kwargs
        )
        assert _same_outputs(model, load_classifier(out / name).model), name
    # the model's weights of a training checkpoint, not its EMA (timm's own reader would take model_ema)
    assert _same_outputs(timm.create_model("fat_b0", pretrained=True, pretrained_cfg_overlay=dict(
        file=str(out / "last.pth")), **kwargs), trained)  # fmt: skip
    # the authors' layout: {"model": state dict}, no record, trained with the reference interaction
    authors = FAT(**TINY_ARGS, interaction="reference").eval()
    torch.save({"model": dict(authors.state_dict())}, tmp_path / "authors.pth")
    overlay = dict(file=str(tmp_path / "authors.pth"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InteractionMismatchWarning)
        loaded = timm.create_model("fat_b0", pretrained=True, pretrained_cfg_overlay=overlay, interaction="reference",
                                   **TINY_ARGS)  # fmt: skip
    assert _same_outputs(loaded, authors)
    with pytest.warns(InteractionMismatchWarning):  # into the paper's bidirectional model: said, not silent
        timm.create_model("fat_b0", pretrained=True, pretrained_cfg_overlay=overlay, **TINY_ARGS)
    # a new number of classes: the head is new, every other weight loaded
    five = timm.create_model("fat_b0", pretrained=True, pretrained_cfg_overlay=overlay, interaction="reference",
                             **{**TINY_ARGS, "num_classes": 5})  # fmt: skip
    assert five.head.out_features == 5
    assert torch.equal(five.patch_embed.conv1.conv[0].weight, authors.patch_embed.conv1.conv[0].weight)


def test_the_overlay_checks_the_recorded_interaction(tmp_path):
    save_safetensors(FAT(**TINY_ARGS, interaction="reference"), tmp_path / "ref.safetensors")
    overlay = dict(file=str(tmp_path / "ref.safetensors"))
    with pytest.raises(CheckpointError, match="trained with interaction='reference'"):
        timm.create_model("fat_b0", pretrained=True, pretrained_cfg_overlay=overlay, **TINY_ARGS)
    with pytest.raises(CheckpointError, match="does not fit fat_b1"):
        timm.create_model("fat_b1", pretrained=True, pretrained_cfg_overlay=overlay, interaction="reference")


def test_a_folder_recorded_with_another_interaction_is_refused(tmp_path):
    from fatvit.hub import save_timm_folder

    meta = dict(model="fat_b0", model_kwargs=dict(TINY_ARGS), num_classes=10, classes=None, img_size=32, crop_pct=0.875,
                interpolation="bicubic", mean=[0.5] * 3, std=[0.5] * 3)  # fmt: skip
    save_timm_folder(timm.create_model("fat_b0", interaction="reference", **TINY_ARGS), tmp_path / "ref", meta)
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    config["model_args"].pop("interaction", None)  # a config that no longer says how the weights were trained
    (tmp_path / "ref" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="trained with interaction='reference'"):
        timm.create_model(f"local-dir:{tmp_path / 'ref'}", pretrained=True)


def test_pretrained_without_a_file_says_how_to_give_one():
    with pytest.raises(FatvitError, match=r"fat_b0: no weights can be downloaded .*pretrained_cfg_overlay=dict\(file="):
        timm.create_model("fat_b0", pretrained=True)
    assert timm.create_model("fat_b0", pretrained=False, **TINY_ARGS).num_classes == 10

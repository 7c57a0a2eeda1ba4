"""`fatvit explain` and `fatvit.explain`: FASA's gates and attention from hooks, Grad-CAM, the figure."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TINY_ARGS, cli_error, write_held_out_digits
from fatvit.cli import main
from fatvit.errors import FatvitError
from fatvit.explain import class_activation_map, explain, fasa_maps, map_notes, map_point, plot_explanation
from fatvit.models import create_model
from fatvit.tasks.classification.metrics import eval_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _model(interaction="bidirectional", **kwargs):
    torch.manual_seed(0)
    return create_model("fat_b0", **{**TINY_ARGS, "interaction": interaction, **kwargs}).eval()


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("interaction", ["bidirectional", "reference", "add"])
@pytest.mark.parametrize("size", [(64, 64), (50, 37)])
def test_maps_have_the_image_shape_gates_in_0_1_attention_sums_to_1(interaction, size):
    model = _model(interaction)
    x = torch.randn(1, 3, *size)
    e = explain(model, x, MEAN, STD, point=(size[1] - 1, 3))
    assert e.image.shape == (3, *size) and e.cam.shape == size
    assert float(e.cam.min()) >= 0 and float(e.cam.max()) <= 1
    assert len(e.stages) == 4
    for s, stride in zip(e.stages, (4, 8, 16, 32)):
        assert s.stride == stride and s.block == len(model.layers[s.stage].blocks) - 1
        for gate in (s.local_gate, s.global_gate):
            assert gate.shape == size and float(gate.min()) > 0 and float(gate.max()) < 1
        assert s.attention.shape == size
        assert float(s.attention.sum()) == pytest.approx(1.0, abs=1e-5)
        assert float(s.attention_kv.sum()) == pytest.approx(1.0, abs=1e-5) and float(s.attention_kv.min()) >= 0
        # the key/value map is ceil(side / (stride * window)) cells; the query is the point's cell
        assert tuple(s.attention_kv.shape) == tuple(-(-n // s.kv_stride) for n in size)
        assert s.query == (
            min(3 // stride, s.x_local.shape[1] - 1),
            min((size[1] - 1) // stride, s.x_local.shape[2] - 1),
        )
    applied = {"bidirectional": (True, True), "reference": (False, True), "add": (False, False)}[interaction]
    assert (e.stages[0].local_gate_applied, e.stages[0].global_gate_applied) == applied


@pytest.mark.parametrize("interaction", ["bidirectional", "reference"])
def test_the_maps_are_the_branches_the_model_mixes(interaction):
    """The branches rebuilt from the hooks give exactly what the model feeds its output projection W_2."""
    model = _model(interaction)
    fed = {}
    blocks = [stage.blocks[-1].attn for stage in model.layers]
    handles = [
        b.mixer.register_forward_pre_hook(lambda m, a, i=i: fed.__setitem__(i, a[0])) for i, b in enumerate(blocks)
    ]
    x = torch.randn(1, 3, 45, 61)
    _, stages = fasa_maps(model, x)
    for h in handles:
        h.remove()
    for s in stages:
        xl, xg = s.x_local, s.x_global
        if interaction == "bidirectional":
            expected = (xl * torch.sigmoid(xg)) * (xg * torch.sigmoid(xl))
        else:
            expected = xl * torch.sigmoid(xg) * xg
        torch.testing.assert_close(fed[s.stage][0], expected, rtol=1e-4, atol=1e-5)


def test_hooks_leave_the_model_unchanged():
    model = _model()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits, _ = fasa_maps(model, x)
    class_activation_map(model, x, int(before.argmax()))
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, logits) and torch.equal(before, after)
    assert _hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_cam_is_grad_cam_of_the_class_on_the_last_stage():
    """Grad-CAM by hand: ReLU(sum_c mean(d logit / d A_c) A_c) on the last stage, upsampled, scaled to [0, 1]."""
    model = _model()
    x = torch.randn(1, 3, 128, 128)
    cams = [class_activation_map(model, x, c) for c in (1, 2)]
    kept = {}
    handle = model.layers[-1].register_forward_hook(lambda m, a, out: kept.__setitem__("a", out))
    for c, cam in zip((1, 2), cams):
        logits = model(x)
        (grad,) = torch.autograd.grad(logits[0, c], kept["a"])
        a = kept["a"].detach()
        by_hand = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
        by_hand = F.interpolate(by_hand, size=(128, 128), mode="bilinear", align_corners=False)[0, 0]
        by_hand = (by_hand - by_hand.min()) / (by_hand.max() - by_hand.min() + 1e-7)
        assert cam.shape == (128, 128) and float(cam.max()) == pytest.approx(1.0, abs=1e-3)
        torch.testing.assert_close(cam, by_hand, atol=2e-3, rtol=0)
    handle.remove()
    assert not torch.allclose(cams[0], cams[1], atol=1e-2)  # the class matters


@pytest.mark.parametrize("name", ["fat_b0", "fat_b5"])  # the hooks find FASA whatever the depths and widths
def test_fat_sizes_explain(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    e = explain(model, torch.randn(1, 3, 64, 64), MEAN, STD)
    assert [s.stage for s in e.stages] == [0, 1, 2, 3]
    assert all(float(s.attention.sum()) == pytest.approx(1.0, abs=1e-4) for s in e.stages)


def test_models_without_fasa_and_bad_requests_are_clear_errors():
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(FatvitError, match="not FASA"):
        fasa_maps(create_model("fat_b0_attn_swin", **TINY_ARGS).eval(), x)
    with pytest.raises(FatvitError, match="not a FAT model"):
        fasa_maps(create_model("resnet18").eval(), x)
    model = _model()
    with pytest.raises(FatvitError, match="lies outside"):
        fasa_maps(model, x, point=(64, 0))
    with pytest.raises(FatvitError, match="one image"):
        fasa_maps(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(FatvitError, match="block 5 does not exist"):
        fasa_maps(model, x, block=5)


def test_points_follow_the_resize_and_centre_crop():
    transform = eval_transform(create_model("fat_b0"))  # resize the short side to 256, crop 224
    assert map_point(transform, (512, 256), (255.5, 127.5)) == (112, 112)  # centre to centre
    assert map_point(transform, (512, 256), (144, 16)) == (0, 0)  # the crop starts (512 - 224) / 2 in
    assert map_point(transform, (512, 256), (367, 239)) == (223, 223)  # the crop's last pixel
    small = eval_transform(create_model("fat_b0"), input_size=(3, 32, 32), crop_pct=1.0)
    assert map_point(small, (8, 8), (0, 7)) == (2, 30)  # pixel centres scale by 4
    with pytest.raises(FatvitError, match="outside the centre crop"):
        map_point(transform, (512, 256), (2, 100))  # cut away by the crop of the long side
    with pytest.raises(FatvitError, match="outside the 512x256 image"):
        map_point(transform, (512, 256), (600, 10))


def test_the_figure_has_fixed_stated_scales_and_says_when_a_panel_carries_no_information():
    import dataclasses

    import matplotlib.pyplot as plt

    e = explain(_model(), torch.randn(1, 3, 32, 32), MEAN, STD)
    assert [tuple(s.attention_kv.shape) for s in e.stages] == [(1, 1)] * 4  # every key map is one cell at 32x32
    notes = {k: v for k, v in map_notes(e).items() if k != "cam"}
    assert notes == {f"stage {n} attention": "one key cell: weight 1 by construction, no spatial information"
                     for n in (1, 2, 3, 4)}  # fmt: skip
    wide = explain(_model(), torch.randn(1, 3, 128, 128), MEAN, STD)
    assert "stage 1 attention" not in map_notes(wide)  # a 2x2 key map carries a preference
    assert map_notes(dataclasses.replace(e, cam=torch.zeros_like(e.cam)))["cam"].startswith("empty")
    assert map_notes(dataclasses.replace(e, cam=torch.full_like(e.cam, 0.4)))["cam"].startswith("flat")
    fig = plot_explanation(dataclasses.replace(e, cam=torch.zeros_like(e.cam)))
    try:
        images = [ax for ax in fig.axes if ax.images]
        shown = [ax.images[-1] for ax in images[1:]]  # every overlay after the input
        assert len(shown) == 1 + 3 * 4
        assert all(im.get_clim() == (0.0, 1.0) for im in shown)  # fixed: never the map's own range
        bars = [ax for ax in fig.axes if not ax.images and ax.get_ylabel()]
        assert len(bars) == len(shown)
        fig.canvas.draw()
        for bar in bars:
            assert bar.yaxis.get_offset_text().get_text() == ""
            assert [t.get_text() for t in bar.get_yticklabels()] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
        texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts) + " ".join(ax.get_title() for ax in images)
        assert "empty: no positive" in " ".join(texts.split()) and "one key cell" in " ".join(texts.split())
        gate = e.stages[0].local_gate
        assert f"range {float(gate.min()):.3f} to {float(gate.max()):.3f}" in texts
    finally:
        plt.close(fig)


def test_explain_command_writes_a_figure(digits_run, tmp_path, capsys):
    out, _ = digits_run
    write_held_out_digits(tmp_path / "d", count=1)
    image = str(tmp_path / "d" / "000.png")
    argv = ["explain", image, "--checkpoint", str(out / "model.safetensors"), "--output", str(tmp_path / "fig")]
    assert main([*argv, "--json", "--point", "0,7"]) == 0
    record = json.loads(capsys.readouterr().out)
    figure = tmp_path / "fig" / "000_explain.png"
    assert record["figure"] == str(figure) and record["class"] in [str(i) for i in range(10)]
    assert record["input_point"] == [2, 30]  # pixel (0, 7) of the 8x8 digit, in the 32x32 input
    assert record["notes"]["stage 4 attention"].startswith("one key cell")
    with Image.open(figure) as png:
        png.verify()
    with Image.open(figure) as png:
        assert png.format == "PNG" and png.size[0] > 300 and png.size[1] > png.size[0]
    assert "exists; give --overwrite" in cli_error(capsys, argv)
    assert main([*argv, "--overwrite", "--class", "3"]) == 0
    assert "3 (" in capsys.readouterr().out
    assert "unknown class '12'" in cli_error(capsys, [*argv, "--overwrite", "--class", "12"])
    assert "outside the 8x8 image" in cli_error(capsys, [*argv, "--overwrite", "--point", "9,1"])
    assert "image not found" in cli_error(capsys, ["explain", str(tmp_path / "no.png"), *argv[2:]])
    (tmp_path / "bad.png").write_text("no")
    assert "cannot read image" in cli_error(capsys, ["explain", str(tmp_path / "bad.png"), *argv[2:]])
    assert "expected x,y" in cli_error(capsys, [*argv, "--point", "3"])


@pytest.mark.filterwarnings("ignore::fatvit.models.fat.InteractionMismatchWarning")  # a bare state dict records none
def test_explain_needs_class_names(digits_run, tmp_path, capsys):
    out, _ = digits_run
    from fatvit.checkpoint import read_checkpoint

    state_dict, meta = read_checkpoint(out / "last.pth")
    torch.save(state_dict, tmp_path / "bare.pth")
    write_held_out_digits(tmp_path / "d", count=1)
    model = [f"--set=model_kwargs.{k}={v}" for k, v in meta["model_kwargs"].items()]
    argv = ["explain", str(tmp_path / "d" / "000.png"), "--checkpoint", str(tmp_path / "bare.pth"), *model,
            "--img-size", "32", "--output", str(tmp_path / "fig")]  # fmt: skip
    assert "records no class names" in cli_error(capsys, argv)
    assert not (tmp_path / "fig").exists()  # nothing written
    (tmp_path / "names.txt").write_text("\n".join(f"digit {i}" for i in range(10)))
    assert main([*argv, "--classes", str(tmp_path / "names.txt")]) == 0
    assert (tmp_path / "fig" / "000_explain.png").is_file()

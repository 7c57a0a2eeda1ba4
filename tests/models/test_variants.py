"""Ablation variants and compared attentions: built by name, any size, train and eval, trainable."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import FAST_RECIPE, make_image_folder
from fatvit.cli import main
from fatvit.layers import FASA, CrossShapedWindowAttention, PartitionAttention, SpatialReductionAttention
from fatvit.models import VARIANTS

SMALL = dict(embed_dims=(16, 32, 48, 64), depths=(2, 2, 2, 2), num_heads=(2, 2, 2, 4), num_classes=5)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("size", [(64, 64), (45, 71), (9, 13)])
def test_variant_any_size_train_and_eval(name, size):
    torch.manual_seed(0)
    model = timm.create_model(name, **SMALL, drop_path_rate=0.1)
    x = torch.randn(2, 3, *size)
    out = model.train()(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(x[:1]).shape == (1, 5)


def test_variants_are_options_of_any_size():
    model = timm.create_model("fat_b1", interaction="add", kv_downsample="pool", cpe=False)
    attn = model.layers[0].blocks[0].attn
    assert (attn.interaction, attn.kv_downsample) == ("add", "pool")
    assert not model.layers[0].blocks[0].use_cpe
    swin = timm.create_model("fat_b2", attention="swin")
    assert isinstance(swin.layers[1].blocks[1].attn, PartitionAttention) and swin.layers[1].blocks[1].attn.shift == 3
    with pytest.raises(ValueError, match="attention must be one of"):
        timm.create_model("fat_b0", attention="nope")


@pytest.mark.parametrize("interaction", ["add", "mul", "cat"])
@torch.no_grad()
def test_fusion_equations(interaction):
    torch.manual_seed(0)
    m = FASA(8, 2, 3, 2, interaction=interaction).eval()
    x = torch.randn(1, 8, 10, 6)
    q = m.q(x)
    g, loc = m.global_aggregation(q, x), m.local_aggregation(q)
    fused = {"add": loc + g, "mul": loc * g, "cat": torch.cat([loc, g], 1)}[interaction]
    torch.testing.assert_close(m(x), m.mixer(fused))


@pytest.mark.parametrize("kind", ["pool", "conv", "conv_overlap", "refined"])
@pytest.mark.parametrize("size", [(56, 56), (13, 29), (3, 5)])
def test_kv_downsampling_gives_ceil_size(kind, size):
    m = FASA(8, 2, 3, 4, kv_downsample=kind)
    pooled = m.pool(torch.randn(1, 8, *size))
    assert pooled.shape[-2:] == tuple(-(-s // 4) for s in size)


def _dependency(module, shape, pos):
    """Which input pixels the output at ``pos`` depends on (a boolean H x W map)."""
    x = torch.randn(1, *shape, requires_grad=True)
    module(x)[0, :, pos[0], pos[1]].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_window_grid_and_shifted_window_receptive_fields():
    torch.manual_seed(0)
    win = _dependency(PartitionAttention(8, 2, 7, "window"), (8, 14, 14), (2, 9))
    assert win.sum() == 49 and win[0:7, 7:14].all()
    grid = _dependency(PartitionAttention(8, 2, 7, "grid"), (8, 14, 14), (2, 9))
    assert grid.sum() == 49 and grid[0::2, 1::2].all()  # every other row and column: a 7x7 grid over the map
    shifted = _dependency(PartitionAttention(8, 2, 7, "window", shift=3), (8, 14, 14), (5, 5))
    # the shifted window around (5, 5) covers rows and columns 3..9, all in one region of the rolled map
    assert shifted.sum() == 49 and shifted[3:10, 3:10].all()
    corner = _dependency(PartitionAttention(8, 2, 7, "window", shift=3), (8, 14, 14), (0, 0))
    assert corner[0:3, 0:3].all() and corner.sum() == 9  # masked: the 3x3 corner region, nothing wrapped around


def test_window_attention_equals_attention_inside_each_window():
    torch.manual_seed(0)
    m = PartitionAttention(8, 2, 7, "window", rel_pos=False).eval()
    x = torch.randn(1, 8, 14, 7)
    with torch.no_grad():
        out = m(x)
        top = x[..., :7, :].flatten(2).transpose(1, 2)  # the first window's 49 tokens
        q, k, v = m.qkv(top).chunk(3, -1)
        heads = [t.reshape(1, 49, 2, 4).transpose(1, 2) for t in (q, k, v)]
        ref = m.proj(F.scaled_dot_product_attention(*heads).transpose(1, 2).reshape(1, 49, 8))
    torch.testing.assert_close(out[..., :7, :].flatten(2).transpose(1, 2), ref)


def test_cross_shaped_windows_receptive_field():
    torch.manual_seed(0)
    dep = _dependency(CrossShapedWindowAttention(8, 2, split_size=2), (8, 10, 12), (4, 7))
    expected = torch.zeros(10, 12, dtype=torch.bool)
    expected[4:6, :] = True  # horizontal stripe: rows 4-5
    expected[:, 6:8] = True  # vertical stripe: columns 6-7
    assert torch.equal(dep, expected)
    full = _dependency(CrossShapedWindowAttention(8, 2, split_size=7, full=True), (8, 5, 9), (1, 1))
    assert full.all()


def test_spatial_reduction_sees_the_whole_map():
    dep = _dependency(SpatialReductionAttention(8, 2, sr_ratio=4), (8, 9, 13), (0, 0))
    assert dep.all()


@pytest.mark.parametrize("name", ["fat_b0_attn_swin", "fat_b0_attn_cswin", "fat_b0_cat"])
def test_variants_train_with_the_cli(tmp_path, name):
    data = make_image_folder(tmp_path / "data", n_train=4, n_val=2)
    sets = [a for item in [*FAST_RECIPE, "epochs=1"] for a in ("--set", item)]
    argv = ["train", "--model", name, "--data", str(data), "--output", str(tmp_path / "run"), *sets]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == name and summary["finished"]


def test_relative_position_tables_get_no_weight_decay():
    swin = timm.create_model("fat_b0_attn_swin")
    names = swin.no_weight_decay()
    assert names and all(n.endswith("rel_pos.table") for n in names)
    assert len(names) == sum(1 for n, _ in swin.named_parameters() if "rel_pos" in n)
    assert timm.create_model("fat_b0").no_weight_decay() == set()


@pytest.mark.parametrize("name", sorted(VARIANTS))
@torch.no_grad()
def test_variant_scripts_like_eager(name):
    model = timm.create_model(name, **SMALL).eval()
    x = torch.randn(1, 3, 50, 38)
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_cswin_padded_keys_do_not_enter_the_softmax():
    """On a map not divisible by the stripe width, the last stripe attends to its real rows only."""
    from fatvit.layers.attention import StripeAttention

    torch.manual_seed(0)
    branch = StripeAttention(8, 2).eval()
    qkv = torch.randn(2, 5, 6, 3, 8)
    with torch.no_grad():
        full = branch(qkv, 2, 6)  # stripes of 2 rows: the last one (row 4) is half padding
        alone = branch(qkv[:, 4:5], 1, 6)  # that row as a stripe of its own: no padding at all
        torch.testing.assert_close(full[:, 4:5], alone)
        torch.testing.assert_close(full[:, :4], branch(qkv[:, :4], 2, 6))  # whole stripes unchanged

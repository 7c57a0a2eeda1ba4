"""FAT behaves as a timm model: any size, train and eval, features, scripting, compile."""

from __future__ import annotations

import pytest
import timm
import torch

import fatvit
from conftest import TINY_ARGS
from fatvit import FAT
from fatvit.models import create_model, registered_names

ALL = fatvit.model_names()


def test_all_sizes_registered_with_timm():
    assert set(ALL) == {"fat_b0", "fat_b1", "fat_b2", "fat_b3", "fat_b4", "fat_b5", "fat_b3_st"}
    assert set(ALL) <= set(timm.list_models("fat_*"))
    assert set(ALL) <= set(registered_names())


@pytest.mark.parametrize("name", ["fat_b0", "fat_b5"])  # one config function serves every size
def test_pretrained_cfg_and_classifier_names(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875
    assert tuple(cfg["mean"]) == timm.data.IMAGENET_DEFAULT_MEAN
    assert tuple(cfg["std"]) == timm.data.IMAGENET_DEFAULT_STD
    keys = model.state_dict().keys()
    assert cfg["first_conv"] + ".weight" in keys
    assert cfg["classifier"] + ".weight" in keys
    assert isinstance(model, FAT)


def test_create_model_arguments_reach_the_model(tmp_path):
    model = timm.create_model("fat_b0", num_classes=7, in_chans=1, drop_path_rate=0.2, interaction="reference")
    assert model.head.out_features == 7
    assert model.patch_embed.conv1.conv[0].in_channels == 1
    assert model.layers[0].blocks[0].attn.interaction == "reference"
    drops = [b.drop_path1.drop_prob for s in model.layers for b in s.blocks if hasattr(b.drop_path1, "drop_prob")]
    assert drops[-1] == pytest.approx(0.2) and drops == sorted(drops)
    # checkpoint_path loads the authors' layout ({'model': state_dict})
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    loaded = timm.create_model("fat_b0", num_classes=7, in_chans=1, checkpoint_path=str(tmp_path / "w.pth"))
    torch.testing.assert_close(loaded.head.weight, model.head.weight)


def test_default_drop_path_per_size():
    model = timm.create_model("fat_b1")
    assert model.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_unknown_model_name_suggests_closest():
    with pytest.raises(fatvit.errors.FatvitError, match="did you mean 'fat_b0'"):
        create_model("fat-b0")


@pytest.mark.parametrize("size", [(64, 64), (33, 47), (17, 95), (1, 1)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_any_input_size_forward_backward(size, mode):
    torch.manual_seed(0)
    model = FAT(**TINY_ARGS, drop_path_rate=0.1).train(mode == "train")
    batch = 2 if mode == "train" else 1  # eval with batch 1 too
    x = torch.randn(batch, 3, *size, requires_grad=True)
    out = model(x)
    assert out.shape == (batch, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_train_mode_batch_one_works():
    # plain BatchNorm on a 1x1 map in training mode has one value per channel: FAT must still run
    model = FAT(**TINY_ARGS).train()
    out = model(torch.randn(1, 3, 40, 40))
    out.sum().backward()
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    assert torch.isfinite(model.head.weight.grad).all()


def test_batchnorm_is_plain():
    model = timm.create_model("fat_b0")
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.BatchNorm2d in kinds and torch.nn.SyncBatchNorm not in kinds


def test_timm_default_cfg_checks():
    """The checks of timm's test_model_default_cfgs."""
    model = timm.create_model("fat_b0").eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"])
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == model.pretrained_cfg["pool_size"]
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape[-2:] == model.pretrained_cfg["pool_size"]
    model.reset_classifier(5, "avg")
    assert model.get_classifier().out_features == 5


def test_forward_head_pre_logits():
    model = FAT(**TINY_ARGS).eval()
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, 64, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert model.forward_head(feats).shape == (2, 10)


def test_features_only_strides_and_channels():
    model = timm.create_model("fat_b0", features_only=True).eval()
    assert model.feature_info.channels() == [32, 80, 160, 256]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        feats = model(x)
    assert [tuple(f.shape) for f in feats] == [(1, 32, 24, 32), (1, 80, 12, 16), (1, 160, 6, 8), (1, 256, 3, 4)]
    sub = timm.create_model("fat_b0", features_only=True, out_indices=(1, 3))
    assert sub.feature_info.channels() == [80, 256]
    assert [f.shape[1] for f in sub(x)] == [80, 256]


@torch.no_grad()
def test_forward_intermediates_agree_with_forward_features():
    model = FAT(**TINY_ARGS).eval()
    x = torch.randn(2, 3, 70, 50)
    final, inters = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape[1] for t in inters] == [16, 32, 48, 64]
    assert [t.shape[-2:] for t in inters] == [(18, 13), (9, 7), (5, 4), (3, 2)]
    # stage features are the last block's token-mixer output, at the stage's resolution
    first = model.layers[0]
    torch.testing.assert_close(inters[0], first.forward_to_feature(model.patch_embed(x)))
    only = model.forward_intermediates(x, indices=[1], intermediates_only=True)
    torch.testing.assert_close(only[0], inters[1])


def test_prune_intermediate_layers():
    model = FAT(**TINY_ARGS).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model.forward_intermediates(x, intermediates_only=True)
        model.prune_intermediate_layers([0, 1])
        pruned = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert len(model.layers) == 2
    torch.testing.assert_close(pruned[1], full[1])


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = FAT(**TINY_ARGS).eval()
    x = torch.randn(2, 3, 48, 48)
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], msg=n)


def test_group_matcher_covers_every_parameter():
    from timm.models import group_parameters

    model = timm.create_model("fat_b0")
    groups = group_parameters(model, model.group_matcher())
    names = {n for g in groups.values() for n in g}
    assert names == {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() == set()


@torch.no_grad()
def test_torchscript_matches_eager():
    model = FAT(**TINY_ARGS).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 45, 61)
    torch.testing.assert_close(scripted(x), model(x))
    feats = scripted.forward_intermediates(x, intermediates_only=True)
    assert len(feats) == 4


@torch.no_grad()
def test_torch_compile_matches_eager():
    model = FAT(**TINY_ARGS).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


def test_channels_last_matches():
    model = FAT(**TINY_ARGS).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_mismatched_config_lengths_rejected():
    with pytest.raises(ValueError, match="one entry per stage"):
        FAT(embed_dims=(16, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))


@pytest.mark.parametrize("feature_cls", ["getter", "fx"])
def test_every_backbone_parameter_gets_a_gradient(feature_cls):
    """The last stage's feature is its whole output: its final block's norm and FFN are used (no unused params)."""
    model = timm.create_model("fat_b0", features_only=True, feature_cls=feature_cls, **{
        k: v for k, v in TINY_ARGS.items() if k != "num_classes"})  # fmt: skip
    feats = model(torch.randn(2, 3, 64, 48))
    assert [f.shape[1] for f in feats] == [16, 32, 48, 64]
    sum(f.mean() for f in feats).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_last_stage_feature_is_the_stage_output():
    model = FAT(**TINY_ARGS).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x)
        torch.testing.assert_close(model.norm(inters[-1]), final)


@pytest.mark.parametrize("name", ["fat_b0", "fat_b0_cat", "fat_b0_kv_conv", "fat_b0_attn_swin", "fat_b0_attn_cswin"])
def test_fx_feature_extraction(name):
    """timm's FX test (test_model_forward_fx) and its FeatureGraphNet."""
    from timm.models._features_fx import create_feature_extractor, get_graph_node_names

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 70, 90)
    _, eval_nodes = get_graph_node_names(model)
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx_model(x).values())), model(x))


def test_fx_features_match_and_torchvision_extractor_works():
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    getter = timm.create_model("fat_b0", features_only=True).eval()
    torch.manual_seed(0)
    graph = timm.create_model("fat_b0", features_only=True, feature_cls="fx").eval()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        for a, b in zip(getter(x), graph(x)):
            torch.testing.assert_close(a, b)
        model = timm.create_model("fat_b0").eval()
        plain = create_feature_extractor(model, return_nodes={"layers.2.blocks.5.mixer_out": "c4", "head": "logits"})
        out = plain(x)
        torch.testing.assert_close(out["logits"], model(x))
        assert out["c4"].shape == (1, 160, 5, 6)


def test_head_init_options():
    torch.manual_seed(0)
    timm_init = FAT(**TINY_ARGS).head
    torch.manual_seed(0)
    default = FAT(**TINY_ARGS, head_init="default").head
    assert timm_init.weight.std() < 0.03 and torch.all(timm_init.bias == 0)  # truncated normal, std 0.02
    assert default.weight.std() > 0.05  # PyTorch's: uniform within 1/sqrt(64)
    assert default.weight.abs().max() <= 1 / 8
    with pytest.raises(ValueError, match="head_init"):
        FAT(**TINY_ARGS, head_init="xavier")


def _timm_fx_model(model):
    """timm's ``tests/test_models.py::_create_fx_model`` (eval): torchvision's feature extractor with timm's
    leaf modules and wrapped functions, returning the last node."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                  param_shapes_constant=True)  # fmt: skip
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=kwargs)  # fmt: skip


@pytest.mark.parametrize("name", ["fat_b0", "fat_b3_st", "fat_b0_attn_swin"])
def test_timm_fx_then_torchscript_forward(name):
    """timm's test_model_forward_fx_torchscript: FX-trace the model, script the graph, run it (128x128)."""
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    scripted = torch.jit.script(_timm_fx_model(model))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        (out,) = scripted(x).values()
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-4)
    assert out.shape == (1, 1000) and not out.isnan().any()


@pytest.mark.parametrize("name", ALL)
def test_fvcore_counts_what_summary_counts_with_grad_enabled_or_not(name):
    """fvcore's FlopCountAnalysis (what timm's benchmark --profile runs) traces with torch.jit.trace: every
    depthwise conv must be an aten::_convolution it counts, with gradients enabled (the training path) too."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    from fatvit.flops import model_cost, sdpa_flop_jit

    model = timm.create_model(name).eval()
    expected = model_cost(model, (3, 96, 96)).full_gflops
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            analysis = FlopCountAnalysis(model, torch.zeros(1, 3, 96, 96))
            analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
            analysis.unsupported_ops_warnings(False)
            assert analysis.total() / 1e9 == pytest.approx(expected, rel=1e-9), grad
            assert "prim::PythonOp" not in analysis.unsupported_ops(), grad

"""fatvit.deploy: the inference copy computes what the model computes, on every size, option and input shape."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from conftest import TINY_ARGS, load_reference, randomize_batchnorm
from fatvit import FAT, MODEL_CONFIGS
from fatvit.deploy import compile_inference, deploy
from fatvit.layers import INTERACTIONS, ConvFFN, DownsampleShortcut, RefinedDownsample
from fatvit.layers.dwconv import DepthwiseConv2d
from fatvit.layers.reparam import Pointwise, fold_batchnorm
from fatvit.models.fat import FATBlock

TOL = 1e-4


def timm_reparameterized(model: nn.Module) -> nn.Module:
    """timm's own walker (``timm.utils.reparameterize_model``) on a copy of ``model``."""
    return timm.utils.reparameterize_model(model)


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def is_batchnorm_key(model: nn.Module, key: str) -> bool:
    """Whether state-dict ``key`` of ``model`` belongs to a BatchNorm."""
    return isinstance(model.get_submodule(key.rpartition(".")[0]), nn.BatchNorm2d)


def tiny(**kwargs) -> FAT:
    return randomize_batchnorm(FAT(**{**TINY_ARGS, **kwargs})).eval()


SHAPES = [(1, 3, 64, 64), (2, 3, 45, 71), (3, 3, 33, 32)]


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_every_size_matches(name):
    model = randomize_batchnorm(timm.create_model(name)).eval()
    fast, walked = deploy(model), timm_reparameterized(model)
    for shape in [(1, 3, 64, 64), (2, 3, 39, 50)]:
        x = torch.randn(shape)
        assert max_diff(model, fast, x) <= TOL, shape
        assert max_diff(walked, fast, x) <= TOL, shape
    assert walked.state_dict().keys() == fast.state_dict().keys()


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("kv_downsample", ["refined", "pool", "conv", "conv_overlap"])
def test_every_fasa_option_matches(interaction, kv_downsample):
    model = tiny(interaction=interaction, kv_downsample=kv_downsample)
    fast, walked = deploy(model), timm_reparameterized(model)
    for shape in SHAPES:
        x = torch.randn(shape)
        assert max_diff(model, fast, x) <= TOL, shape
        assert max_diff(walked, fast, x) <= TOL, shape


@pytest.mark.parametrize("kwargs", [dict(cpe=False), dict(attention="swin"), dict(attention="pvt"),
                                    dict(attention="twins"), dict(attention="maxvit"), dict(attention="cswin"),
                                    dict(num_classes=0, global_pool="")])  # fmt: skip
def test_ablations_and_compared_attentions_match(kwargs):
    model = tiny(**kwargs)
    fast, walked = deploy(model), timm_reparameterized(model)
    for shape in SHAPES[:2]:
        x = torch.randn(shape)
        assert max_diff(model, fast, x) <= TOL, shape
        assert max_diff(walked, fast, x) <= TOL, shape


def test_reproduces_the_authors_outputs():
    """Deployed from the authors' checkpoint layout, the model still gives their reference outputs."""
    manifest, state_dict, cases = load_reference("tiny")
    model = FAT(**manifest["config"], interaction="reference").eval()
    model.load_state_dict(state_dict)
    fast = deploy(model)
    with torch.no_grad():
        for x, case in cases:
            assert (fast(x) - case["logits"]).abs().max() <= TOL, case["input_shape"]


def test_inference_form_has_no_batchnorm_no_1x1_conv_and_is_channels_last():
    fast = deploy(tiny())
    kinds = {type(m) for m in fast.modules()}
    assert nn.BatchNorm2d not in kinds
    assert not [m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    blocks = [b for stage in fast.layers for b in stage.blocks]
    assert all(type(b) is FATBlock and not b.cpe_residual and not b.ffn.dw_residual for b in blocks)
    assert {type(m) for b in blocks for m in (b.ffn.fc1, b.ffn.fc2, b.attn.q, b.attn.kv, b.attn.mixer)} == {Pointwise}
    # key names stay: the deployed keys are the original's less the BatchNorms'
    trained_form = tiny()
    assert set(fast.state_dict()) == {k for k in trained_form.state_dict() if not is_batchnorm_key(trained_form, k)}
    assert not any(p.requires_grad for p in fast.parameters())
    assert not fast.training
    for p in fast.parameters():
        if p.dim() == 4:
            assert p.is_contiguous(memory_format=torch.channels_last)
    # channels-first and channels-last inputs give the same result
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(fast(x), fast(x.contiguous(memory_format=torch.channels_last)))


def test_original_is_left_unchanged():
    model = FAT(**TINY_ARGS, drop_path_rate=0.1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deploy(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, Pointwise) for m in model.modules())
    assert all(b.cpe_residual for stage in model.layers for b in stage.blocks)
    assert [b.ffn.dw_residual for b in model.layers[0].blocks] == [True] * (len(model.layers[0].blocks) - 1) + [False]


def test_from_training_mode_it_computes_the_eval_function():
    """Deploying a model mid-training folds the running statistics: the result is the eval-mode model."""
    model = tiny(drop_path_rate=0.2).train()
    fast = deploy(model)
    x = torch.randn(2, 3, 48, 48)
    assert max_diff(model.eval(), fast, x) <= TOL


def test_intermediate_features_match():
    model = tiny()
    fast = deploy(model)
    x = torch.randn(1, 3, 70, 58)
    with torch.no_grad():
        ref, got = (
            model.forward_intermediates(x, intermediates_only=True),
            fast.forward_intermediates(x, intermediates_only=True),
        )
    assert [f.shape for f in ref] == [f.shape for f in got]
    assert max((a - b).abs().max().item() for a, b in zip(ref, got)) <= TOL


def test_fx_trace_and_torchscript():
    fast = deploy(tiny())
    x = torch.randn(2, 3, 50, 44)
    traced = torch.fx.symbolic_trace(fast)
    scripted = torch.jit.script(fast)
    with torch.no_grad():
        assert (traced(x) - fast(x)).abs().max() <= 1e-5
        assert (scripted(x) - fast(x)).abs().max() <= 1e-5


def test_compiled_matches_on_several_shapes():
    """torch.compile of the deployed form, weights frozen (one block per stage: compiling costs a minute here)."""
    model = tiny(depths=(1, 1, 1, 1))
    compiled = compile_inference(deploy(model))
    for shape in [(1, 3, 64, 64), (2, 3, 45, 71)]:  # a new shape recompiles
        x = torch.randn(shape)
        with torch.no_grad():
            assert (compiled(x) - model(x)).abs().max() <= TOL, shape


# ----- the rewrites, one by one --------------------------------------------------------------------------


def test_pointwise_is_the_1x1_conv():
    conv = nn.Conv2d(12, 20, 1)
    pw = Pointwise.from_conv(conv)
    x = torch.randn(2, 12, 7, 9)
    with torch.no_grad():
        assert (pw(x) - conv(x)).abs().max() <= 1e-5
        assert pw(x).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="1x1"):
        Pointwise.from_conv(nn.Conv2d(12, 20, 3))


def test_identity_and_batchnorm_fold_into_a_depthwise_conv():
    conv = DepthwiseConv2d(8, 5, padding=2)
    bn = randomize_batchnorm(nn.Sequential(nn.BatchNorm2d(8)))[0].eval()
    x = torch.randn(2, 8, 11, 6)
    with torch.no_grad():
        expected = bn(conv(x, residual=True))
        assert (expected - bn(x + conv(x))).abs().max() <= 1e-5
    conv.fold_residual()
    fold_batchnorm(conv, bn)
    with torch.no_grad():
        assert (conv(x) - expected).abs().max() <= 1e-5
    fold_batchnorm(conv, nn.Identity())  # an already folded BatchNorm: nothing to do
    with torch.no_grad():
        assert (conv(x) - expected).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="stride-1"):
        DepthwiseConv2d(8, 5, stride=2, padding=2).fold_residual()


@pytest.mark.parametrize("stride", [1, 2])
def test_convffn_shortcut_and_refined_downsample_reparameterize_exactly_in_place(stride):
    x = torch.randn(2, 16, 13, 10)
    for module in [ConvFFN(16, 64, 24, stride=stride), DownsampleShortcut(16, 24), RefinedDownsample(16, 4)]:
        module = randomize_batchnorm(module).eval()
        with torch.no_grad():
            expected = module(x)
        keys = {k for k in module.state_dict() if not is_batchnorm_key(module, k)}
        for pointwise_linear in (False, True, True):  # the second and third calls fold nothing twice
            module.reparameterize(pointwise_linear=pointwise_linear)
            assert not any(isinstance(m, nn.BatchNorm2d) for m in module.modules())
            assert set(module.state_dict()) == keys
            with torch.no_grad():
                assert (module(x) - expected).abs().max() <= 1e-5, type(module).__name__
        assert any(isinstance(m, Pointwise) for m in module.modules())


def test_timm_walker_and_deploy_give_the_same_form_and_the_walker_can_keep_the_original():
    """timm.utils.reparameterize_model finds FAT's reparameterize methods (parents first): deploy's form, less
    channels-last memory; inplace=False (its default) leaves the model as it was."""
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    walked = timm.utils.reparameterize_model(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fast = deploy(model, channels_last=False)
    assert [type(m) for m in walked.modules()] == [type(m) for m in fast.modules()]
    assert max_diff(walked, model, torch.randn(2, 3, 37, 52)) <= TOL
    kept = deploy(model, pointwise_linear=False)
    assert not any(isinstance(m, Pointwise) for m in kept.modules())
    assert max_diff(kept, model, torch.randn(2, 3, 37, 52)) <= TOL


def test_deploy_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        deploy("fat_b0")


def test_a_saved_model_is_deployed_after_loading_and_deployed_weights_fit_only_a_deployed_model(digits_run, tmp_path,
                                                                                                capsys):  # fmt: skip
    """The supported way (README, 'Saving a deployed model'): save the model as trained, deploy after loading."""
    from conftest import cli_error
    from fatvit.checkpoint import CheckpointError, apply_state_dict, read_checkpoint, save_safetensors
    from fatvit.models import create_model
    from fatvit.tasks.classification.inference import load_classifier

    out, _ = digits_run
    classifier = load_classifier(out / "model.safetensors")
    fast = classifier.deploy()
    assert fast.classes == classifier.classes and fast.transform is classifier.transform
    assert any(isinstance(m, nn.BatchNorm2d) for m in classifier.model.modules())  # the loaded model is untouched
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast.model(x), classifier.model(x), atol=1e-4, rtol=0)
    deployed_file = tmp_path / "deployed.safetensors"
    save_safetensors(fast.model, deployed_file, meta=read_checkpoint(out / "model.safetensors")[1])
    with pytest.raises(CheckpointError, match=r"holds the weights of a deployed FAT \(fatvit.deploy.*deploy it after"):
        load_classifier(deployed_file)
    line = cli_error(capsys, ["eval", "--checkpoint", str(deployed_file)])
    assert line.startswith(f"fatvit: error: {deployed_file} holds the weights of a deployed FAT")
    again = deploy(create_model(classifier.name, num_classes=10, **classifier.config.model_kwargs))
    state, meta = read_checkpoint(deployed_file)
    apply_state_dict(again, state, deployed_file, meta=meta)  # they fit the deployed form of the same model
    with torch.no_grad():
        torch.testing.assert_close(again(x), fast.model(x), atol=0, rtol=0)

"""The faster training paths keep the math: fatvit's depthwise-conv weight gradient, and the released code's order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_ARGS
from fatvit import FAT
from fatvit.layers import dwconv
from fatvit.layers.dwconv import SMALL_KERNEL, DepthwiseConv2d
from fatvit.layers.ffn import GELU
from fatvit.models.released import ReleasedFAT


@pytest.mark.parametrize("kernel, stride, size", [(5, 1, 14), (7, 1, 9), (3, 1, 16), (5, 2, 13), (5, 2, 12), (2, 2, 7)])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "channels_last_per_image"])
def test_depthwise_gradients_equal_conv2d(kernel, stride, size, layout, monkeypatch):
    if layout == "channels_last_per_image":  # every channels-last input takes the one-convolution-per-image form
        monkeypatch.setattr(dwconv, "SMALL_IMAGE", 0)
    torch.manual_seed(0)
    padding = kernel // 2 if kernel % 2 else 0
    fast = DepthwiseConv2d(6, kernel, stride=stride, padding=padding)
    plain = nn.Conv2d(6, 6, kernel, stride=stride, padding=padding, groups=6)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 6, size, size + 1)
    if layout != "channels_first":
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), plain(xb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    assert torch.equal(ya, yb)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last, small_image, convs", [(False, 0, 1), (True, 10**9, 1), (True, 0, 3)])
def test_weight_gradient_forms(channels_last, small_image, convs, monkeypatch):
    """Channels-first and small channels-last inputs: one convolution; larger channels-last ones: one per image."""
    monkeypatch.setattr(dwconv, "SMALL_IMAGE", small_image)
    calls = []
    conv2d = F.conv2d
    monkeypatch.setattr(dwconv.F, "conv2d", lambda *args: calls.append(args[1].shape) or conv2d(*args))
    conv = DepthwiseConv2d(4, 5, padding=2)
    x = torch.randn(3, 4, 8, 8)
    y = conv(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    calls.clear()
    y.sum().backward()
    kernel_shapes = [shape for shape in calls if shape[-2:] == (8, 8)]  # the gradient maps as kernels
    assert len(kernel_shapes) == convs
    assert kernel_shapes[0][0] == (4 if convs == 3 else 12)


def test_which_convolutions_take_the_custom_weight_gradient():
    assert SMALL_KERNEL == 9
    large, small = DepthwiseConv2d(4, 5, padding=2), DepthwiseConv2d(4, 3, padding=1)
    x = torch.randn(2, 4, 20, 20)
    assert "DepthwiseConv" in type(large(x).grad_fn).__name__
    assert "DepthwiseConv" in type(large(x, residual=True).grad_fn).__name__
    assert "Depthwise" not in type(small(x).grad_fn).__name__  # 3x3: oneDNN's own backward
    with torch.no_grad():
        assert large(torch.randn(1, 4, 8, 8)).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: PyTorch's own backward
        mixed = large(torch.randn(2, 4, 8, 8))
    assert "Depthwise" not in type(mixed.grad_fn).__name__
    mixed.float().sum().backward()
    assert large.weight.grad is not None


def test_tracers_see_the_plain_convolution(monkeypatch):
    """torch.jit.trace (fvcore), torch.export and torch.compile record a plain convolution with gradients
    enabled: the custom autograd path is an opaque prim::PythonOp to torch.jit.trace."""
    conv = DepthwiseConv2d(4, 7, padding=3)
    x = torch.randn(2, 4, 12, 12)
    traced = torch.jit.trace(conv, (x,))
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds and "prim::PythonOp" not in kinds

    def refuse(*args):
        raise AssertionError("the custom autograd path was taken under a tracer")

    monkeypatch.setattr(dwconv._DepthwiseConv, "apply", refuse)
    exported = torch.export.export(conv, (x,))
    assert any("conv" in str(node.target) for node in exported.graph.nodes)
    compiled = torch.compile(conv, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.conv2d(x, conv.weight, conv.bias, padding=3, groups=4))
    with pytest.raises(AssertionError, match="custom autograd path"):  # the eager call still takes it
        conv(x)


@pytest.mark.parametrize("kernel", [3, 5, 9])
@pytest.mark.parametrize("channels_last", [False, True])
def test_residual_form_is_input_plus_conv(kernel, channels_last):
    """conv(x, residual=True) = x + conv(x): outputs, and the gradients of the input, weight and bias."""
    torch.manual_seed(0)
    conv = DepthwiseConv2d(5, kernel, padding=kernel // 2)
    x = torch.randn(2, 5, 11, 13)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = conv(xa, residual=True), xb + conv(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-6, atol=1e-6)
    grad = torch.randn_like(ya)
    (ga,) = torch.autograd.grad(ya, [conv.weight], grad, retain_graph=True)
    (gb,) = torch.autograd.grad(yb, [conv.weight], grad, retain_graph=True)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    assert set(conv.state_dict()) == {"weight", "bias"}  # the identity is not a parameter or buffer
    with pytest.raises(ValueError, match="stride-1"):
        DepthwiseConv2d(5, kernel, stride=2, padding=kernel // 2)(x, residual=True)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_in_memory_order_is_gelu(channels_last, approximate):
    """The values and input gradient of nn.GELU on the channels-first map, in the input's memory format.

    Equal up to float32 rounding: which elements fall in a vectorised loop's
    tail depends on the layout, and scalar and vector kernels differ in the
    last bits.
    """
    x = torch.randn(2, 6, 5, 7)
    xa = (x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()).requires_grad_()
    xb = x.clone().requires_grad_()
    ya, yb = GELU(approximate)(xa), nn.GELU(approximate)(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    assert ya.is_contiguous(memory_format=torch.channels_last) == channels_last
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ya, nn.GELU(approximate)(xa), rtol=1e-6, atol=1e-6)
    assert torch.equal(GELU()(x[:, :, 1:]), F.gelu(x[:, :, 1:]))  # neither layout: plain GELU


def test_depthwise_state_dict_is_conv2d_and_frozen_weights_need_no_weight_grad():
    fast = DepthwiseConv2d(4, 3, padding=1)
    assert isinstance(fast, nn.Conv2d) and set(fast.state_dict()) == {"weight", "bias"}
    assert fast.weight.shape == (4, 1, 3, 3)
    fast.requires_grad_(False)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is None


def _randomize(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("size", [(64, 64), (45, 71)])
def test_released_order_gives_the_same_outputs_in_eval(size):
    model = _randomize(FAT(**TINY_ARGS, interaction="reference")).eval()
    released = ReleasedFAT(model).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert (released(x) - model(x)).abs().max() <= 1e-5


def test_a_training_step_of_fatvit_equals_the_released_code():
    """Same weights, same batch: the loss and every parameter's gradient agree (train-mode BatchNorm, channels-last)."""
    model = FAT(**TINY_ARGS, interaction="reference").train()
    released = ReleasedFAT(model).train()
    fast = model.to(memory_format=torch.channels_last)
    x, y = torch.randn(4, 3, 48, 40), torch.randint(0, 10, (4,))
    loss_fast = F.cross_entropy(fast(x.contiguous(memory_format=torch.channels_last)), y)
    loss_released = F.cross_entropy(released(x), y)
    torch.testing.assert_close(loss_fast, loss_released, rtol=1e-5, atol=1e-5)
    loss_fast.backward()
    loss_released.backward()
    grads = dict(released.model.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-3, atol=1e-5, msg=name)


def test_released_takes_only_what_the_released_code_has():
    for kwargs in [dict(interaction="bidirectional"), dict(interaction="reference", kv_downsample="pool"),
                   dict(interaction="reference", cpe=False), dict(attention="swin")]:  # fmt: skip
        with pytest.raises(ValueError, match="released code"):
            ReleasedFAT(FAT(**TINY_ARGS, **kwargs))

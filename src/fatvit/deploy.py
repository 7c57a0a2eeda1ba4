"""``fatvit.deploy``: an inference copy of a FAT model, same outputs, faster on a CPU.

FAT's modules re-parameterise themselves in place, in timm's convention: each
has a ``reparameterize()`` method, so ``timm.utils.reparameterize_model(model)``
gives the same inference form as :func:`deploy` (less the channels-last
memory). The rewrites (:mod:`fatvit.layers.reparam`):

* every BatchNorm is folded into the conv before it (stem, refined
  downsample, ConvFFN, shortcut), with its running statistics;
* the residuals around stride-1 depthwise convs (the CPE, the ConvFFN's
  ``h + DWConv(h)``) become the conv's centre tap;
* every 1x1 convolution runs as one matrix product (:class:`~fatvit.layers.reparam.Pointwise`);
* weights and activations are channels-last, so depthwise convs and FASA's
  attention run on their fast kernels without layout copies.

The math is unchanged: outputs match the eval-mode model within float32
rounding, for every size, option and input size. The copy is for inference
only (BatchNorm statistics are frozen into the weights; drop paths are gone).
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable

import torch
from torch import nn

__all__ = ["deploy", "reparameterize", "compile_inference"]


def reparameterize(model: nn.Module, pointwise_linear: bool = True) -> nn.Module:
    """Call, in place, the ``reparameterize()`` method of every module of ``model`` (itself included); returns it.

    ``pointwise_linear=False`` keeps 1x1 convolutions as convolutions; it is
    passed to the methods that take it (FAT's), the others are called bare.
    """
    with torch.no_grad():
        for module in list(model.modules()):
            method = getattr(module, "reparameterize", None)
            if not callable(method):
                continue
            if "pointwise_linear" in inspect.signature(method).parameters:
                method(pointwise_linear=pointwise_linear)
            else:
                method()
    return model


def deploy(model: nn.Module, channels_last: bool = True, pointwise_linear: bool = True) -> nn.Module:
    """An inference copy of ``model`` (any FAT model, in any mode), re-parameterised for speed.

    ``model`` itself is left unchanged. The copy is in eval mode, with
    gradients off, and (by default) channels-last; it accepts inputs in
    either memory format and of any size. ``pointwise_linear=False`` keeps
    1x1 convolutions as convolutions (for ONNX Runtime, whose own layout
    transforms handle convolutions best).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"deploy expects a torch.nn.Module, got {type(model).__name__}")
    model = reparameterize(copy.deepcopy(model).eval(), pointwise_linear)
    model.requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_inference(model: nn.Module, **compile_kwargs) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` of an inference model (as :func:`deploy` makes), its weights frozen into the graph.

    Returns a function of the input batch. Inductor's ``freezing`` (weights
    as constants: conv weights pre-packed, constant folding) is on whenever
    it compiles, for each new input shape; calls run without autograd.
    ``compile_kwargs`` go to ``torch.compile``.
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, **compile_kwargs)

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True), torch.no_grad():
            return compiled(x)

    return run

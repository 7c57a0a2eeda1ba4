"""FASA follows the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fatvit.layers import FASA, RefinedDownsample


def _explicit_fasa(m: FASA, x: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """FASA written out with explicit matmuls, from the paper's equations."""
    b, c, h, w = x.shape
    q = m.q(x)
    k, v = m.kv(m.pool(x)).chunk(2, dim=1)
    d = m.head_dim
    qh = q.reshape(b, m.num_heads, d, h * w)
    kh = k.reshape(b, m.num_heads, d, -1)
    vh = v.reshape(b, m.num_heads, d, -1)
    attn = torch.softmax(qh.transpose(-1, -2) @ kh / math.sqrt(d), dim=-1)  # (b, heads, N, n)
    x_global = (vh @ attn.transpose(-1, -2)).reshape(b, c, h, w)
    q_prime = m.local_mixer(q)
    x_local = q_prime * torch.sigmoid(q_prime)
    if bidirectional:
        out = (x_local * torch.sigmoid(x_global)) * (x_global * torch.sigmoid(x_local))
    else:
        out = x_local * torch.sigmoid(x_global) * x_global
    return m.mixer(out)


@pytest.mark.parametrize("interaction", ["bidirectional", "reference"])
@pytest.mark.parametrize("window_size", [1, 2, 4, 8])
@torch.no_grad()
def test_fasa_matches_equations(interaction, window_size):
    torch.manual_seed(0)
    m = FASA(24, 3, kernel_size=5, window_size=window_size, interaction=interaction).eval()
    x = torch.randn(2, 24, 19, 13)
    expected = _explicit_fasa(m, x, interaction == "bidirectional")
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size,ws", [((64, 64), 8), ((50, 77), 8), ((7, 9), 4), ((3, 3), 2)])
def test_refined_downsample_output_is_ceil_of_input_over_window(size, ws):
    pool = RefinedDownsample(8, ws)
    assert len([n for n, _ in pool.named_children() if n.startswith("conv")]) == int(math.log2(ws))
    out = pool(torch.randn(1, 8, *size))
    assert out.shape[-2:] == tuple(math.ceil(s / ws) for s in size)


def test_fasa_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        FASA(10, 3, 3, 1)
    with pytest.raises(ValueError, match="interaction"):
        FASA(8, 2, 3, 1, interaction="sideways")
    with pytest.raises(ValueError, match="power of two"):
        RefinedDownsample(8, 3)


def test_fasa_uses_scaled_dot_product_attention(monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    FASA(8, 2, 3, 2)(torch.randn(1, 8, 6, 6))
    assert calls == [torch.Size([1, 2, 36, 4])]

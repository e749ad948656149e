"""The CNN's layer sequence (issue 19): polgen runs each ``PReLU -> MaxPool`` pair of the
reference's blocks as ``MaxPool -> PReLU`` while the PReLU slope is >= 0 (a quarter of the
activations).  Checked here against the plain ``nn.Sequential`` of the same modules - the
reference's order: same values, same gradients to float32 rounding, and the reference's order with
a negative slope."""

from __future__ import annotations

import numpy as np
import pytest


def test_pool_first_blocks_equal_the_reference_order():
    torch = pytest.importorskip("torch")
    from polgen.stlr.cnn import build_network

    torch.manual_seed(3)
    net = build_network(torch, 4, 3, np.ones(5))
    blocks = net.conv_layers
    plain = torch.nn.Sequential(*list(blocks))  # the same modules in the reference's order
    nn = torch.nn
    kinds = [nn.Conv2d, nn.BatchNorm2d, nn.PReLU, nn.MaxPool2d]
    assert all(isinstance(m, k) for m, k in zip(list(blocks)[:4], kinds))
    assert sum(isinstance(m, nn.PReLU) for m in blocks) == 3
    x = torch.rand(48, 1, 16, 16)
    torch.testing.assert_close(blocks(x), plain(x), rtol=0, atol=0)
    params = list(blocks.parameters())
    g1 = torch.autograd.grad((blocks(x) ** 2).sum(), params)
    g2 = torch.autograd.grad((plain(x) ** 2).sum(), params)
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() <= 1e-5 * (b.abs().max() + 1e-12)
    with torch.no_grad():  # a negative slope: PReLU is not monotone, the reference's order runs
        for m in blocks:
            if isinstance(m, torch.nn.PReLU):
                m.weight.fill_(-0.4)
    torch.testing.assert_close(blocks(x), plain(x), rtol=0, atol=0)
    swapped = torch.nn.Sequential(*[blocks[i] for i in (0, 1, 3, 2)])  # pooling first is now different
    assert (swapped(x) - plain[:4](x)).abs().max() > 1e-3

"""GroupNorm statistics that stay accurate in ONNX Runtime on large images.

``torch.onnx`` exports ``nn.GroupNorm`` as Reshape + InstanceNormalization,
and ONNX Runtime 1.32 sums each group in float32 in one long run. On a group
of a few million values (the first VAE layers of an 896x832 image) that
loses about 3e-4 of the normalized value (checked 2026-11-27: InstanceNorm
and a plain two-pass ReduceMean on [1, 2, 3e6] values of mean 3 both err by
3.3e-4; 16e6 values: 3.6e-3), and the random-weight VAE amplifies that to
0.02 in the latent, where PyTorch's fp32 stays within 1e-5 of float64.

Here each group's mean and variance are taken row by row first (over the
last axis, the image width), then over the rows: ONNX Runtime then never
sums more than one row plus one column of partial means in a run. The math
is GroupNorm's (biased variance, eps inside the square root); only the
order of the sums changes. Statistics are taken in float32 for fp16 graphs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def rowwise_group_stats(x: torch.Tensor, groups: int):
    """Per-(sample, group) mean and biased variance of ``x`` [N, C, ..., W],
    each as [N, groups, 1, 1], summed row by row; and ``x`` as [N, groups, rows, W]."""
    rows = x.reshape(x.shape[0], groups, -1, x.shape[-1])
    as_float = rows if rows.dtype == torch.float32 else rows.float()
    mean = as_float.mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
    var = (as_float - mean).square().mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
    return mean, var, rows


class RowwiseGroupNorm(nn.Module):
    """``nn.GroupNorm`` (affine) with row-by-row statistics; same parameters."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.num_groups = norm.num_groups
        self.num_channels = norm.num_channels
        self.eps = norm.eps
        self.affine = norm.affine
        self.weight = norm.weight
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var, rows = rowwise_group_stats(x, self.num_groups)
        scale = torch.rsqrt(var + self.eps)
        normalized = ((rows.float() - mean) * scale).to(x.dtype).reshape(x.shape)
        if not self.affine:
            return normalized
        view = (1, self.num_channels) + (1,) * (x.dim() - 2)
        return normalized * self.weight.reshape(view) + self.bias.reshape(view)


@contextlib.contextmanager
def rowwise_group_norms(module: nn.Module) -> Iterator[nn.Module]:
    """Every ``nn.GroupNorm`` under ``module`` swapped for a ``RowwiseGroupNorm``
    sharing its parameters, restored on exit (so the PyTorch model used as the
    reference keeps its own GroupNorm)."""
    swapped = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, RowwiseGroupNorm(child))
                swapped.append((parent, name, child))
    try:
        yield module
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)

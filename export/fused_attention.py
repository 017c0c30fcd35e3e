"""Attention written as one ONNX Runtime ``com.microsoft.MultiHeadAttention`` node.

diffusers' attention traces to MatMul, Mul, Softmax, MatMul with the head
split and merge around them: on a GPU the [heads, 4096, 4096] score matrix of
the first UNet level at 512x512 is written to memory and read back. ONNX
Runtime's MultiHeadAttention takes query, key and value as [batch, tokens,
heads x head width] and runs fused kernels on CUDA (flash or memory-efficient
attention); it has a CPU kernel too, which is how the tests check it against
the PyTorch references.

Only the attention core changes: the projections, the VAE's group norm,
residual and rescale stay as diffusers computes them. A module this does not
cover exactly (a mask, query/key norms, another scale, a spatial norm) keeps
diffusers' processor.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _MultiHeadAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(head width)) v per head, on [batch, tokens, width] inputs; exported as
    one com.microsoft.MultiHeadAttention node."""

    @staticmethod
    def forward(ctx, query, key, value, heads: int):  # noqa: ARG004 (ctx: autograd's)
        batch = query.shape[0]
        split = lambda t: t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(query), split(key), split(value))
        return out.transpose(1, 2).reshape(batch, -1, value.shape[-1])

    @staticmethod
    def symbolic(g, query, key, value, heads: int):
        out = g.op("com.microsoft::MultiHeadAttention", query, key, value, num_heads_i=heads)
        # [batch, tokens, width]: the query's type (value and query have one width here)
        out.setType(query.type())
        return out


class FusedAttnProcessor:
    """diffusers' AttnProcessor2_0 steps around one fused attention node."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            raise ValueError("the fused attention export takes no attention mask")
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        hidden_states = _MultiHeadAttention.apply(query, key, value, attn.heads).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def covers(attn) -> bool:
    """Whether ``FusedAttnProcessor`` computes exactly what diffusers' AttnProcessor2_0 (the
    processor every exported model runs, ``model.use_plain_attention``; it ignores the upcast
    flags, as this does) does for ``attn``."""
    inner = attn.to_q.out_features
    head_width = inner // attn.heads
    return (
        inner % attn.heads == 0
        and getattr(attn, "spatial_norm", None) is None
        and getattr(attn, "norm_q", None) is None
        and getattr(attn, "norm_k", None) is None
        and math.isclose(float(attn.scale), head_width ** -0.5, rel_tol=1e-6)
        and attn.to_v.out_features == inner
    )


@contextlib.contextmanager
def fused_attention(module: nn.Module) -> Iterator[int]:
    """Every diffusers ``Attention`` under ``module`` that ``covers`` handles runs through
    ``FusedAttnProcessor`` (yields how many), its own processor restored on exit."""
    from diffusers.models.attention_processor import Attention

    swapped = []
    for sub in module.modules():
        if isinstance(sub, Attention) and covers(sub):
            swapped.append((sub, sub.processor))
            sub.set_processor(FusedAttnProcessor())
    try:
        yield len(swapped)
    finally:
        for sub, processor in swapped:
            sub.set_processor(processor)

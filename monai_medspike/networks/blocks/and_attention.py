"""All-neuron decomposed self-attention (AND-SA) of MedSpikeFormer.

Reference: "MedSpikeFormer: All Neurons Matter for Medical Image Segmentation" (ICLR 2026 submission).

From spike maps ``Q, K`` in {0, 1} the block uses both the activated neurons (A: ``Q``, ``K``) and the inactivated
ones (I: ``1 - Q``, ``1 - K``). Per head, with ``Q, K, V`` of shape ``(d, N)`` (channels x tokens) the four
interaction terms are::

    O_xy = s * Q_x @ K_y^T @ V        for (x, y) in {AA, II, AI, IA},   s = C ** -0.5,  no softmax

The attention maps are ``d x d`` (channel attention), so the cost is linear in the number of tokens ``N``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.modules.module as nn_hooks
from torch.autograd.function import once_differentiable

from monai_medspike.networks.blocks.convolutions import ConvBN, DSConv, SpikingMLP
from monai_medspike.networks.layers import (
    DEFAULT_NEURON,
    TimeDistributed,
    as_format_of,
    capturing_graph,
    get_activation,
    is_channels_last,
)
from monai_medspike.networks.layers.checkpointing import CheckpointedSegments

__all__ = [
    "INTERACTIONS",
    "AllNeuronSelfAttention",
    "AttentionProducts",
    "all_neuron_attention",
    "check_interactions",
    "token_major_attention",
]

INTERACTIONS: tuple[str, ...] = ("aa", "ii", "ai", "ia")
"""The four interaction terms: activated/inactivated query neurons x activated/inactivated key neurons."""

# the published fusion: [O_AA + O_II, O_AI + O_IA]
_FUSION_GROUPS: tuple[tuple[str, ...], ...] = (("aa", "ii"), ("ai", "ia"))


def check_interactions(interactions: Sequence[str], argument: str = "interactions") -> tuple[str, ...]:
    """Validate a subset of :data:`INTERACTIONS` and return it in canonical order.

    Raises:
        ValueError: empty, unknown or repeated terms.
    """
    if isinstance(interactions, str):
        interactions = (interactions,)
    terms = [str(t).lower() for t in interactions]
    unknown = sorted(set(terms) - set(INTERACTIONS))
    if unknown or not terms or len(set(terms)) != len(terms):
        raise ValueError(
            f"{argument} must be a non-empty subset of {INTERACTIONS} without repeats, got {tuple(interactions)!r}."
        )
    return tuple(t for t in INTERACTIONS if t in terms)


class _FusedTerms(torch.autograd.Function):
    """All four terms of the fused form on ``(b, d, N)`` operands, with a hand-written backward pass.

    Forward (``M = s Q K^T``, ``a = s Q 1``, ``c = s N - a``, ``W = s (K 1)^T V``, ``u = 1^T V``)::

        O_AA = P = M V,   O_AI = a u - P,   O_IA = 1 W - P,   O_II = P - 1 W + c u

    Backward, from the four output gradients ``G``::

        dP = G_AA - G_AI - G_IA + G_II,   du = a^T G_AI + c^T G_II,   dW = 1^T G_IA - 1^T G_II
        da = G_AI u^T - G_II u^T,   dM = dP V^T
        dV = M^T dP + (s K 1) dW + 1 du,   dQ = s dM K + s da 1^T,   dK = s dM^T Q + s (V dW^T) 1^T

    Each output gradient is read a few times and each input gradient written once, where autograd through the
    composite form adds several full-size temporaries per term.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
        n = q.shape[-1]
        m = torch.bmm(q, k.transpose(1, 2)).mul_(scale)  # (b, d, d)
        p = torch.bmm(m, v)
        a = q.sum(dim=2, keepdim=True).mul_(scale)  # (b, d, 1)
        ones = torch.ones_like(a)
        k_sum = k.sum(dim=2, keepdim=True).mul_(scale)  # (b, d, 1)
        wu = torch.bmm(torch.cat([k_sum, ones], dim=2).transpose(1, 2), v)  # (b, 2, N): W and u in one pass
        w, u = wu[:, :1], wu[:, 1:]
        c = torch.sub(n * scale, a)  # (b, d, 1)
        # each output written by one pass and finished in place by a second (no full-size temporaries)
        o_ai = torch.mul(a, u).sub_(p)
        o_ia = torch.sub(w, p)
        o_ii = torch.addcmul(p, c, u).sub_(w)
        left = torch.cat([-ones, c], dim=2)  # (b, d, 2): [-1, c] for the backward pass
        ctx.save_for_backward(q, k, v, m, a, k_sum, wu, left)
        ctx.scale = scale
        return p, o_ii, o_ai, o_ia

    @staticmethod
    @once_differentiable
    def backward(ctx, g_aa, g_ii, g_ai, g_ia):
        q_in, k_in, v_in, m, *rest = ctx.saved_tensors
        scale = ctx.scale
        # in the products' dtype (bfloat16 under autocast, where the operands may be float32 spikes)
        q, k, v, a, k_sum, wu, left = (x.to(m.dtype) for x in (q_in, k_in, v_in, *rest))
        g_aa, g_ii, g_ai, g_ia = (torch.zeros_like(v) if g is None else g.to(m.dtype) for g in (g_aa, g_ii, g_ai, g_ia))
        u_t = wu[:, 1:].transpose(1, 2)  # (b, N, 1)
        d_p = torch.add(g_aa, g_ii).sub_(g_ai).sub_(g_ia)
        # [-1^T; c^T] G_II -> (-dW part, du part); a^T G_AI -> du part; 1^T G_IA -> dW part
        d_wu = torch.bmm(left.transpose(1, 2), g_ii)  # (b, 2, N)
        d_wu[:, :1] += g_ia.sum(dim=1, keepdim=True)
        d_wu[:, 1:] += torch.bmm(a.transpose(1, 2), g_ai)
        d_a = torch.bmm(g_ai, u_t).sub_(torch.bmm(g_ii, u_t))  # (b, d, 1); c = sN - a
        d_m = torch.bmm(d_p, v.transpose(1, 2))  # (b, d, d)
        d_v = torch.bmm(m.transpose(1, 2), d_p).baddbmm_(torch.cat([k_sum, torch.ones_like(a)], dim=2), d_wu)
        d_q = torch.baddbmm(d_a.mul_(scale), d_m.mul_(scale), k)
        d_k_sum = torch.bmm(v, d_wu[:, :1].transpose(1, 2)).mul_(scale)  # (b, d, 1)
        d_k = torch.baddbmm(d_k_sum, d_m.transpose(1, 2), q)
        return d_q.to(q_in.dtype), d_k.to(k_in.dtype), d_v.to(v_in.dtype), None


def all_neuron_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    interactions: Sequence[str] = INTERACTIONS,
    scale: float = 1.0,
    method: str = "fused",
) -> dict[str, torch.Tensor]:
    """The interaction terms ``O_xy = scale * Q_x K_y^T V`` of AND-SA.

    ``method="direct"`` forms each attention map from ``Q`` or ``1 - Q`` and ``K`` or ``1 - K`` and multiplies it
    with ``V`` (two matrix products per term). ``method="fused"`` computes the same values from ONE ``Q K^T``,
    ONE ``(Q K^T) V`` and rank-1 corrections. With ``q = Q 1`` and ``k = K 1`` (per-channel sums over the ``N``
    tokens), ``u = 1^T V`` (sum over channels) and ``w = k^T V``::

        O_AA = s P                         P = (Q K^T) V
        O_AI = s (q u - P)                 since Q (1-K)^T = q 1^T - Q K^T
        O_IA = s (1 w - P)                 since (1-Q) K^T = 1 k^T - Q K^T
        O_II = s ((N - q) u - 1 w + P)     since (1-Q)(1-K)^T = N 1 1^T - q 1^T - 1 k^T + Q K^T

    ``s`` scales the ``d x d`` map ``Q K^T`` and the vectors ``q``, ``w`` (not the ``d x N`` outputs), and the outer
    products are added with ``addcmul`` in one pass each, so the fused form does a quarter of the direct form's
    matrix-product work and about half its memory traffic. These are identities for any real ``Q, K`` (binary
    spikes or the ANN twin's sigmoid values); the two forms agree within float32 rounding.

    Args:
        q: queries ``(..., d, N)``.
        k: keys ``(..., d, N)``.
        v: values ``(..., d, N)``.
        interactions: the terms to compute, a subset of :data:`INTERACTIONS`.
        scale: the factor ``s``.
        method: ``"fused"`` (default) or ``"direct"`` (the reference form).

    Returns:
        a dict from term name to a ``(..., d, N)`` tensor, for the requested terms.

    Raises:
        ValueError: unknown ``method`` or ``interactions``, or mismatched shapes.
    """
    terms = check_interactions(interactions)
    if not capturing_graph() and not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k and v must have the same shape (..., d, N), got {q.shape}, {k.shape}, {v.shape}.")
    if method == "direct":
        queries = {"a": q, "i": 1.0 - q}
        keys = {"a": k, "i": 1.0 - k}
        return {t: (queries[t[0]] @ keys[t[1]].transpose(-2, -1)) @ v * scale for t in terms}
    if method != "fused":
        raise ValueError(f"method must be 'fused' or 'direct', got {method!r}.")
    if terms == INTERACTIONS and not capturing_graph():
        shape = q.shape
        d, n = shape[-2], shape[-1]
        outs = _FusedTerms.apply(q.reshape(-1, d, n), k.reshape(-1, d, n), v.reshape(-1, d, n), float(scale))
        return {t: o.reshape(shape) for t, o in zip(INTERACTIONS, outs, strict=True)}
    n = q.shape[-1]
    p = ((q @ k.transpose(-2, -1)) * scale) @ v  # s P: the map is scaled (d x d), not the output (d x N)
    out: dict[str, torch.Tensor] = {"aa": p}
    if "ai" in terms or "ii" in terms:
        q_sum = q.sum(dim=-1, keepdim=True) * scale  # s q: (..., d, 1)
        u = v.sum(dim=-2, keepdim=True)  # (..., 1, N)
    if "ia" in terms or "ii" in terms:
        w = (k.sum(dim=-1).unsqueeze(-2) * scale) @ v  # s w: (..., 1, N)
    if "ai" in terms or "ia" in terms:
        neg_p = -p
    if "ai" in terms:
        out["ai"] = torch.addcmul(neg_p, q_sum, u)  # s q u - s P in one pass
    if "ia" in terms:
        out["ia"] = neg_p + w
    if "ii" in terms:
        out["ii"] = torch.addcmul(p - w, n * scale - q_sum, u)  # s (N - q) u - s w + s P
    return {t: out[t] for t in terms}


def _head_matrices(c: int, num_heads: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, C)`` mask of the same-head channel pairs and ``(C, heads)`` membership of each channel in its head."""
    head_of = torch.arange(c, device=like.device) // (c // num_heads)
    same_head = (head_of[:, None] == head_of[None, :]).to(like.dtype)
    members = (head_of[:, None] == torch.arange(num_heads, device=like.device)[None, :]).to(like.dtype)
    return same_head, members


def _token_major_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float, terms: Sequence[str]
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor | None, ...]]:
    """The requested terms on token-major ``(b, N, C)`` operands (see :class:`_TokenMajorTerms`), and what the
    backward pass needs: ``(m, a, right, wu)`` (``None`` where only ``"aa"`` was asked for)."""
    b, n, c = v.shape
    same_head, members = _head_matrices(c, num_heads, v)
    m = torch.bmm(q.transpose(1, 2), k)  # (b, C, C)
    m = m.mul_(same_head.to(m.dtype)).mul_(scale)
    p = torch.bmm(v, m.transpose(1, 2))  # (b, N, C)
    out = {"aa": p}
    if all(t == "aa" for t in terms):
        return out, (m, None, None, None)
    a = q.sum(dim=1).mul_(scale)  # (b, C)
    k_sum = k.sum(dim=1).mul_(scale)
    right = torch.cat([members.expand(b, c, num_heads), members * k_sum.to(members.dtype).unsqueeze(-1)], dim=2)
    right = right.to(p.dtype)  # (b, C, 2 heads)
    wu = torch.bmm(v.to(p.dtype), right)  # (b, N, 2 heads): u and w per head
    if p.dtype == torch.bfloat16:
        # each corrected term is one product over the heads, accumulated in float32 and rounded once:
        # O_AI = u (H^T a) - P, O_IA = w H^T - P, O_II = P + u (H^T c) - w H^T, with [u, w] (N x 2 heads)
        ht = members.t().float().expand(b, num_heads, c)  # (b, heads, C)
        u, w = wu[..., :num_heads], wu[..., num_heads:]
        if "ai" in terms:
            out["ai"] = torch.baddbmm(p, u, (ht * a.float().unsqueeze(1)).to(p.dtype), beta=-1)
        if "ia" in terms:
            out["ia"] = torch.baddbmm(p, w, ht.to(p.dtype), beta=-1)
        if "ii" in terms:
            c_rows = ht * (n * scale - a.float()).unsqueeze(1)
            out["ii"] = torch.baddbmm(p, wu, torch.cat([c_rows, -ht], dim=1).to(p.dtype))
    else:  # float32 and float64: broadcast each head's sums over its channels
        u, w = wu[..., :num_heads].unsqueeze(-1), wu[..., num_heads:].unsqueeze(-1)  # (b, N, heads, 1)
        a4 = a.view(b, 1, num_heads, -1).to(p.dtype)
        p4 = p.view(b, n, num_heads, c // num_heads)
        if "ai" in terms:
            out["ai"] = torch.mul(a4, u).sub_(p4).view(b, n, c)
        if "ia" in terms:
            out["ia"] = torch.sub(w, p4).view(b, n, c)
        if "ii" in terms:
            out["ii"] = torch.addcmul(p4, torch.sub(n * scale, a4), u).sub_(w).view(b, n, c)
    return out, (m, a, right, wu)


class _TokenMajorTerms(torch.autograd.Function):
    """The four terms of the fused form on token-major ``(b, N, C)`` operands (the transposes of every head's
    ``(d, N)`` operands side by side), with a hand-written backward pass in the same layout.

    Forward, with ``S`` the ``C x C`` mask of same-head channel pairs, ``H`` the ``C x heads`` membership matrix and
    per channel ``a = s Q^T 1``, ``k = s K^T 1``, ``c = s N - a``::

        M = s S * (Q^T K),   P = V M^T,   [u, w] = V [H, H * k]      (u, w: N x heads, broadcast over each head)
        O_AA = P,   O_AI = a u - P,   O_IA = w - P,   O_II = P + c u - w

    In bfloat16 each corrected term is one product instead, ``O_AI = u (H^T diag(a)) - P`` and so on, accumulated in
    float32 and rounded once (broadcasting over a head's few channels is slow there, and rounds three times).

    Backward, from the four output gradients ``G`` (``diag_H(X)`` picks each channel's own head column)::

        dP = G_AA - G_AI - G_IA + G_II,   [du, dw] = G_AI [H * a, 0] + G_II [H * c, -H] + G_IA [0, H]
        da = diag_H((G_AI - G_II)^T u),   dk = diag_H(V^T dw),   dM = s S * (dP^T V)
        dV = dP M + [du, dw] [H, H * k]^T,   dQ = K dM^T + s 1 da^T,   dK = Q dM + s 1 dk^T
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float):
        out, saved = _token_major_forward(q, k, v, num_heads, scale, INTERACTIONS)
        ctx.save_for_backward(q, k, v, *saved)
        ctx.num_heads, ctx.scale = num_heads, scale
        return tuple(out[t] for t in INTERACTIONS)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_aa, g_ii, g_ai, g_ia):
        q_in, k_in, v_in, m, a, right, wu = ctx.saved_tensors
        num_heads, scale = ctx.num_heads, ctx.scale
        b, n, c = v_in.shape
        # in the products' dtype (bfloat16 under autocast, where the operands may be float32 spikes)
        q, k, v = (x.to(m.dtype) for x in (q_in, k_in, v_in))
        g_aa, g_ii, g_ai, g_ia = (torch.zeros_like(v) if g is None else g.to(m.dtype) for g in (g_aa, g_ii, g_ai, g_ia))
        same_head, members = _head_matrices(c, num_heads, m)
        d_p = torch.add(g_aa, g_ii).sub_(g_ai).sub_(g_ia)
        cc = torch.sub(n * scale, a).to(members.dtype).unsqueeze(-1)  # (b, C, 1)
        zeros = torch.zeros_like(members).expand(b, c, num_heads)
        members_b = members.expand(b, c, num_heads)
        # [du, dw] = G_AI [H a, 0] + G_II [H c, -H] + G_IA [0, H]
        d_wu = torch.bmm(g_ai, torch.cat([members * a.to(members.dtype).unsqueeze(-1), zeros], dim=2))
        d_wu = d_wu.baddbmm_(g_ii, torch.cat([members * cc, -members_b], dim=2))
        d_wu = d_wu.baddbmm_(g_ia, torch.cat([zeros, members_b], dim=2))
        u = wu[..., :num_heads]
        d_a = torch.bmm(g_ai.transpose(1, 2), u).sub_(torch.bmm(g_ii.transpose(1, 2), u))  # (b, C, heads)
        d_a = d_a.mul_(members).sum(dim=2)  # each channel's own head: (b, C)
        d_k_sum = torch.bmm(v.transpose(1, 2), d_wu[..., num_heads:]).mul_(members).sum(dim=2)
        d_m = torch.bmm(d_p.transpose(1, 2), v).mul_(same_head).mul_(scale)  # s S * (dP^T V)
        d_v = torch.bmm(d_p, m).baddbmm_(d_wu, right.transpose(1, 2))
        d_q = torch.bmm(k, d_m.transpose(1, 2)).add_(d_a.mul_(scale).unsqueeze(1))
        d_k = torch.bmm(q, d_m).add_(d_k_sum.mul_(scale).unsqueeze(1))
        return d_q.to(q_in.dtype), d_k.to(k_in.dtype), d_v.to(v_in.dtype), None, None


def token_major_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    interactions: Sequence[str] = INTERACTIONS,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The fused form of :func:`all_neuron_attention` on channels-last ``(T, B, C, H, W)`` operands, per head of
    ``C / num_heads`` channels, with results in the same layout and no reordering of the operands or results.

    Channels-last memory holds every pixel's ``C`` channels together: ``(T B, N, C)``, the transposes of the heads'
    ``(d, N)`` operands. The ``d x d`` maps of all heads are computed as one ``C x C`` map ``s Q^T K`` with its
    off-head blocks set to zero, so ``P^T = V^T M^T`` comes out in channels-last order at once; ``u`` and ``w``
    (per head and pixel) come from one product of ``V^T`` with a ``C x 2 heads`` matrix, and the rank-1 terms are
    added per head (by broadcasting; in bfloat16 by one product per term). The values are those of the fused form
    up to float rounding (exactly, on spikes in float32 or float64: every product and sum is then a whole number
    times ``s``). All four terms have a hand-written backward
    pass in the same layout (:class:`_TokenMajorTerms`); a subset goes through autograd on plain operations.

    Returns:
        a dict from term name to a channels-last ``(T, B, C, H, W)`` tensor, for the requested terms.
    """
    terms = check_interactions(interactions)
    t, b, c, h, w = v.shape
    n, tb = h * w, t * b
    # (T B, N, C) views of channels-last memory: no copy
    qt, kt, vt = (x.flatten(0, 1).permute(0, 2, 3, 1).reshape(tb, n, c) for x in (q, k, v))
    if terms == INTERACTIONS and not capturing_graph():
        out = dict(zip(INTERACTIONS, _TokenMajorTerms.apply(qt, kt, vt, num_heads, float(scale)), strict=True))
    else:  # a subset (or a trace): autograd through the same forward
        out = _token_major_forward(qt, kt, vt, num_heads, float(scale), terms)[0]
    return {term: out[term].reshape(tb, h, w, c).permute(0, 3, 1, 2).unflatten(0, (t, b)) for term in terms}


class AttentionProducts(nn.Module):
    """The interaction terms of AND-SA as a module (no parameters), so that forward hooks see ``q, k, v``.

    Args:
        interactions: the terms, a subset of :data:`INTERACTIONS`.
        scale: the factor ``s``.
        method: ``"fused"`` or ``"direct"`` (see :func:`all_neuron_attention`).
    """

    def __init__(self, interactions: Sequence[str] = INTERACTIONS, scale: float = 1.0, method: str = "fused") -> None:
        super().__init__()
        if method not in ("fused", "direct"):
            raise ValueError(f"method must be 'fused' or 'direct', got {method!r}.")
        self.interactions = check_interactions(interactions)
        self.scale = scale
        self.method = method

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return all_neuron_attention(q, k, v, self.interactions, self.scale, self.method)


def _add(first: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
    for r in rest:
        first = first + r
    return first


class AllNeuronSelfAttention(CheckpointedSegments, nn.Module):
    """AND-SA block: all-neuron decomposed spiking self-attention with its fusion MLPs.

    ``Q, K, V = neuron(BN(depthwise conv(x)))``; each interaction term ``O_xy`` (see :func:`all_neuron_attention`)
    goes through its own :class:`DSConv`; the terms are fused as ``concat[O_AA + O_II, O_AI + O_IA]``, then
    ``y = MLP(fused) + V``, ``y = BN(y)``, ``out = MLP(y) + y``.

    With ``spike_driven`` every convolution reads spikes: one neuron before the Q/K/V projections (shared by the
    three), batch norm and a neuron before each term's DSConv (the terms are real-valued products), and the DSConvs
    and MLPs with their own leading neurons (see :class:`DSConv`, :class:`SpikingMLP`). The four terms and their
    fusion are unchanged.

    Ablations are arguments: a subset of ``interactions`` drops terms (a fusion group whose terms are all absent is
    dropped, so the fusion MLP sees ``C`` per remaining group); ``spiking=False`` gives the ANN twin (sigmoid
    Q/K/V, GELU elsewhere).

    Args:
        channels: channels ``C`` (divisible by ``num_heads``).
        num_heads: heads; each head attends over ``C / num_heads`` channels.
        neuron: neuron specification (see :func:`monai_medspike.networks.layers.get_neuron_layer`).
        spiking: False builds the ANN twin.
        interactions: the terms used, a subset of :data:`INTERACTIONS`.
        kernel_size: depthwise kernel of the Q/K/V projections and DSConvs.
        faithful_layout: reproduce the public code's reshape of the attention output (permute then view, which
            mixes channels and pixels). False (default) keeps every channel at its own pixel.
        method: ``"fused"`` (one ``QK^T`` and one product with ``V``) or ``"direct"``; both give the same values.
        spike_driven: the spike-driven layout (every convolution reads spikes).

    Shapes:
        ``(T, B, C, H, W) -> (T, B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        neuron: str | tuple[str, Mapping[str, Any]] = DEFAULT_NEURON,
        spiking: bool = True,
        interactions: Sequence[str] = INTERACTIONS,
        kernel_size: int = 3,
        faithful_layout: bool = False,
        method: str = "fused",
        spike_driven: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be >= 1 and divide channels ({channels}).")
        if method not in ("fused", "direct"):
            raise ValueError(f"method must be 'fused' or 'direct', got {method!r}.")
        self.channels = channels
        self.num_heads = num_heads
        self.interactions = check_interactions(interactions)
        self.faithful_layout = faithful_layout
        self.method = method
        self.scale = channels**-0.5

        def projection() -> nn.Sequential:
            return nn.Sequential(
                ConvBN(channels, channels, kernel_size, groups=channels), get_activation(neuron, spiking, "sigmoid")
            )

        # spike-driven: the input's spikes, shared by the three projections, and the terms normalised into neurons
        self.input_neuron = get_activation(neuron, spiking, "gelu") if spike_driven else nn.Identity()
        self.to_q, self.to_k, self.to_v = projection(), projection(), projection()
        self.attention = AttentionProducts(self.interactions, self.scale, method)
        self.term_norms = (
            nn.ModuleDict({t: TimeDistributed(nn.BatchNorm2d(channels)) for t in self.interactions})
            if spike_driven
            else None
        )
        self.term_convs = nn.ModuleDict(
            {t: DSConv(channels, kernel_size, neuron, spiking, spike_driven) for t in self.interactions}
        )
        self.groups = tuple(
            tuple(t for t in group if t in self.interactions)
            for group in _FUSION_GROUPS
            if any(t in self.interactions for t in group)
        )
        self.fuse = SpikingMLP(channels * len(self.groups), channels, kernel_size, neuron, spiking, spike_driven)
        self.norm = TimeDistributed(nn.BatchNorm2d(channels))
        self.mlp = SpikingMLP(channels, channels, kernel_size, neuron, spiking, spike_driven)

    def _token_major(self, *operands: torch.Tensor) -> bool:
        """Whether the attention runs :func:`token_major_attention`: channels-last operands (``channels_last``
        networks), the fused method and the per-pixel layout of the heads, no trace, no hook on
        :class:`AttentionProducts` (operation counters see the per-head ``q, k, v`` there), and all four terms or no
        gradient to compute (a subset of the terms has no hand-written backward pass in that layout)."""
        module_hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        global_hooks = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                        "_global_backward_pre_hooks")  # fmt: skip
        hooked = any(getattr(self.attention, name, None) for name in module_hooks) or any(
            getattr(nn_hooks, name, None) for name in global_hooks
        )
        needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in operands)
        return (
            self.method == "fused"
            and not self.faithful_layout
            and not hooked
            and not capturing_graph()
            and all(is_channels_last(x) for x in operands)
            and (self.interactions == INTERACTIONS or not needs_grad)
        )

    def _merge_heads(self, o: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        # o: (T*B, heads, d, N) -> (T, B, C, H, W)
        if self.faithful_layout:
            o = o.transpose(-2, -1).contiguous()
        return o.reshape(shape)

    def _term(self, name: str, o: torch.Tensor) -> torch.Tensor:
        if self.term_norms is not None:
            o = self.term_norms[name](o)
        return self.term_convs[name](o)

    def _attend(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        s = self.input_neuron(x)
        q, k, v = self.to_q(s), self.to_k(s), self.to_v(s)
        if self._token_major(q, k, v):  # channels-last activations: no reordering to heads and back
            terms = token_major_attention(q, k, v, self.num_heads, self.interactions, self.scale)
            return [terms[name] for name in self.interactions], v
        shape = v.shape
        t, b, c, h, w = shape
        heads = (t * b, self.num_heads, c // self.num_heads, h * w)
        terms = self.attention(q.reshape(heads), k.reshape(heads), v.reshape(heads))
        return [as_format_of(self._merge_heads(terms[name], shape), v) for name in self.interactions], v

    def _fuse(self, v: torch.Tensor, *outs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.interactions, outs, strict=True))
        t, b = v.shape[:2]
        # concatenate over channels with T folded into the batch: a 4D concatenation keeps channels-last
        fused = torch.cat([_add(*(named[name] for name in group)).flatten(0, 1) for group in self.groups], dim=1)
        fused = as_format_of(fused, v).unflatten(0, (t, b))
        return self.norm(self.fuse(fused) + v)

    def _mlp(self, y: torch.Tensor) -> torch.Tensor:
        return self.mlp(y) + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # with use_checkpoint, five kinds of segments keep only their inputs: products, each term, fusion, MLP
        terms, v = self.segment(self._attend, x)
        outs = [self.segment(self._term, name, o) for name, o in zip(self.interactions, terms, strict=True)]
        return self.segment(self._mlp, self.segment(self._fuse, v, *outs))

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from spikingjelly.activation_based import functional

from monai_medspike.networks.blocks import INTERACTIONS, AllNeuronSelfAttention, all_neuron_attention
from monai_medspike.networks.blocks.and_attention import token_major_attention


def reference_terms(q, k, v, scale):
    """Direct float64 computation of every O_xy = scale * Q_x K_y^T V, written independently of the package."""
    q, k, v = q.double(), k.double(), v.double()
    parts = {"a": (q, k), "i": (1 - q, 1 - k)}
    out = {}
    for x, y in itertools.product("ai", repeat=2):
        qx, ky = parts[x][0], parts[y][1]
        attn = torch.einsum("...in,...jn->...ij", qx, ky)
        out[x + y] = scale * torch.einsum("...ij,...jn->...in", attn, v)
    return out


def random_spikes(*shape, rate=0.3):
    return (torch.rand(*shape) < rate).float()


@pytest.mark.parametrize("method", ["fused", "direct"])
@pytest.mark.parametrize("shape, rate", [((2, 4, 8, 64), 0.3), ((3, 2, 16, 4096), 0.1), ((1, 1, 4, 9), 0.9)])
def test_terms_match_float64_reference_on_random_spikes(method, shape, rate, device):
    q, k = random_spikes(*shape, rate=rate).to(device), random_spikes(*shape, rate=rate).to(device)
    v = random_spikes(*shape, rate=rate).to(device)
    scale = (shape[1] * shape[2]) ** -0.5
    got = all_neuron_attention(q, k, v, INTERACTIONS, scale, method=method)
    ref = reference_terms(q, k, v, scale)
    assert list(got) == list(INTERACTIONS)
    for term in INTERACTIONS:
        assert got[term].dtype == torch.float32
        # float32 rounding of sums up to N * d: relative to the largest magnitude of the term
        tol = 1e-6 * max(1.0, ref[term].abs().max().item()) * 4
        torch.testing.assert_close(got[term].double(), ref[term], rtol=0, atol=tol)


def test_fused_is_exact_for_real_valued_ann_inputs():
    # the ANN twin feeds sigmoid values: the identities hold for any real Q, K
    q, k, v = torch.rand(2, 2, 8, 100), torch.rand(2, 2, 8, 100), torch.randn(2, 2, 8, 100)
    got = all_neuron_attention(q, k, v, scale=0.5)
    ref = reference_terms(q, k, v, 0.5)
    for term in INTERACTIONS:
        torch.testing.assert_close(got[term].double(), ref[term], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("interactions", [INTERACTIONS, ("aa", "ii"), ("ai",), ("ia", "ii")])
@pytest.mark.parametrize("spiking", [True, False])
def test_fused_gradients_equal_those_of_the_float64_reference(interactions, spiking, device):
    """The hand-written backward of the four-term fused form (and autograd of the subsets) against autograd."""
    torch.manual_seed(0)
    shape = (2, 3, 6, 40)
    if spiking:
        q, k, v = (random_spikes(*shape, rate=r) for r in (0.3, 0.2, 0.4))
    else:
        q, k, v = torch.rand(shape), torch.rand(shape), torch.randn(shape)
    grads = {t: torch.randn(shape, device=device) for t in interactions}
    leaves = [t.clone().to(device).requires_grad_(True) for t in (q, k, v)]
    got = all_neuron_attention(*leaves, interactions, 0.2)
    torch.autograd.backward([got[t] for t in interactions], [grads[t] for t in interactions])
    ref_leaves = [t.to(device).double().requires_grad_(True) for t in (q, k, v)]
    ref = reference_terms(*ref_leaves, 0.2)
    torch.autograd.backward([ref[t] for t in interactions], [grads[t].double() for t in interactions])
    for leaf, ref_leaf in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(leaf.grad.double(), ref_leaf.grad, rtol=1e-5, atol=1e-4)


def test_fused_backward_passes_gradcheck_and_handles_unused_terms():
    from monai_medspike.networks.blocks.and_attention import _FusedTerms

    torch.manual_seed(1)
    inputs = [torch.rand(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda q, k, v: _FusedTerms.apply(q, k, v, 0.7), inputs)
    # only one term used downstream: the other output gradients arrive as None
    q, k, v = (t.detach().float().requires_grad_(True) for t in inputs)
    all_neuron_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), scale=0.7)["ai"].sum().backward()
    ref = [t.detach().double().requires_grad_(True) for t in inputs]
    reference_terms(*ref, 0.7)["ai"].sum().backward()
    torch.testing.assert_close(q.grad.double(), ref[0].grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v.grad.double(), ref[2].grad, rtol=1e-5, atol=1e-5)


def test_subset_of_interactions_returns_only_those_terms():
    q = k = v = random_spikes(1, 1, 4, 16)
    got = all_neuron_attention(q, k, v, ("ia", "aa"))
    assert list(got) == ["aa", "ia"]


def test_attention_errors():
    q = random_spikes(1, 1, 4, 16)
    with pytest.raises(ValueError, match="interactions"):
        all_neuron_attention(q, q, q, ("ab",))
    with pytest.raises(ValueError, match="interactions"):
        all_neuron_attention(q, q, q, ())
    with pytest.raises(ValueError, match="interactions"):
        all_neuron_attention(q, q, q, ("aa", "aa"))
    with pytest.raises(ValueError, match="method"):
        all_neuron_attention(q, q, q, method="einsum")
    with pytest.raises(ValueError, match="same shape"):
        all_neuron_attention(q, q, random_spikes(1, 1, 4, 8))


def test_block_shape_and_fused_equals_direct():
    # train mode: batch-norm uses batch statistics, so a freshly built block is not degenerate
    block = AllNeuronSelfAttention(16, num_heads=4)
    x = torch.randn(2, 3, 16, 8, 12)  # (T, B, C, H, W)
    fused = block(x)
    assert fused.shape == x.shape
    assert fused.std() > 0.1
    block.method = "direct"
    functional.reset_net(block)
    torch.testing.assert_close(block(x), fused, rtol=1e-4, atol=1e-4)


def test_merge_heads_keeps_every_channel_at_its_pixel():
    t, b, c, h, w, heads = 1, 2, 8, 3, 5, 2
    block = AllNeuronSelfAttention(c, num_heads=heads)
    o = torch.arange(t * b * c * h * w, dtype=torch.float32).reshape(t * b, heads, c // heads, h * w)
    merged = block._merge_heads(o, torch.Size((t, b, c, h, w)))
    d = c // heads
    for ch, y, x in itertools.product(range(c), range(h), range(w)):
        assert merged[0, 1, ch, y, x] == o[1, ch // d, ch % d, y * w + x]


def test_faithful_layout_reproduces_permute_then_view():
    t, b, c, h, w, heads = 1, 1, 8, 4, 4, 2
    block = AllNeuronSelfAttention(c, num_heads=heads, faithful_layout=True)
    o = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, heads, c // heads, h * w)
    merged = block._merge_heads(o, torch.Size((t, b, c, h, w)))
    expected = o.permute(0, 1, 3, 2).contiguous().view(t, b, c, h, w)
    assert torch.equal(merged, expected)
    # channel 1 at pixel 0 now holds channel 0's value at pixel 1: channels and pixels are mixed
    assert merged[0, 0, 0, 0, 1] == o[0, 0, 1, 0]


def test_faithful_layout_changes_block_output():
    x = torch.randn(2, 1, 8, 8, 8)
    correct = AllNeuronSelfAttention(8, num_heads=2)
    faithful = AllNeuronSelfAttention(8, num_heads=2, faithful_layout=True)
    faithful.load_state_dict(correct.state_dict())
    assert not torch.allclose(correct(x), faithful(x))


@pytest.mark.parametrize(
    "interactions, fuse_in",
    [(INTERACTIONS, 32), (("aa", "ii"), 16), (("ai",), 16), (("aa", "ia"), 32)],
)
def test_fusion_groups_follow_interactions(interactions, fuse_in):
    block = AllNeuronSelfAttention(16, num_heads=4, interactions=interactions)
    assert set(block.term_convs) == set(interactions)
    assert block.fuse.expand.module[0].in_channels == fuse_in


def test_ann_twin_block_uses_sigmoid_qkv_and_no_neurons():
    block = AllNeuronSelfAttention(8, num_heads=2, spiking=False)
    assert isinstance(block.to_q[1], torch.nn.Sigmoid)
    assert not any(hasattr(m, "v_threshold") for m in block.modules())


def test_block_bad_heads():
    with pytest.raises(ValueError, match="num_heads"):
        AllNeuronSelfAttention(10, num_heads=4)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, tuple(x.shape[:2]))


@pytest.mark.parametrize("interactions", [INTERACTIONS, ("aa",), ("ai", "ii"), ("ia",)])
@pytest.mark.parametrize("spiking", [True, False])
def test_token_major_attention_equals_the_per_head_terms_in_channels_last(interactions, spiking):
    """Channels-last operands, per head: the direct form's values (float64), results channels-last, no reordering."""
    t, b, c, h, w, heads = 2, 3, 12, 5, 7, 3
    g = torch.Generator().manual_seed(1)
    make = (lambda: (torch.rand(t, b, c, h, w, generator=g) < 0.3).double()) if spiking else (
        lambda: torch.rand(t, b, c, h, w, generator=g, dtype=torch.float64))  # fmt: skip
    q, k, v = make(), make(), make()
    out = token_major_attention(_channels_last(q), _channels_last(k), _channels_last(v), heads, interactions, 0.3)
    per_head = (t * b, heads, c // heads, h * w)
    ref = all_neuron_attention(q.reshape(per_head), k.reshape(per_head), v.reshape(per_head), interactions, 0.3,
                               method="direct")  # fmt: skip
    assert set(out) == set(interactions)
    for name, o in out.items():
        assert o.stride(2) == 1 and o.shape == (t, b, c, h, w)  # channels-last per step
        torch.testing.assert_close(o, ref[name].reshape(t, b, c, h, w), rtol=0, atol=1e-12)


@pytest.mark.parametrize("spiking", [True, False])
def test_token_major_backward_gives_the_per_head_gradients(spiking):
    """The hand-written backward pass of the four token-major terms: autograd's gradients of the direct form
    (float64), for any upstream gradients, and torch's numerical check."""
    from monai_medspike.networks.blocks.and_attention import _TokenMajorTerms

    t, b, c, h, w, heads = 2, 2, 12, 4, 5, 3
    g = torch.Generator().manual_seed(2)
    make = (lambda: (torch.rand(t, b, c, h, w, generator=g) < 0.3).double()) if spiking else (
        lambda: torch.rand(t, b, c, h, w, generator=g, dtype=torch.float64))  # fmt: skip
    q, k, v = (_channels_last(make()).requires_grad_() for _ in range(3))
    upstream = {name: torch.randn(t, b, c, h, w, generator=g, dtype=torch.float64) for name in INTERACTIONS}
    out = token_major_attention(q, k, v, heads, INTERACTIONS, 0.3)
    grads = torch.autograd.grad([out[n] for n in INTERACTIONS], (q, k, v), [upstream[n] for n in INTERACTIONS])
    per_head = (t * b, heads, c // heads, h * w)
    qd, kd, vd = (x.detach().contiguous().requires_grad_() for x in (q, k, v))
    ref = all_neuron_attention(qd.reshape(per_head), kd.reshape(per_head), vd.reshape(per_head), scale=0.3,
                               method="direct")  # fmt: skip
    expected = torch.autograd.grad([ref[n] for n in INTERACTIONS], (qd, kd, vd),
                                   [upstream[n].reshape(per_head) for n in INTERACTIONS])  # fmt: skip
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    flat = [torch.rand(3, 10, 8, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *x: _TokenMajorTerms.apply(*x, 2, 0.3), flat)


def test_token_major_terms_in_bfloat16_match_the_per_head_form():
    """Under bfloat16 autocast the token-major form computes each corrected term as one product (accumulated in
    float32): the float64 values up to bfloat16 rounding, as close as the per-head fused form in bfloat16 (within 2 x
    its error; the roundings fall in a different order)."""
    t, b, c, h, w, heads = 2, 1, 32, 16, 16, 4
    g = torch.Generator().manual_seed(4)
    q, k, v = ((torch.rand(t, b, c, h, w, generator=g) < r).double() for r in (0.2, 0.3, 0.1))
    per_head = (t * b, heads, c // heads, h * w)
    exact = all_neuron_attention(q.reshape(per_head), k.reshape(per_head), v.reshape(per_head), scale=c**-0.5)
    with torch.autocast("cpu", torch.bfloat16):
        ours = token_major_attention(*(_channels_last(x.bfloat16()) for x in (q, k, v)), heads, scale=c**-0.5)
        fused = all_neuron_attention(*(x.bfloat16().reshape(per_head) for x in (q, k, v)), scale=c**-0.5)
    for name in INTERACTIONS:
        want = exact[name].reshape(t, b, c, h, w)
        assert ours[name].dtype == torch.bfloat16 and ours[name].stride(2) == 1
        error = (ours[name].double() - want).abs().max()
        assert error <= 2**-6 * want.abs().max()  # a few bfloat16 roundings (the map, the product) of the largest value
        assert error <= 2 * (fused[name].double().reshape(t, b, c, h, w) - want).abs().max()


def test_token_major_backward_under_bfloat16_autocast():
    """float32 spikes under bfloat16 autocast, as a channels-last bfloat16 network trains: float32 gradients, the
    float64 direct form's up to bfloat16 rounding, as close as the per-head fused form's (within 2 x its error)."""
    t, b, c, h, w, heads = 2, 1, 32, 8, 8, 4
    g = torch.Generator().manual_seed(5)
    q, k, v = ((torch.rand(t, b, c, h, w, generator=g) < r).float() for r in (0.2, 0.3, 0.1))
    upstream = [torch.randn(t, b, c, h, w, generator=g) for _ in INTERACTIONS]
    per_head = (t * b, heads, c // heads, h * w)

    def gradients(form: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        leaves = [
            (_channels_last(x) if form == "token-major" else x.clone()).to(dtype).requires_grad_() for x in (q, k, v)
        ]
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.float32):
            if form == "token-major":
                out = token_major_attention(*leaves, heads, scale=c**-0.5)
                outs = [out[n] for n in INTERACTIONS]
            else:
                method = "fused" if dtype == torch.float32 else "direct"
                out = all_neuron_attention(*(x.reshape(per_head) for x in leaves), scale=c**-0.5, method=method)
                outs = [out[n].reshape(t, b, c, h, w) for n in INTERACTIONS]
        grads = torch.autograd.grad(outs, leaves, [u.to(o.dtype) for u, o in zip(upstream, outs, strict=True)])
        assert all(x.dtype == dtype for x in grads)
        return grads

    exact = gradients("per-head", torch.float64)
    ours, fused = gradients("token-major", torch.float32), gradients("per-head", torch.float32)
    for got, ref, want in zip(ours, fused, exact, strict=True):
        error = (got.double() - want).abs().max()
        assert error <= 2**-5 * want.abs().max()
        assert error <= 2 * (ref.double() - want).abs().max()


def test_block_takes_the_token_major_form_for_channels_last_operands():
    """A channels-last block uses the token-major form, with the plain block's output and, in training, its
    gradients; with a hook on the products (operation counters), or a subset of the terms and gradients, it uses
    the per-head form."""
    from unittest import mock

    from monai_medspike.networks.blocks import and_attention

    torch.manual_seed(0)
    plain = AllNeuronSelfAttention(16, num_heads=4).double()
    block = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 8, 12, dtype=torch.float64) + 1.0
    x_plain, x_cl = x.clone().requires_grad_(), _channels_last(x).requires_grad_()
    seen = []
    spy = mock.patch.object(and_attention, "token_major_attention", wraps=token_major_attention)
    with spy as token_major:
        ref = plain(x_plain)  # training mode, with gradients
        trained = block(x_cl)
        assert token_major.call_count == 1
        ref.backward(ref.detach().sin())
        trained.backward(ref.detach().sin())
        plain.eval(), block.eval()
        functional.reset_net(plain), functional.reset_net(block)
        with torch.no_grad():
            ref_eval, out = plain(x), block(_channels_last(x))
        assert token_major.call_count == 2
        functional.reset_net(block)
        hook = block.attention.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
        with torch.no_grad():
            hooked = block(_channels_last(x))
        hook.remove()
        assert token_major.call_count == 2  # not with a hook
        subset = AllNeuronSelfAttention(16, num_heads=4, interactions=("aa", "ai")).double()
        subset.to(memory_format=torch.channels_last)(_channels_last(x)).sum().backward()
        assert token_major.call_count == 2  # not for a subset with gradients
    assert seen == [(6, 4, 4, 96)]  # the hook saw per-head operands
    torch.testing.assert_close(trained, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(x_cl.grad, x_plain.grad, rtol=0, atol=1e-9)
    for (name, p_ref), p in zip(plain.named_parameters(), block.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-9, msg=name)
    for y in (out, hooked):
        torch.testing.assert_close(y, ref_eval, rtol=0, atol=1e-10)

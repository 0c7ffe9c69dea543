"""AND-SA: the fused form (one Q K^T, one product with V, rank-1 terms) against the direct four-product form.

Usage::

    python benchmarks/attention.py [--size 64] [--channels 128] [--heads 4] [--batch 2] [--time-steps 4]
        [--repeats 20] [--device auto] [--out benchmarks/results/attention.json]

Measured at H = W = ``--size``, C = ``--channels`` (default 64 x 64 x 128, the second encoder stage of a 256 x 256
input), on random spikes (rate 0.1-0.3), interleaved, medians of ``--repeats``:

- ``terms``: the four interaction terms from Q, K, V (forward + backward), what the fused form replaces;
- ``block``: the whole ``AllNeuronSelfAttention`` block (projections, neurons, per-term convolutions, MLPs) with
  ``method="fused"`` and ``method="direct"``, train mode, forward + backward;
- ``channels-last terms``: the four terms from channels-last ``(T, B, C, H, W)`` activations (as a
  ``channels_last`` network has them), forward + backward, by the per-head fused form (reordered into heads and
  back, as the block did before) and by the token-major form (``token_major_attention``, no reordering).

Also checks that both forms agree within float32 rounding on the same spikes.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from _bench import machine, median, pick_device, timed, write_json
from spikingjelly.activation_based.functional import reset_net

from monai_medspike.networks.blocks import AllNeuronSelfAttention, all_neuron_attention
from monai_medspike.networks.blocks.and_attention import token_major_attention


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = pick_device(args.device)
    g = torch.Generator().manual_seed(0)
    n = args.size * args.size
    d = args.channels // args.heads
    shape = (args.time_steps * args.batch, args.heads, d, n)
    q, k, v = ((torch.rand(shape, generator=g) < r).float().to(device) for r in (0.2, 0.3, 0.1))
    scale = args.channels**-0.5

    fused = all_neuron_attention(q, k, v, scale=scale, method="fused")
    direct = all_neuron_attention(q, k, v, scale=scale, method="direct")
    max_error = max(float((fused[t] - direct[t]).abs().max()) for t in fused)
    largest = max(float(direct[t].abs().max()) for t in direct)

    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    grads = [torch.randn(shape, generator=g).to(device) for _ in range(4)]  # what the per-term convolutions send back

    def terms(method: str):
        def step() -> None:
            for leaf in leaves:
                leaf.grad = None
            out = all_neuron_attention(*leaves, scale=scale, method=method)
            torch.autograd.backward(list(out.values()), grads)

        return step

    x = torch.randn(args.time_steps, args.batch, args.channels, args.size, args.size, generator=g).to(device)
    blocks = {
        m: AllNeuronSelfAttention(args.channels, args.heads, method=m).to(device).train() for m in ("fused", "direct")
    }
    blocks["direct"].load_state_dict(blocks["fused"].state_dict())

    def block(method: str):
        def step() -> None:
            reset_net(blocks[method])  # the block alone keeps its membranes; the network resets in its forward
            blocks[method].zero_grad(set_to_none=True)
            blocks[method](x).sum().backward()

        return step

    # channels-last activations, as a channels_last network holds them: (T, B, C, H, W), channels innermost
    five = (args.time_steps, args.batch, args.channels, args.size, args.size)

    def channels_last(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(five).flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, five[:2])

    cl_leaves = [channels_last(t).requires_grad_(True) for t in (q, k, v)]
    cl_grads = [channels_last(t) for t in grads]
    with torch.no_grad():
        token_major = token_major_attention(*cl_leaves, args.heads, scale=scale)
        cl_error = max(float((token_major[t] - fused[t].reshape(five)).abs().max()) for t in token_major)

    def cl_terms(form: str):
        def step() -> None:
            for leaf in cl_leaves:
                leaf.grad = None
            if form == "token-major":
                out = list(token_major_attention(*cl_leaves, args.heads, scale=scale).values())
            else:  # into heads (a copy), the fused form, back to channels-last (a copy)
                heads = all_neuron_attention(*(t.reshape(shape) for t in cl_leaves), scale=scale)
                out = [channels_last(o) for o in heads.values()]
            torch.autograd.backward(out, cl_grads)

        return step

    cases = {
        "terms fused": terms("fused"),
        "terms direct": terms("direct"),
        "block fused": block("fused"),
        "block direct": block("direct"),
        "CL terms per-head": cl_terms("per-head"),
        "CL terms token-major": cl_terms("token-major"),
    }
    for fn in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
    medians = {name: median(t) for name, t in times.items()}
    return {
        "settings": vars(args),
        "machine": machine(device),
        "max_abs_difference": max_error,
        "max_abs_difference_token_major": cl_error,
        "largest_value": largest,
        "times_s": times,
        "median_s": medians,
        "speedup": {
            "terms": medians["terms direct"] / medians["terms fused"],
            "block": medians["block direct"] / medians["block fused"],
            "channels_last_terms": medians["CL terms per-head"] / medians["CL terms token-major"],
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--time-steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="JSON file (default benchmarks/results/attention.json)")
    args = p.parse_args()
    payload = run(args)
    for name, value in payload["median_s"].items():
        print(f"{name:<22} {value * 1e3:9.1f} ms")
    speedup = payload["speedup"]
    print(f"speed-up of the fused form: terms {speedup['terms']:.2f}x, block {speedup['block']:.2f}x")
    print(f"speed-up of the token-major form on channels-last activations: {speedup['channels_last_terms']:.2f}x")
    print(
        f"largest |fused - direct| = {payload['max_abs_difference']:.3g} (values up to {payload['largest_value']:.3g}),"
        f" |token-major - per-head| = {payload['max_abs_difference_token_major']:.3g}"
    )
    print(f"wrote {write_json(payload, args.out, 'attention.json')}")


if __name__ == "__main__":
    main()

"""Train-step and inference time and memory of MedSpikeFormer against its ANN twin and MONAI networks.

Usage::

    python benchmarks/train_step.py [--size 256] [--batch 1 [8 ...]] [--time-steps 1 2 4] [--rounds 3] [--steps 2]
        [--warmup 2] [--device auto] [--lif lean|eager|spikingjelly|both|all] [--keep-freed-memory]
        [--variants default bundle channels_last checkpoint channels_last+checkpoint bfloat16 channels_last+bfloat16
                    channels_last+checkpoint+bfloat16] [--no-twin] [--no-monai]
        [--out benchmarks/results/train_step.json]

Cases (each in a fresh process, so no memory is carried from one to the next; ``--rounds`` rounds over all cases,
``--steps`` timed steps per case and round after ``--warmup`` untimed train steps and one inference; medians over
all timed steps):

- ``spiking T=t, batch B``: MedSpikeFormer with ``t`` time steps; with ``--variants``, also with its speed and memory
  options (``channels_last``, activation checkpointing ``use_checkpoint``), each compared with the default (no
  option set) in the same run;
- ``ANN twin, batch B*t``: the floor: the same dense work (every layer sees ``B*t`` images) without neurons;
- MONAI ``BasicUNet`` and ``SwinUNETR`` (2D) at batch ``B``.

A train step is forward + Dice-CE loss + backward + Adam step; inference is an eval-mode forward without
gradients. Memory: the bytes autograd saves for the backward pass (exact, any device), the increase of the
process's peak resident memory over the warm-up train steps (CPU), and on CUDA the peak allocated memory of a
train step. "faults MiB" is the memory a timed train step touched for the first time (minor page faults: fresh
allocations the operating system had to map, a large hidden cost of big tensors on a CPU; counted in 4 KiB pages,
so not meaningful where transparent huge pages are "always" on). The key figures are
the ratios ``spiking T=t / ANN twin B*t`` (time and memory).

``--keep-freed-memory`` runs every case with glibc's malloc told to keep freed memory for reuse
(:func:`monai_medspike.utils.keep_freed_memory`: no ``mmap`` for large blocks, no trimming of the heap), so that
no train step pays for page faults; the ratios then compare the arithmetic alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
from _bench import (
    machine,
    median,
    peak_cuda_bytes,
    pick_device,
    saved_activation_bytes,
    timed,
    write_json,
)
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet, SwinUNETR

from monai_medspike.networks.nets import MedSpikeFormer
from monai_medspike.utils import keep_freed_memory

VARIANTS = {
    "default": {},
    "bundle": {"channels_last": "auto", "precision": "auto"},
    "channels_last": {"channels_last": True},
    "checkpoint": {"use_checkpoint": True},
    "channels_last+checkpoint": {"channels_last": True, "use_checkpoint": True},
    "bfloat16": {"precision": "bfloat16"},
    "channels_last+bfloat16": {"channels_last": True, "precision": "bfloat16"},
    "channels_last+checkpoint+bfloat16": {"channels_last": True, "use_checkpoint": True, "precision": "bfloat16"},
}
"""Options of the spiking network measured side by side (``--variants``); "default" is the network's own default
(float32, channels-first: eager PyTorch with the fused LIF kernel, no option set); "bundle" what the bundles run by
default on the measured device (``auto``: :mod:`monai_medspike.speed`)."""
_DEVICE = torch.device("cpu")  # the worker's device, for the "bundle" variant's choice


def _spiking(t: int, lean: bool, options: dict[str, Any]) -> MedSpikeFormer:
    from monai_medspike import speed

    options = dict(options)
    if "channels_last" in options:
        options["channels_last"] = speed.channels_last(options["channels_last"], _DEVICE)
    if "precision" in options:
        options["precision"] = speed.precision(options["precision"], _DEVICE)
    return MedSpikeFormer(in_channels=1, out_channels=1, time_steps=t, neuron=("lif", {"lean": lean}), **options)


def _twin() -> MedSpikeFormer:
    return MedSpikeFormer(in_channels=1, out_channels=1, time_steps=1, spiking=False)


def build_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every case: a name, a network factory, its batch size and the cases its ratios compare it with."""
    cases: list[dict[str, Any]] = []
    # (tag, lean path, fused CPU kernel allowed): "eager" is the lean path with MONAI_MEDSPIKE_LIF_KERNEL=0
    kinds = {"lean": ("lean LIF", True, True), "eager": ("lean LIF eager", True, False),
             "spikingjelly": ("spikingjelly LIF", False, False)}  # fmt: skip
    chosen = {"both": ["lean", "spikingjelly"], "all": ["lean", "eager", "spikingjelly"]}.get(args.lif, [args.lif])
    batches = args.batch
    for batch in batches:
        tag_b = "" if len(batches) == 1 else f" B={batch}"
        for t in args.time_steps:
            twin = f"ANN twin batch {batch * t}"
            for variant in args.variants:
                for kind in chosen:
                    tag, lean, kernel = kinds[kind]
                    base = f"spiking T={t}{tag_b}" if len(chosen) == 1 else f"spiking T={t}{tag_b} {tag}"
                    name = base if variant == "default" else f"{base} {variant}"
                    compare = [] if args.no_twin else [twin]
                    if variant != "default" and "default" in args.variants:
                        if batch <= args.max_batch_without_checkpoint:
                            compare.append(base)
                        else:  # the default path does not run at this batch: per image against the first batch
                            first = "" if len(batches) == 1 else f" B={batches[0]}"
                            compare.append(base.replace(f"T={t}{tag_b}", f"T={t}{first}", 1))
                    if batch > args.max_batch_without_checkpoint and "checkpoint" not in variant:
                        continue  # would not fit in memory here: measured with checkpointing only
                    make = lambda t=t, lean=lean, o=VARIANTS[variant]: _spiking(t, lean, o)  # noqa: E731
                    cases.append({"name": name, "kernel": kernel, "batch": batch, "compare": compare, "make": make})
            if not args.no_twin:
                cases.append({"name": twin, "batch": batch * t, "images": batch, "make": _twin, "compare": []})
        if not args.no_monai:
            cases.append({"name": f"MONAI BasicUNet{tag_b}", "make": lambda: BasicUNet(2, 1, 1), "batch": batch})
            cases.append({"name": f"MONAI SwinUNETR 2D{tag_b}", "batch": batch,
                          "make": lambda: SwinUNETR(1, 1, spatial_dims=2, feature_size=24)})  # fmt: skip
    unique = {}
    for case in cases:
        unique.setdefault(case["name"], case)
    return list(unique.values())


def _step_fns(case: dict[str, Any], size: int, device: torch.device) -> tuple[Callable, Callable, Callable]:
    net = case["make"]().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(sigmoid=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(case["batch"], 1, size, size, generator=generator).to(device)
    y = (torch.rand(case["batch"], 1, size, size, generator=generator) > 0.7).float().to(device)

    def forward_loss() -> torch.Tensor:
        return loss_fn(net(x), y)

    def train() -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        forward_loss().backward()
        optimizer.step()

    def infer() -> None:
        net.eval()
        with torch.no_grad():
            net(x)

    def saved() -> int:
        net.train()
        return saved_activation_bytes(forward_loss)

    return train, infer, saved


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One case in this (fresh) process: memory, ``--warmup`` train steps (the first creates the optimizer's state;
    the allocator settles over the next), one inference, then ``--steps`` timed train and infer steps."""
    kept = keep_freed_memory(args.keep_freed_memory)
    global _DEVICE
    device = _DEVICE = pick_device(args.device)
    torch.manual_seed(0)
    case = next(c for c in build_cases(args) if c["name"] == args.worker)
    train, infer, saved = _step_fns(case, args.size, device)
    baseline = _rss_mib()
    saved_mib = saved() / 2**20
    peak_cuda = peak_cuda_bytes(train, device)  # a train step on CUDA, None (nothing run) on the CPU
    for _ in range(max(args.warmup, 1)):
        train()
    peak_rss = _peak_rss_mib() - baseline
    infer()
    out = {
        "saved_activation_mib": saved_mib,
        "peak_train_mib": None if peak_cuda is None else peak_cuda / 2**20,
        "peak_rss_increase_mib": peak_rss,
        "freed_memory_kept": kept,
    }
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out["train_s"] = [timed(train, device) for _ in range(args.steps)]
    # pages the timed train steps touched for the first time (fresh allocations the kernel had to map)
    out["fault_mib_per_step"] = (
        (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) * os.sysconf("SC_PAGE_SIZE") / 2**20 / args.steps
    )
    out["infer_s"] = [timed(infer, device) for _ in range(args.steps)]
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every case in its own process (no memory carried over), interleaved over ``--rounds`` rounds."""
    device = pick_device(args.device)
    cases = build_cases(args)
    results: dict[str, dict[str, Any]] = {
        c["name"]: {"batch": c["batch"], "images": c.get("images", c["batch"]), "train_s": [], "infer_s": []}
        for c in cases
    }
    passthrough = ["--size", str(args.size), "--batch", *map(str, args.batch), "--lif", args.lif,
                   "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--time-steps", *map(str, args.time_steps), "--variants", *args.variants]  # fmt: skip
    passthrough += ["--no-monai"] if args.no_monai else []
    passthrough += ["--no-twin"] if args.no_twin else []
    passthrough += ["--max-batch-without-checkpoint", str(args.max_batch_without_checkpoint)]
    passthrough += ["--keep-freed-memory"] if args.keep_freed_memory else []
    for rnd in range(args.rounds):
        for case in cases:
            env = dict(os.environ)
            if not case.get("kernel", True):
                env["MONAI_MEDSPIKE_LIF_KERNEL"] = "0"
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", case["name"], *passthrough],
                capture_output=True, text=True, check=False, env=env,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(f"case {case['name']!r} failed:\n{proc.stderr[-3000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[case["name"]]
            r["train_s"] += got["train_s"]
            r["infer_s"] += got["infer_s"]
            r.setdefault("fault_mib_per_step_runs", []).append(got["fault_mib_per_step"])
            for key in ("saved_activation_mib", "peak_train_mib", "freed_memory_kept"):
                r[key] = got[key]
            r.setdefault("peak_rss_increase_mib_runs", []).append(got["peak_rss_increase_mib"])
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    for r in results.values():
        r["train_median_s"] = median(r["train_s"])
        r["infer_median_s"] = median(r["infer_s"])
        r["peak_rss_increase_mib"] = median(r.pop("peak_rss_increase_mib_runs"))
        r["fault_mib_per_step"] = median(r.pop("fault_mib_per_step_runs"))
    ratios = {}
    for case in cases:
        for other in case.get("compare", []):
            if other not in results:
                continue
            a, b = results[case["name"]], results[other]
            ratios[f"{case['name']} / {other}"] = {
                "case": case["name"],
                "vs": other,
                # images: the batch, or B for the twin at batch B x T (it stands for B images at T steps)
                "train_time_per_image": (a["train_median_s"] / a["images"]) / (b["train_median_s"] / b["images"]),
                "train_time": a["train_median_s"] / b["train_median_s"],
                "infer_time": a["infer_median_s"] / b["infer_median_s"],
                "saved_activations": a["saved_activation_mib"] / b["saved_activation_mib"],
                "peak_rss_increase": a["peak_rss_increase_mib"] / b["peak_rss_increase_mib"],
                "peak_train_memory": (a["peak_train_mib"] / b["peak_train_mib"]) if a["peak_train_mib"] else None,
            }
    return {"settings": vars(args), "machine": machine(device), "results": results, "ratios": ratios}


def report(payload: dict[str, Any]) -> str:
    lines = [
        f"{'case':<40} {'batch':>5} {'train s':>9} {'infer s':>9} {'saved MiB':>10} {'RSS+ MiB':>9} {'CUDA MiB':>9}"
        f" {'faults MiB':>10}",
    ]
    for name, r in payload["results"].items():
        peak = f"{r['peak_train_mib']:.0f}" if r["peak_train_mib"] is not None else "-"
        lines.append(
            f"{name:<40} {r['batch']:>5} {r['train_median_s']:>9.3f} {r['infer_median_s']:>9.3f} "
            f"{r['saved_activation_mib']:>10.0f} {r['peak_rss_increase_mib']:>9.0f} {peak:>9}"
            f" {r['fault_mib_per_step']:>10.0f}"
        )
    lines.append("")
    lines.append(
        f"{'ratio':<40} {'vs':<26} {'train':>6} {'/image':>6} {'infer':>6} {'saved':>6} {'RSS+':>6} {'CUDA':>6}"
    )
    for r in payload["ratios"].values():
        peak = f"{r['peak_train_memory']:.2f}" if r["peak_train_memory"] else "-"
        lines.append(
            f"{r['case']:<40} {r['vs']:<26} {r['train_time']:>6.2f} {r['train_time_per_image']:>6.2f} "
            f"{r['infer_time']:>6.2f} {r['saved_activations']:>6.2f} {r['peak_rss_increase']:>6.2f} {peak:>6}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256, help="image height and width (default 256)")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes B of the spiking net (default 1)")
    p.add_argument("--time-steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=3, help="rounds over all cases, one fresh process per case each")
    p.add_argument("--steps", type=int, default=2, help="timed steps per case and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed train steps per case and round first (>= 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:i]")
    p.add_argument("--lif", choices=("lean", "eager", "spikingjelly", "both", "all"), default="lean",
                   help="LIF path of the spiking cases: lean (fused CPU kernel where available), eager (lean without "
                        "the kernel), spikingjelly, both (lean, spikingjelly) or all three side by side")  # fmt: skip
    p.add_argument("--no-monai", action="store_true", help="skip BasicUNet and SwinUNETR")
    p.add_argument("--no-twin", action="store_true", help="skip the ANN twins (batch B x T)")
    p.add_argument(
        "--max-batch-without-checkpoint",
        type=int,
        default=1 << 30,
        metavar="B",
        help="run larger batches only with activation checkpointing (as they would not fit in memory)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(VARIANTS),
        default=["default"],
        help="options of the spiking net, each a case compared with 'default' (no option set): channels_last, "
        "checkpoint (activation checkpointing of segments), channels_last+checkpoint",
    )
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc malloc keeps freed memory for reuse (no page faults of fresh allocations)")  # fmt: skip
    p.add_argument("--out", help="JSON file (default benchmarks/results/train_step.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    payload = run(args)
    print(report(payload))
    print(f"wrote {write_json(payload, args.out, 'train_step.json')}")


if __name__ == "__main__":
    main()

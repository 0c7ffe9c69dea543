"""Spiking analysis: per-layer firing rates, operation counts (MACs and synaptic operations) and energy.

Everything is measured with forward hooks on an unchanged network: ``forward`` keeps returning logits.

Operation counting (per image, all time steps together):

- A convolution or linear layer does ``MACs`` multiply-accumulates on a dense input (output elements x
  in-channels per group x kernel size). When its actual input holds only 0 and 1 (spikes), a multiplication is not
  needed and only the inputs that fired are accumulated: ``SOPs = firing rate x MACs``, where ``MACs`` already
  covers the ``T`` time steps (``T x`` the per-step FLOPs).
- The attention products of AND-SA are counted on their spike operands: ``Q K^T`` (or ``(1 - Q) K^T`` in the
  direct form) does ``rate(query) x MACs`` accumulates, ``(Q K^T) V`` and ``(K 1)^T V`` do ``rate(V) x MACs``;
  the fused form's outer products of spike counts, and every product of real values (ANN twin), are MACs.
- ``energy = e_mac x MACs + e_ac x SOPs`` with the 45 nm figures 4.6 pJ and 0.9 pJ (Horowitz 2014) unless given.

Batch norm, additions and neuron updates are not counted in the energy (as in the energy figures of the spiking
transformer literature); the neuron updates (neuron-steps) are reported beside it. Each layer row also carries its
input elements and average fan-out, so that ``SOPs = firing rate x inputs x fan-out`` can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from monai_medspike.networks.blocks.and_attention import AttentionProducts
from monai_medspike.networks.layers import is_neuron
from monai_medspike.networks.layers.checkpointing import recomputing

__all__ = [
    "E_AC",
    "E_MAC",
    "FiringRateMonitor",
    "LayerOperations",
    "OperationReport",
    "count_operations",
    "is_spike_tensor",
]

E_MAC: float = 4.6e-12
"""Energy of one 32-bit floating-point multiply-accumulate at 45 nm, in joules."""
E_AC: float = 0.9e-12
"""Energy of one 32-bit floating-point accumulate at 45 nm, in joules."""

_WRAPPERS = ("module", "student")  # DistributedDataParallel and DistributionAlignmentNet prefixes


def strip_wrappers(name: str) -> str:
    """A module name without the prefixes of DDP (``module.``) and ``DistributionAlignmentNet`` (``student.``)."""
    parts = name.split(".")
    while parts and parts[0] in _WRAPPERS:
        parts = parts[1:]
    return ".".join(parts)


def is_spike_tensor(x: torch.Tensor) -> bool:
    """True if every value of ``x`` is 0 or 1 (a spike map), decided from the values themselves."""
    return bool(((x == 0) | (x == 1)).all())


class FiringRateMonitor:
    """Per-layer, per-time-step firing rates of the spiking neurons of a network, from forward hooks.

    Use as a context manager (hooks are removed on exit) or call :meth:`remove`. Every forward of a neuron adds its
    spikes per time step; :meth:`rates` gives ``{layer name: (T,) rates}`` (fraction of neurons that fired at each
    step, over all images seen) and :meth:`mean_rates` the average over time steps.

    Args:
        network: any module; wrappers (DDP ``module.``, ``DistributionAlignmentNet`` ``student.``) are stripped from
            the layer names, and a frozen teacher's modules (``teacher.``) are left out.

    Example::

        with FiringRateMonitor(net) as monitor:
            net(images)
        print(monitor.mean_rates())
    """

    def __init__(self, network: nn.Module) -> None:
        self.layers = {
            strip_wrappers(name): module
            for name, module in network.named_modules()
            if is_neuron(module) and not strip_wrappers(name).startswith("teacher.")
        }
        if not self.layers:
            raise ValueError("network has no spiking neurons: firing rates need a spiking network.")
        self.active = True
        self._spikes: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._hooks = [module.register_forward_hook(self._hook(name)) for name, module in self.layers.items()]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not self.active or recomputing():  # a checkpointed segment's rerun: its spikes were counted
                return
            out = output.detach()
            # summed on the network's device (no synchronisation per layer); moved to the CPU in rates()
            per_step = out.reshape(out.shape[0], -1).sum(dim=1, dtype=torch.float64)
            if name in self._spikes and self._spikes[name].shape == per_step.shape:
                self._spikes[name] += per_step
            else:
                self._spikes[name] = per_step
            self._counts[name] = self._counts.get(name, 0) + out[0].numel()

        return record

    def reset(self) -> None:
        """Forget what was counted so far."""
        self._spikes, self._counts = {}, {}

    def rates(self) -> dict[str, torch.Tensor]:
        """``{layer: (T,) firing rate at each time step}`` for the layers that ran, in network order."""
        return {n: self._spikes[n].cpu() / self._counts[n] for n in self.layers if self._counts.get(n)}

    def mean_rates(self) -> dict[str, float]:
        """``{layer: firing rate averaged over time steps}``."""
        return {n: float(r.mean()) for n, r in self.rates().items()}

    def layer_totals(self) -> dict[str, tuple[float, int]]:
        """``{layer: (spikes, neuron-steps)}`` counted so far, for the layers that ran."""
        return {n: (float(self._spikes[n].sum()), self._counts[n] * len(self._spikes[n])) for n in self.rates()}

    def totals(self) -> tuple[float, int]:
        """All spikes counted and all neuron-steps counted (their ratio is the overall firing rate)."""
        per_layer = self.layer_totals().values()
        return sum(s for s, _ in per_layer), sum(n for _, n in per_layer)

    def remove(self) -> None:
        """Remove the forward hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> FiringRateMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


@dataclass
class LayerOperations:
    """Operations of one layer (or one attention product) per image."""

    name: str
    kind: str
    input: str  # "spikes" or "real"
    firing_rate: float | None  # of the spike input; None for real inputs
    macs: float  # dense multiply-accumulates (all time steps)
    sops: float  # synaptic (accumulate-only) operations
    energy: float  # joules
    inputs: float = 0.0  # input elements (all time steps): sops = firing_rate x inputs x fan_out
    fan_out: float = 0.0  # operations per input element, on average (macs / inputs)


@dataclass
class OperationReport:
    """Per-layer operations of a network on some images, per image."""

    layers: list[LayerOperations] = field(default_factory=list)
    images: int = 0
    e_mac: float = E_MAC
    e_ac: float = E_AC
    neuron_updates: float = 0.0  # neuron-steps (membrane updates), not counted in ``energy``

    @property
    def macs(self) -> float:
        """Multiply-accumulates done (layers with real-valued input)."""
        return sum(layer.macs for layer in self.layers if layer.input == "real")

    @property
    def sops(self) -> float:
        """Synaptic operations done (layers with spike input)."""
        return sum(layer.sops for layer in self.layers)

    @property
    def dense_macs(self) -> float:
        """What every layer would cost as multiply-accumulates (the network run as an ANN on the same shapes)."""
        return sum(layer.macs for layer in self.layers)

    @property
    def energy(self) -> float:
        """Joules per image: ``e_mac x MACs + e_ac x SOPs``."""
        return self.e_mac * self.macs + self.e_ac * self.sops

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "e_mac": self.e_mac,
            "e_ac": self.e_ac,
            "macs": self.macs,
            "sops": self.sops,
            "energy_j": self.energy,
            "neuron_updates": self.neuron_updates,
            "layers": [asdict(layer) for layer in self.layers],
        }

    def table(self, top: int | None = None) -> str:
        """A plain-text table of the layers (``top`` largest by energy, else all) and the totals."""
        rows = sorted(self.layers, key=lambda r: -r.energy)[:top] if top else self.layers
        width = max([len(r.name) for r in rows] + [10])
        lines = [
            f"{'layer':<{width}}  {'kind':<7} {'input':<6} {'rate':>6} {'fan-out':>8} {'MACs':>10} {'SOPs':>10} "
            f"{'energy':>10}"
        ]
        for r in rows:
            rate = f"{r.firing_rate:.3f}" if r.firing_rate is not None else "-"
            lines.append(
                f"{r.name:<{width}}  {r.kind:<7} {r.input:<6} {rate:>6} {r.fan_out:>8.3g} "
                f"{_si(r.macs if r.input == 'real' else 0):>10} {_si(r.sops):>10} {_si(r.energy, 'J'):>10}"
            )
        lines.append(
            f"{'total':<{width}}  {'':<7} {'':<6} {'':>6} {'':>8} {_si(self.macs):>10} {_si(self.sops):>10} "
            f"{_si(self.energy, 'J'):>10}"
        )
        return "\n".join(lines)


def _si(value: float, unit: str = "") -> str:
    if value == 0:
        return f"0{unit}"
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n")]
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}{unit}"
    return f"{value / 1e-12:.3g}p{unit}"


def _layer_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # every input element is multiplied with out_channels / groups x kernel weights
        return float(x.numel()) * module.out_channels / module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return float(y.numel()) * module.in_channels / module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return float(y.numel()) * module.in_features
    raise TypeError(f"no operation count for {type(module).__name__}")


_COUNTED = (nn.modules.conv._ConvNd, nn.Linear)


def _attention_products(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: Sequence[str], method: str
) -> list[tuple[str, str, float, float | None, float, float]]:
    """``(product, input kind, MACs, rate, SOPs, input elements)`` of the matrix products of AND-SA on
    ``(..., d, N)`` operands; the input is the spike operand whose spikes select the accumulates."""
    *lead, d, n = q.shape
    heads = float(math.prod(lead))
    spikes = {"q": is_spike_tensor(q), "k": is_spike_tensor(k), "v": is_spike_tensor(v)}
    rate = {name: float(t.float().mean()) for name, t in (("q", q), ("k", k), ("v", v))}
    products = []

    def qk(name: str, qx: torch.Tensor, is_spikes: bool) -> None:
        macs = heads * d * d * n
        if is_spikes:  # accumulate the key spikes selected by each query spike
            query_rate = float(qx.float().mean())
            products.append((name, "spikes", macs, query_rate, query_rate * macs, heads * d * n))
        else:
            products.append((name, "real", macs, None, 0.0, heads * d * n))

    def times_v(name: str) -> None:
        macs = heads * d * d * n
        if spikes["v"]:
            products.append((name, "spikes", macs, rate["v"], rate["v"] * macs, heads * d * n))
        else:
            products.append((name, "real", macs, None, 0.0, heads * d * n))

    both = spikes["q"] and spikes["k"]
    if method == "direct":
        for term in terms:
            qk(f"{term}.qk", q if term[0] == "a" else 1.0 - q, both)
            times_v(f"{term}.qkv")
        return products
    qk("qk", q, both)
    times_v("qkv")
    if any(t in terms for t in ("ia", "ii")):  # w = (K 1)^T V: counts times spikes
        macs = heads * d * n
        products.append(("kv", "spikes" if spikes["v"] else "real", macs, rate["v"] if spikes["v"] else None,
                         rate["v"] * macs if spikes["v"] else 0.0, heads * d * n))  # fmt: skip
    if any(t in terms for t in ("ai", "ii")):  # outer products (Q 1) u and ((1 - Q) 1) u of real counts
        count = sum(t in terms for t in ("ai", "ii"))
        products.append(("rank1", "real", count * heads * d * n, None, 0.0, heads * (d + n)))
    return products


@torch.no_grad()
def count_operations(
    network: nn.Module, images: torch.Tensor, e_mac: float = E_MAC, e_ac: float = E_AC
) -> OperationReport:
    """Run ``network`` on ``images`` (in eval mode) and count the operations of every layer, per image.

    Args:
        network: MedSpikeFormer (spiking or ANN twin) or any network of convolutions and linear layers (e.g. MONAI's
            ``BasicUNet``, ``UNet``: MACs only, since their inputs are real-valued).
        images: a batch ``(B, C, *spatial)``; the counts are divided by ``B``.
        e_mac: joules per multiply-accumulate.
        e_ac: joules per accumulate (synaptic operation).

    Returns:
        an :class:`OperationReport` with one row per convolution / linear layer call and per attention product.
    """
    if images.ndim < 3:
        raise ValueError(f"images must be a batch (B, C, *spatial), got shape {tuple(images.shape)}.")
    batch = images.shape[0]
    raw: list[tuple[str, str, str, float | None, float, float, float]] = []
    names = {id(m): strip_wrappers(n) for n, m in network.named_modules()}
    neuron_updates = [0.0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        macs = _layer_macs(module, x, output)
        kind = type(module).__name__.lower()
        if is_spike_tensor(x):
            rate = float(x.float().mean())
            raw.append((names[id(module)], kind, "spikes", rate, macs, rate * macs, float(x.numel())))
        else:
            raw.append((names[id(module)], kind, "real", None, macs, 0.0, float(x.numel())))

    def attention_hook(module: AttentionProducts, inputs: tuple, output: object) -> None:
        q, k, v = inputs
        for product, kind, macs, rate, sops, n_in in _attention_products(q, k, v, module.interactions, module.method):
            raw.append((f"{names[id(module)]}.{product}", "matmul", kind, rate, macs, sops, n_in))

    def neuron_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        neuron_updates[0] += float(output.numel())

    hooks = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, _COUNTED)]
    hooks += [m.register_forward_hook(attention_hook) for m in network.modules() if isinstance(m, AttentionProducts)]
    hooks += [m.register_forward_hook(neuron_hook) for m in network.modules() if is_neuron(m)]
    was_training = network.training
    network.eval()
    try:
        network(images)
    finally:
        for h in hooks:
            h.remove()
        network.train(was_training)
    report = OperationReport(images=batch, e_mac=e_mac, e_ac=e_ac, neuron_updates=neuron_updates[0] / batch)
    for name, kind, input_kind, rate, macs, sops, n_in in raw:
        macs, sops, n_in = macs / batch, sops / batch, n_in / batch
        energy = e_ac * sops if input_kind == "spikes" else e_mac * macs
        fan_out = macs / n_in if n_in else 0.0
        report.layers.append(LayerOperations(name, kind, input_kind, rate, macs, sops, energy, n_in, fan_out))
    return report

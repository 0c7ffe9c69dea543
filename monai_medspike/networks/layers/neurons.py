"""Spiking neuron and surrogate-gradient factories over spikingjelly 2.0.

The factories follow MONAI's :class:`monai.networks.layers.factories.LayerFactory` pattern (``Act``, ``Norm``):
a layer is named by a string or by a ``(name, kwargs)`` pair, e.g. ``"lif"`` or ``("lif", {"tau": 3.0})``, so the
same specification can be written in a bundle config.

All neurons are built in spikingjelly's multi-step mode (``step_mode="m"``): they take a ``(T, B, ...)`` tensor
and return spikes of the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, LayerFactory, split_args
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from monai_medspike.networks.layers.lean_lif import LOW_PRECISION, lean_lif_multi_step
from monai_medspike.networks.layers.temporal import capturing_graph

__all__ = [
    "DEFAULT_NEURON",
    "LIFNode",
    "Neuron",
    "ParametricLIFNode",
    "Surrogate",
    "get_activation",
    "get_neuron_layer",
    "get_surrogate",
    "is_neuron",
]

# spikingjelly probes for Triton on the first forward of every process and logs twice when it is missing
# (always the case on CPU). The message is noise for users of this package.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

DEFAULT_NEURON: tuple[str, dict[str, Any]] = ("lif", {})
"""LIF with the published settings: tau=2.0, v_threshold=1.0, hard reset to 0, detached reset, sigmoid(alpha=4)."""


def _lif_reference(
    x_seq: torch.Tensor,
    decay: Callable[[torch.Tensor], torch.Tensor],
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
) -> torch.Tensor:
    """Multi-step LIF forward in plain torch ops, from a resting membrane (what ``forward`` starts from).

    ``H = V + decay(X - (V - V_reset))`` (or ``V - decay(V - V_reset) + X`` without input decay), spike where
    ``H >= V_threshold``, then a hard reset to ``V_reset`` or a soft reset by subtraction (``V_reset=None``).
    ``decay`` is ``a / tau`` (LIF) or ``a * sigmoid(w)`` (PLIF), written as spikingjelly's CPU operators write it,
    so the spikes agree bit for bit.
    """
    rest = 0.0 if v_reset is None else v_reset
    v = torch.full_like(x_seq[0], rest)
    spikes = []
    for t in range(x_seq.shape[0]):
        h = v + decay(x_seq[t] - (v - rest)) if decay_input else v - decay(v - rest) + x_seq[t]
        spike = (h >= v_threshold).to(x_seq.dtype)
        v = h - spike * v_threshold if v_reset is None else h * (1.0 - spike) + rest * spike
        spikes.append(spike)
    return torch.stack(spikes)


_LEAN_SURROGATES = {sj_surrogate.Sigmoid: "sigmoid", sj_surrogate.ATan: "atan"}


def _in_float32(run: Callable[[torch.Tensor], torch.Tensor], x_seq: torch.Tensor) -> torch.Tensor:
    """``run(x_seq)`` with a bfloat16 or float16 ``x_seq`` integrated in float32 (the membrane, the threshold
    comparison and the surrogate gradient), the spikes returned in ``x_seq``'s dtype (0 and 1 are exact)."""
    if x_seq.dtype not in LOW_PRECISION:
        return run(x_seq)
    return run(x_seq.float()).to(x_seq.dtype)


class LIFNode(sj_neuron.LIFNode):
    """spikingjelly's ``LIFNode`` with a memory-lean training path and a traceable forward.

    - ``lean=True`` (default): a forward from a resting membrane (what every network forward starts from) runs
      :func:`~monai_medspike.networks.layers.lean_lif.lean_lif_multi_step`, which keeps one tensor for the
      backward pass instead of spikingjelly's two; same spikes bit for bit, same gradients (tested); on the CPU it
      runs a fused C kernel (``MONAI_MEDSPIKE_LIF_KERNEL=0`` turns it off). Settings it
      does not cover (``detach_reset=False``, ``store_v_seq``, other surrogates, a membrane carried over from a
      previous call) use spikingjelly.
    - While the network is captured as a graph (TorchScript or ONNX export, ``torch.compile``;
      :func:`~monai_medspike.networks.layers.capturing_graph`) the forward is written in plain torch ops:
      spikingjelly's custom operator (``sj_lif``) and the fused C kernel cannot be carried by a graph file.
    - Mixed precision: a bfloat16 or float16 input (``torch.autocast``) is integrated in float32 on every path, so
      the threshold is applied to a float32 membrane; the spikes come back in the input's dtype.

    Args:
        lean: use the memory-lean path where it applies; False always uses spikingjelly.
        store_v: keep the membrane after the last step in ``self.v``, so that the next call continues from it
            (spikingjelly's behaviour). False leaves ``self.v`` at rest on the lean path (every call then starts
            from rest) and, on the fused CPU kernel, allocates no tensor for it: for networks that reset their
            neurons at every forward anyway (:class:`MedSpikeFormer <monai_medspike.networks.nets.MedSpikeFormer>`
            sets it), where the last membranes of all layers would otherwise be held until the forward ends (at
            ``T = 1`` as large as the layers' inputs). Calls that take spikingjelly's path ignore it.
        args, kwargs: those of spikingjelly's ``LIFNode``.
    """

    def __init__(self, *args: Any, lean: bool = True, store_v: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lean = lean
        self.store_v = store_v

    def _lean_surrogate(self) -> str | None:
        surrogate = self.surrogate_function
        kind = _LEAN_SURROGATES.get(type(surrogate))
        return kind if kind is not None and getattr(surrogate, "spiking", True) else None

    def multi_step_forward(self, x_seq: torch.Tensor, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if capturing_graph():
            tau = self.tau
            return _lif_reference(x_seq, lambda a: a / tau, self.v_threshold, self.v_reset, self.decay_input)
        kind = self._lean_surrogate()
        if (
            self.lean
            and not args
            and not kwargs
            and kind is not None
            and self.detach_reset
            and not self.store_v_seq
            and isinstance(self.v, float)  # at rest: reset since the last call
        ):
            spikes, v = lean_lif_multi_step(
                x_seq,
                self.tau,
                self.v_threshold,
                self.v_reset,
                self.decay_input,
                kind,
                self.surrogate_function.alpha,
                keep_v=self.store_v,
            )
            if self.store_v:
                self.v = v
            self.v_seq = None
            return spikes
        return _in_float32(lambda x: super(LIFNode, self).multi_step_forward(x, *args, **kwargs), x_seq)


class ParametricLIFNode(sj_neuron.ParametricLIFNode):
    """spikingjelly's ``ParametricLIFNode`` (learnable ``1 / tau = sigmoid(w)``), traceable like :class:`LIFNode`,
    integrating bfloat16 and float16 inputs in float32 like it."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if capturing_graph():
            q = self.w.sigmoid()
            return _lif_reference(x_seq, lambda a: a * q, self.v_threshold, self.v_reset, self.decay_input)
        return _in_float32(lambda x: super(ParametricLIFNode, self).multi_step_forward(x, *args, **kwargs), x_seq)


Surrogate = LayerFactory(name="Surrogate gradients", description="Surrogate gradients of the spike function.")
Surrogate.add_factory_class("sigmoid", sj_surrogate.Sigmoid, "sigma(alpha * x), default alpha=4.0")
Surrogate.add_factory_class("atan", sj_surrogate.ATan, "arctan surrogate, default alpha=2.0")

Neuron = LayerFactory(name="Spiking neuron layers", description="Multi-step spiking neuron layers (spikingjelly 2.0).")
Neuron.add_factory_class("lif", LIFNode, "leaky integrate-and-fire neuron with a fixed tau")
Neuron.add_factory_class("plif", ParametricLIFNode, "LIF neuron with a learnable tau (init_tau)")

_COMMON_DEFAULTS: dict[str, Any] = {
    "v_threshold": 1.0,
    "v_reset": 0.0,
    "detach_reset": True,
    "decay_input": True,
    "surrogate": ("sigmoid", {"alpha": 4.0}),
}
# keyword accepted by the factory -> keyword of the spikingjelly class, per neuron type
_TAU_KEYWORD = {"LIF": "tau", "PLIF": "init_tau"}


def _check_name(factory: LayerFactory, name: Any, argument: str) -> str:
    if not isinstance(name, str) or name.upper() not in factory.names:
        valid = ", ".join(sorted(n.lower() for n in factory.names))
        raise ValueError(f"{argument}: unknown name {name!r}; valid names are: {valid}.")
    return name.upper()


def get_surrogate(spec: str | tuple[str, Mapping[str, Any]] = ("sigmoid", {"alpha": 4.0})) -> nn.Module:
    """Build a fresh surrogate-gradient function from ``"sigmoid"`` or ``("atan", {"alpha": 2.0})``.

    A new instance is returned on every call: spikingjelly surrogates are modules, and sharing one between
    neurons would tie their settings together.

    Raises:
        ValueError: unknown surrogate name or a keyword the surrogate does not take.
    """
    name, kwargs = split_args(spec)
    key = _check_name(Surrogate, name, "surrogate")
    kwargs = dict(kwargs)
    unknown = set(kwargs) - {"alpha"}
    if unknown:
        raise ValueError(f"surrogate {name!r}: unknown keyword(s) {sorted(unknown)}; the only keyword is 'alpha'.")
    if "alpha" in kwargs and not float(kwargs["alpha"]) > 0:
        raise ValueError(f"surrogate {name!r}: alpha must be > 0, got {kwargs['alpha']!r}.")
    return Surrogate[key](**{k: float(v) for k, v in kwargs.items()})


def get_neuron_layer(spec: str | tuple[str, Mapping[str, Any]] = DEFAULT_NEURON) -> nn.Module:
    """Build a multi-step spiking neuron layer.

    Args:
        spec: ``"lif"``, ``"plif"`` or a ``(name, kwargs)`` pair. Keywords (defaults in brackets):
            ``tau`` [2.0] (for ``plif`` the initial tau), ``v_threshold`` [1.0], ``v_reset`` [0.0; ``None`` gives a
            soft reset by subtraction], ``detach_reset`` [True], ``decay_input`` [True],
            ``surrogate`` [``("sigmoid", {"alpha": 4.0})``]; ``lif`` also takes ``lean`` [True: the memory-lean
            training path of :class:`LIFNode`; False: spikingjelly's].

    Returns:
        a spikingjelly neuron in ``step_mode="m"``: input ``(T, B, ...)``, output spikes in {0, 1}, same shape.

    Raises:
        ValueError: unknown neuron name, unknown keyword, or a value out of range (tau must be > 1).

    Example::

        lif = get_neuron_layer(("lif", {"tau": 2.0, "surrogate": "atan"}))
        spikes = lif(torch.randn(4, 2, 8))  # (T=4, B=2, 8)
    """
    name, kwargs = split_args(spec)
    key = _check_name(Neuron, name, "neuron")
    kwargs = dict(kwargs)
    valid = {"tau", *_COMMON_DEFAULTS} | ({"lean"} if key == "LIF" else set())
    unknown = set(kwargs) - valid
    if unknown:
        raise ValueError(f"neuron {name!r}: unknown keyword(s) {sorted(unknown)}; valid keywords are {sorted(valid)}.")
    params = {**_COMMON_DEFAULTS, "tau": 2.0, **kwargs}
    tau = float(params.pop("tau"))
    if not tau > 1.0:
        raise ValueError(f"neuron {name!r}: tau must be > 1.0 (the membrane decays by 1/tau per step), got {tau}.")
    v_threshold = float(params["v_threshold"])
    v_reset = params["v_reset"]
    if v_reset is not None and not float(v_reset) < v_threshold:
        raise ValueError(f"neuron {name!r}: v_reset ({v_reset}) must be below v_threshold ({v_threshold}).")
    extra = {"lean": bool(params.pop("lean"))} if "lean" in params else {}
    return Neuron[key](
        **{_TAU_KEYWORD[key]: tau},
        **extra,
        v_threshold=v_threshold,
        v_reset=None if v_reset is None else float(v_reset),
        detach_reset=bool(params["detach_reset"]),
        decay_input=bool(params["decay_input"]),
        surrogate_function=get_surrogate(params["surrogate"]),
        step_mode="m",
    )


def get_activation(neuron: str | tuple[str, Mapping[str, Any]], spiking: bool, ann: str = "gelu") -> nn.Module:
    """The non-linearity of one layer: a spiking neuron, or its ANN-twin counterpart.

    Args:
        neuron: neuron specification used when ``spiking`` is True (see :func:`get_neuron_layer`).
        spiking: True for the spiking network, False for its ANN twin.
        ann: MONAI ``Act`` name used by the ANN twin (``"gelu"`` for most layers, ``"sigmoid"`` for Q/K/V so that
            the all-neuron complements ``1 - Q`` stay in [0, 1]).
    """
    if spiking:
        return get_neuron_layer(neuron)
    return Act[ann]()


def is_neuron(module: nn.Module) -> bool:
    """True if ``module`` is a spikingjelly neuron (an element of the spike-emitting layers)."""
    return isinstance(module, sj_neuron.BaseNode)

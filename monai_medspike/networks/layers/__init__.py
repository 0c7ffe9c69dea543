from __future__ import annotations

from .neurons import (
    DEFAULT_NEURON,
    LIFNode,
    Neuron,
    ParametricLIFNode,
    Surrogate,
    get_activation,
    get_neuron_layer,
    get_surrogate,
    is_neuron,
)
from .temporal import TimeDistributed, encode_direct

__all__ = [
    "DEFAULT_NEURON",
    "LIFNode",
    "Neuron",
    "ParametricLIFNode",
    "Surrogate",
    "TimeDistributed",
    "encode_direct",
    "get_activation",
    "get_neuron_layer",
    "get_surrogate",
    "is_neuron",
]

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
from .temporal import TimeDistributed, as_format_of, capturing_graph, encode_direct, is_channels_last, time_mean

__all__ = [
    "DEFAULT_NEURON",
    "LIFNode",
    "Neuron",
    "ParametricLIFNode",
    "Surrogate",
    "TimeDistributed",
    "as_format_of",
    "capturing_graph",
    "encode_direct",
    "get_activation",
    "get_neuron_layer",
    "get_surrogate",
    "is_channels_last",
    "time_mean",
    "is_neuron",
]

"""MedSpikeFormer: a spiking transformer for 2D medical image segmentation.

Reference: "MedSpikeFormer: All Neurons Matter for Medical Image Segmentation" (ICLR 2026 submission, withdrawn).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional as sj_functional

from monai_medspike.networks.blocks import (
    INTERACTIONS,
    DecoderBlock,
    EncoderStage,
    SegmentationHead,
    check_interactions,
)
from monai_medspike.networks.layers import DEFAULT_NEURON, LIFNode, capturing_graph, encode_direct, get_neuron_layer
from monai_medspike.networks.layers.checkpointing import CheckpointedSegments, run_segment

__all__ = ["LAYOUTS", "PRECISIONS", "SPIKE_DRIVEN_NEURON", "MedSpikeFormer"]

ATTENTIONS = ("and", "ssa")
LAYOUTS = ("published", "spike_driven")
PRECISIONS = ("float32", "bfloat16")
SPIKE_DRIVEN_NEURON: tuple[str, dict[str, Any]] = ("lif", {"v_threshold": 0.5, "v_reset": None})
"""The default neuron of the spike-driven layout: LIF (tau 2) with threshold 0.5 and a soft reset (subtraction).

With the published neuron (threshold 1, hard reset) the spike-driven student hardly trains: few inputs reach the
threshold, and the surrogate gradients through the chain of neurons vanish (measured in ``docs/energy.md``)."""


def _positive_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}.")
    return value


class MedSpikeFormer(nn.Module):
    """MedSpikeFormer: encoder of AND-SA stages, spiking decoder with additive skips, rate-decoded head.

    The image is presented unchanged at each of ``time_steps`` steps (direct encoding); the time axis exists only
    inside the network. Each encoder stage is a stride-1 patch embedding, an all-neuron self-attention block
    (:class:`~monai_medspike.networks.blocks.AllNeuronSelfAttention`) and a 2x2 stride-2 downsampling. The decoder
    mirrors the stages (residual spiking DSConvs, bilinear x2 upsampling) and ADDS the encoder outputs as skips.
    The head averages over time and returns logits. The first embedding is computed once on the image and repeated
    over the steps (the same values as embedding ``T`` identical copies, for ``1/T`` of the work).

    ``layout="spike_driven"`` builds the same network with a neuron before every convolution that reads real values
    in the published layout (membrane shortcuts: residual sums stay real, convolutions read spikes; upsampling by a
    transposed convolution; heads that read spikes at every step and average the logits). Then every convolution
    except the first embedding (the encoding layer, run once on the image) reads only 0/1, so it can run on
    accumulates only (see ``docs/energy.md``). AND-SA keeps its four terms; its ANN twin is the same layout with
    GELUs (sigmoid Q/K/V) in place of the neurons.

    ``forward`` resets every neuron first, so calls are independent: the same input gives the same output, and
    sliding-window inference or a server never depends on the caller resetting state. Its LIF neurons do not keep
    their last membrane (``store_v=False`` of :class:`~monai_medspike.networks.layers.LIFNode`), and it resets every
    neuron again at the end, so no last membrane is held while the forward runs on (the lean path) and none
    after it. To record membranes, set ``store_v_seq = True`` on a neuron (spikingjelly's path, which keeps its
    whole membrane sequence in ``v_seq``).

    Per-stage side mask logits (used by the distribution-alignment loss) come from
    :meth:`forward_with_side_outputs`; ``forward`` always returns one tensor. To train with the alignment loss in
    MONAI's ``SupervisedTrainer`` wrap the student and its teacher in
    :class:`~monai_medspike.networks.nets.DistributionAlignmentNet`.

    Args:
        spatial_dims: must be 2 (volumes are segmented slice by slice, e.g. with ``monai.inferers.SliceInferer``).
        in_channels: image channels (1 for CT, 3 for RGB).
        out_channels: output channels: 1 for binary segmentation (sigmoid), N >= 2 for N classes (softmax).
        embed_dims: channel width of each encoder stage; the number of stages sets the size divisor ``2**len``.
        num_heads: attention heads in every stage (must divide every width).
        time_steps: simulation steps ``T`` of the spiking network. The ANN twin (``spiking=False``) has no state
            and sees the same image at every step, so it runs one step whatever this value is.
        neuron: neuron specification, e.g. ``"lif"`` or ``("lif", {"tau": 2.0})``, see
            :func:`~monai_medspike.networks.layers.get_neuron_layer`. None (default): the published LIF
            (:data:`~monai_medspike.networks.layers.DEFAULT_NEURON`), or :data:`SPIKE_DRIVEN_NEURON` in the
            spike-driven layout.
        interactions: AND-SA terms, a subset of ``("aa", "ii", "ai", "ia")`` (ablations).
        attention: ``"and"`` (all-neuron attention) or ``"ssa"`` (conventional spiking self-attention over the
            activated neurons only, i.e. ``interactions=("aa",)``).
        spiking: False builds the ANN twin used as the alignment teacher (sigmoid Q/K/V, GELU elsewhere).
        faithful_layout: reproduce the public code's attention reshape, which mixes channels and pixels.
        kernel_size: kernel of the embeddings, depthwise convolutions and heads (odd).
        attention_method: ``"fused"`` (one ``QK^T``, one product with ``V``) or ``"direct"`` (four of each);
            numerically equivalent.
        layout: ``"published"`` (the paper's network) or ``"spike_driven"`` (every convolution but the first reads
            spikes).
        use_checkpoint: activation checkpointing (``torch.utils.checkpoint``, as MONAI's ``use_checkpoint``): in
            training, segments of every stage (the embedding; in AND-SA the products, each term, the fusion and
            the MLP; the side head; the downsampling), every decoder block and the head keep only their inputs for
            the backward pass and run again there: about one more forward pass for most of the activation memory
            (measured in ``docs/performance.md``). Outputs, gradients and batch-norm statistics are exactly those
            of the plain network (the rerun does not update the running statistics again).
        channels_last: keep the weights and every activation channels-last (``torch.channels_last``): the same
            network and state dict, the same outputs up to float rounding; on a CPU 0.6-0.9 x the train step's time
            at 256 x 256 (oneDNN's depthwise and 1x1 convolutions and their backward). AND-SA is computed in the
            channels-last order, with a backward pass in that order for training (no reordering into heads and
            back, :func:`~monai_medspike.networks.blocks.and_attention.token_major_attention`); with bfloat16 and
            folded batch norms it is the fastest CPU inference (measured in ``docs/performance.md``). The bundles'
            inference uses it on a CPU by default. The input may be in either format.
        precision: ``"float32"`` (default) or ``"bfloat16"``: mixed precision, the forward runs under
            ``torch.autocast`` with bfloat16 on the input's device (CPU or CUDA; no gradient scaling is needed). The
            parameters, batch-norm statistics, optimizer and the returned logits stay float32, and every neuron
            integrates its membrane in float32 (the threshold is applied in float32 to inputs rounded to
            bfloat16). About 0.7 x the float32 train step's time (0.55 x with ``channels_last``) and 0.5 x its
            memory on a CPU with bfloat16 instructions (measured with its Dice on real images in
            ``docs/performance.md``). TorchScript export traces float32.

    Raises:
        ValueError: on any invalid argument, naming it.

    Example::

        net = MedSpikeFormer(in_channels=1, out_channels=3, time_steps=4)
        logits = net(torch.rand(2, 1, 256, 192))  # (2, 3, 256, 192)
        logits, side = net.forward_with_side_outputs(torch.rand(2, 1, 256, 192))  # side[i]: (2, 3, 256/2**i, ...)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        embed_dims: Sequence[int] = (32, 64, 128, 256),
        num_heads: int = 4,
        time_steps: int = 4,
        neuron: str | tuple[str, Mapping[str, Any]] | None = None,
        interactions: Sequence[str] = INTERACTIONS,
        attention: str = "and",
        spiking: bool = True,
        faithful_layout: bool = False,
        kernel_size: int = 3,
        attention_method: str = "fused",
        layout: str = "published",
        use_checkpoint: bool = False,
        channels_last: bool = False,
        precision: str = "float32",
    ) -> None:
        super().__init__()
        self.register_load_state_dict_pre_hook(_read_model_file)
        self._arguments = {
            "spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
            "embed_dims": embed_dims, "num_heads": num_heads, "time_steps": time_steps, "neuron": neuron,
            "interactions": interactions, "attention": attention, "spiking": spiking,
            "faithful_layout": faithful_layout, "kernel_size": kernel_size, "attention_method": attention_method,
            "layout": layout, "use_checkpoint": use_checkpoint, "channels_last": channels_last,
            "precision": precision,
        }  # fmt: skip
        if spatial_dims != 2:
            raise ValueError(
                f"spatial_dims must be 2, got {spatial_dims!r}: MedSpikeFormer is a 2D network; segment volumes "
                "slice by slice (monai.inferers.SliceInferer)."
            )
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        _positive_int(num_heads, "num_heads")
        _positive_int(time_steps, "time_steps")
        if isinstance(embed_dims, int | str) or len(embed_dims) < 1:
            raise ValueError(f"embed_dims must be a non-empty sequence of channel widths, got {embed_dims!r}.")
        embed_dims = tuple(_positive_int(d, "embed_dims") for d in embed_dims)
        bad = [d for d in embed_dims if d % num_heads]
        if bad:
            raise ValueError(f"embed_dims {bad} are not divisible by num_heads={num_heads}.")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}.")
        interactions = check_interactions(interactions)
        if attention == "ssa":
            if interactions not in (INTERACTIONS, ("aa",)):
                raise ValueError(
                    f"attention='ssa' uses the activated neurons only; interactions={interactions!r} contradicts it "
                    "(leave interactions at its default)."
                )
            interactions = ("aa",)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        if attention_method not in ("fused", "direct"):
            raise ValueError(f"attention_method must be 'fused' or 'direct', got {attention_method!r}.")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
        if neuron is None:
            neuron = SPIKE_DRIVEN_NEURON if layout == "spike_driven" else DEFAULT_NEURON
        if spiking:
            get_neuron_layer(neuron)  # validate the specification once, with its error message

        self.embed_dims = embed_dims
        self.spiking = bool(spiking)
        self.time_steps = time_steps if self.spiking else 1
        self.interactions = interactions
        self.layout = layout
        self.channels_last = bool(channels_last)
        spike_driven = layout == "spike_driven"
        self.size_divisor = 2 ** len(embed_dims)

        widths = (in_channels, *embed_dims)
        self.stages = nn.ModuleList(
            EncoderStage(
                in_channels=widths[i],
                channels=widths[i + 1],
                out_channels=out_channels,
                num_heads=num_heads,
                neuron=neuron,
                spiking=self.spiking,
                interactions=interactions,
                kernel_size=kernel_size,
                faithful_layout=faithful_layout,
                method=attention_method,
                spike_driven=spike_driven,
                encodes_image=i == 0,
            )
            for i in range(len(embed_dims))
        )
        # decoder i maps the skip width of stage S-1-i to that of stage S-2-i; the last keeps embed_dims[0]
        dec_out = (*embed_dims[:-1][::-1], embed_dims[0])
        self.decoders = nn.ModuleList(
            DecoderBlock(c_in, c_out, kernel_size, neuron, self.spiking, spike_driven)
            for c_in, c_out in zip(embed_dims[::-1], dec_out, strict=True)
        )
        self.head = SegmentationHead(embed_dims[0], out_channels, kernel_size, neuron, self.spiking, spike_driven)
        for module in self.modules():
            if isinstance(module, LIFNode):
                module.store_v = False  # every forward starts from rest: the last membranes are never read
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self.use_checkpoint = use_checkpoint
        self.precision = precision

    @property
    def precision(self) -> str:
        """``"float32"`` or ``"bfloat16"`` (mixed precision, see the argument); may be switched on an existing
        network (the state dict does not change)."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}.")
        self._precision = value
        self._arguments["precision"] = value  # the ANN twin follows

    @property
    def use_checkpoint(self) -> bool:
        """Activation checkpointing in training (see the argument); may be switched on an existing network."""
        return self._use_checkpoint

    @use_checkpoint.setter
    def use_checkpoint(self, value: bool) -> None:
        self._use_checkpoint = bool(value)
        self._arguments["use_checkpoint"] = self._use_checkpoint  # the ANN twin follows
        for module in self.modules():
            if isinstance(module, CheckpointedSegments):
                module.use_checkpoint = self._use_checkpoint

    @property
    def arguments(self) -> dict[str, Any]:
        """The constructor arguments of this network (as now switched: ``use_checkpoint``, ``precision``): what a
        checkpoint records so that the same network can be built again (:mod:`monai_medspike.checkpoints`)."""
        return dict(self._arguments)

    def ann_twin(self) -> MedSpikeFormer:
        """A new, untrained network with this one's arguments and ``spiking=False``: its ANN twin (the teacher of
        distribution alignment), with the same layout, widths and heads."""
        return type(self)(**{**self._arguments, "spiking": False})

    def _check_input(self, x: torch.Tensor) -> None:
        if capturing_graph():
            return
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MedSpikeFormer expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}. "
                "Volumes are segmented slice by slice (monai.inferers.SliceInferer)."
            )
        h, w = x.shape[-2:]
        k = self.size_divisor
        if h % k or w % k:
            nearest = tuple(max(k, (s + k // 2) // k * k) for s in (h, w))
            padded = tuple(-(-s // k) * k for s in (h, w))
            raise ValueError(
                f"Wrong input shape height={h}, width={w}: both must be divisible by {k} "
                f"(2 ** number of stages). The nearest valid size is {nearest}: resize to it, or pad to {padded} "
                f"with monai.transforms.DivisiblePad(k={k})."
            )

    def _run(self, x: torch.Tensor, with_side_outputs: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        if self._precision == "float32" or capturing_graph():
            return self._run_steps(x, with_side_outputs)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out, sides = self._run_steps(x, with_side_outputs)
        return out.float(), [side.float() for side in sides]

    def _run_steps(self, x: torch.Tensor, with_side_outputs: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.spiking:
            sj_functional.reset_net(self)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = encode_direct(x, 1)  # the first embedding runs once, then repeats over the T steps
        skips: list[torch.Tensor] = []
        sides: list[torch.Tensor] = []
        for i, stage in enumerate(self.stages):  # with use_checkpoint, the stages checkpoint their segments
            h, side = stage(h, with_side_outputs, self.time_steps if i == 0 else None)
            skips.append(h)
            if side is not None:
                sides.append(side)
        h = skips[-1]
        for i, decoder in enumerate(self.decoders):
            h = run_segment(decoder, decoder, h, enabled=self._use_checkpoint)
            if i + 2 <= len(skips):
                h = h + skips[-2 - i]
        out = run_segment(self.head, self.head, h, enabled=self._use_checkpoint)
        if self.spiking and not capturing_graph():
            # the membranes left after the last step are not needed: free them now rather than at the next call
            sj_functional.reset_net(self)
        return out, sides

    def __prepare_scriptable__(self) -> MedSpikeFormer:
        """``torch.jit.script`` (MONAI's ``ckpt_export`` without ``--use_trace``) cannot compile spikingjelly's
        neurons: refuse in one line that names the traced export, which runs at any size (the bundle READMEs)."""
        from monai_medspike.errors import UserError

        raise UserError(
            "MedSpikeFormer cannot be scripted (spikingjelly's neurons are not TorchScript): export it traced, "
            "with --use_trace True (ckpt_export) or torch.jit.trace(network, example); the traced file runs at any "
            "size divisible by 16."
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of images.

        Args:
            x: ``(B, in_channels, H, W)`` with ``H`` and ``W`` divisible by ``2 ** len(embed_dims)``.

        Returns:
            logits ``(B, out_channels, H, W)``.
        """
        return self._run(x, with_side_outputs=False)[0]

    def forward_with_side_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Segment and also return the side mask logits of every encoder stage.

        Returns:
            ``(logits, side)``: logits ``(B, out_channels, H, W)``; ``side[i]`` of shape
            ``(B, out_channels, H / 2**i, W / 2**i)`` for stage ``i``.
        """
        return self._run(x, with_side_outputs=True)


#: what turns a whole model file given to ``load_state_dict`` into its weights, in place, after checking its record:
#: :func:`monai_medspike.checkpoints.unwrap_model_file`, registered when that module is imported (every bundle
#: config imports it). Without it, such a file is refused as unexpected keys, never loaded silently.
MODEL_FILE_READERS: list[Callable[[nn.Module, dict[str, Any]], None]] = []


def _read_model_file(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Before ``load_state_dict``: a whole model file of this package given as the weights is read as its weights."""
    if not prefix:
        for reader in MODEL_FILE_READERS:
            reader(module, state_dict)

"""Patch embedding and downsampling of the MedSpikeFormer encoder."""

from __future__ import annotations

from monai_medspike.networks.blocks.convolutions import ConvBN

__all__ = ["PatchDownsample", "PatchEmbedding"]


class PatchEmbedding(ConvBN):
    """Stride-1 ``kernel_size`` convolution + BN that sets the channel width of a stage.

    Shapes:
        ``(T, B, C_in, H, W) -> (T, B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel_size)


class PatchDownsample(ConvBN):
    """2x2 stride-2 convolution + BN (patch merging) that halves the spatial size.

    Shapes:
        ``(T, B, C_in, H, W) -> (T, B, C_out, H / 2, W / 2)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)

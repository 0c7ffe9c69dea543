"""Inference-time rewrites of a trained network that keep its outputs (up to float rounding)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norm", "fold_for_inference"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def fold_batch_norm(network: nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution in an ``nn.Sequential`` into that convolution.

    In eval mode a batch norm is an affine map per channel with fixed statistics, so ``BN(conv(x))`` is one
    convolution with scaled weights and a shifted bias (PyTorch's ``fuse_conv_bn_eval``); the batch norm becomes an
    ``nn.Identity``. This removes one full pass over every such activation (73 of MedSpikeFormer's batch norms).
    Batch norms that follow anything else (AND-SA's term and block norms) stay. The network is changed in place and
    put in eval mode; its state dict no longer matches the trained checkpoint, so fold a network only after loading
    its weights, and keep the original if it will be trained or saved again.

    Args:
        network: a network in eval mode (a folded batch norm cannot learn or update its statistics).

    Returns:
        the number of batch norms folded.

    Raises:
        ValueError: if ``network`` is in training mode.
    """
    if network.training:
        raise ValueError(
            "fold_batch_norm needs a network in eval mode (call network.eval() first): folding fixes the batch "
            "norms' running statistics, which training would still update."
        )
    folded = 0
    for module in network.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if (
                isinstance(conv, _FOLDABLE)
                and isinstance(norm, nn.modules.batchnorm._BatchNorm)
                and norm.track_running_stats
                and norm.running_mean is not None
                and conv.out_channels == norm.num_features
            ):
                fused = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.modules.conv._ConvTransposeNd))
                if conv.weight.is_contiguous(memory_format=torch.channels_last) and fused.weight.dim() == 4:
                    fused = fused.to(memory_format=torch.channels_last)
                module[i], module[i + 1] = fused, nn.Identity()
                folded += 1
    return folded


def fold_for_inference(network: nn.Module) -> int:
    """Put a trained network in eval mode and fold its batch norms (:func:`fold_batch_norm`), as the bundles'
    inference, evaluation and MONAI Label app do after loading the weights. Returns the number folded."""
    network.eval()
    return fold_batch_norm(network)

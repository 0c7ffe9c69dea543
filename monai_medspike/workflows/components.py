"""The inferer and post-processing every bundle uses, chosen from the dataset's kind and the output channels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.inferers import Inferer, SimpleInferer, SliceInferer, SlidingWindowInferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    CastToTyped,
    Compose,
    CopyItemsd,
    Invertd,
    SaveImaged,
    SqueezeDimd,
)

from monai_medspike.data import array_size, get_reader

__all__ = ["get_infer_postprocessing", "get_inferer", "get_postprocessing", "written_mask"]


def get_inferer(dataset: str, image_size: Sequence[int], resize: bool = True, sw_batch_size: int = 1) -> Inferer:
    """The validation/inference inferer of ``dataset``.

    - a volume dataset (CT): ``SliceInferer`` over axial slices (the last axis) at ``image_size``;
    - 2D images resized to ``image_size`` for training (``resize=True``): ``SimpleInferer``;
    - 2D images kept at native resolution (``resize=False``): ``SlidingWindowInferer`` with ``image_size`` windows.
    """
    roi = array_size(image_size)  # (height, width) -> MONAI's array axes
    if get_reader(dataset).kind == "volume":
        return SliceInferer(roi_size=roi, spatial_dim=2, sw_batch_size=sw_batch_size)
    if resize:
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=roi, sw_batch_size=sw_batch_size, overlap=0.25)


def get_postprocessing(out_channels: int) -> Compose:
    """Post-processing of evaluator output: keeps ``logits`` and ``label_index`` (for the validation loss), turns
    ``pred`` into masks (sigmoid > 0.5 for one channel; softmax, argmax and one-hot for more) and ``label`` into
    one-hot for more than one channel, as MONAI's metrics expect."""
    multi = out_channels > 1
    onehot = out_channels if multi else None
    return Compose(
        [
            CopyItemsd(keys="pred", names="logits"),
            CopyItemsd(keys="label", names="label_index"),
            Activationsd(keys="pred", sigmoid=not multi, softmax=multi),
            AsDiscreted(keys="pred", threshold=None if multi else 0.5, argmax=multi, to_onehot=onehot),
            AsDiscreted(keys="label", to_onehot=onehot),
        ]
    )


def _mask_encoding(dataset: str, out_channels: int) -> tuple[str, int | None]:
    """The file suffix of an inference mask and the factor its class indices are scaled by (None: not scaled)."""
    volume = get_reader(dataset).kind == "volume"
    return (".nii.gz" if volume else ".png"), (255 if not volume and out_channels == 1 else None)


def written_mask(dataset: str, out_channels: int, label_names: Sequence[str]) -> dict[str, object]:
    """What inference writes per input (``metadata.json``'s ``inference_output`` says the same): the file name, its
    type and what each value means."""
    suffix, scale = _mask_encoding(dataset, out_channels)
    return {
        "file": f"<input name>_seg{suffix}",
        "dtype": "uint8",
        "values": {str(i * (scale or 1)): name for i, name in enumerate(label_names)},
    }


def get_infer_postprocessing(
    dataset: str, out_channels: int, preprocessing: Compose, output_dir: str | None = None
) -> Compose:
    """Post-processing of inference: ``pred`` to class indices (sigmoid > 0.5 for one channel, argmax of the softmax
    for more), back to the input's geometry (``Invertd`` of ``preprocessing``), then written as
    ``<output_dir>/<input name>_seg`` (NIfTI for volumes; PNG with 0/255 for binary 2D masks, class indices
    otherwise). Without ``output_dir`` nothing is written (MONAI Label writes the result itself). ``pred`` ends as a
    ``uint8`` label, without its channel for 2D images, the form MONAI Label's writer takes."""
    multi = out_channels > 1
    volume = get_reader(dataset).kind == "volume"
    suffix, scale = _mask_encoding(dataset, out_channels)
    transforms = [
        Activationsd(keys="pred", sigmoid=not multi, softmax=multi),
        AsDiscreted(keys="pred", threshold=None if multi else 0.5, argmax=multi),
        Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=True, to_tensor=True),
    ]
    if output_dir is not None:
        transforms.append(
            SaveImaged(
                keys="pred",
                output_dir=output_dir,
                output_postfix="seg",
                output_ext=suffix,
                output_dtype=np.uint8,
                scale=scale,
                resample=False,
                separate_folder=False,
                print_log=False,
            )
        )
    # what MONAI Label writes as it is: a 2D label without its channel (a PNG of the input's size), as uint8
    transforms += [] if volume else [SqueezeDimd(keys="pred", dim=0)]
    transforms.append(CastToTyped(keys="pred", dtype=np.uint8))
    return Compose(transforms)

"""The models a comparison trains, each as bundle overrides of the shared two-phase workflow.

A comparison job trains one or both phases of ``TwoPhaseTraining`` from a bundle's ``train.json``: the spiking
student (after its ANN teacher, with the distribution alignment), the student alone, the ANN teacher, ablations of
the network, or a MONAI network in the teacher's place (one phase, the same trainer, loss, budget and model
selection by the best validation Dice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODELS", "ModelSpec", "jobs_for", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """How to train a model of the comparison with the bundle's workflow.

    Attributes:
        name: the model's name in tables and file names.
        phase: ``"teacher"`` (one phase: the network in ``teacher_def``), ``"student"`` (the student alone,
            ``lambda_align`` 0) or ``"both"`` (the ANN teacher, then the student aligned to it).
        overrides: bundle config ids set for this model (``{"teacher_def": {...}}``, ``{"network_def#attention":
            "ssa"}``, ...); a callable value is called with the bundle's ``in_channels`` and ``out_channels``.
        rows: ``{phase: model name}`` of the networks the job scores (a ``both`` job scores its teacher too).
        description: one line for the report.
    """

    name: str
    phase: str
    overrides: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)
    description: str = ""


def _monai(target: str, **kwargs: Any) -> Any:
    def make(in_channels: int, out_channels: int) -> dict[str, Any]:
        return {"_target_": target, "spatial_dims": 2, "in_channels": in_channels, "out_channels": out_channels,
                **kwargs}  # fmt: skip

    return make


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("student", "both", rows={"student": "student"},
                  description="MedSpikeFormer, spiking, aligned to its ANN teacher (the bundle's recipe)"),
        ModelSpec("teacher", "teacher", overrides={"teacher_def": "$@network_def.ann_twin()"},
                  rows={"teacher": "teacher"}, description="the ANN twin of MedSpikeFormer (spiking=False)"),
        ModelSpec("student_no_align", "student", overrides={"lambda_align": 0.0},
                  rows={"student": "student_no_align"}, description="the spiking student without a teacher"),
        ModelSpec("student_from_teacher", "both", overrides={"init_from_teacher": True},
                  rows={"student": "student_from_teacher"},
                  description="the spiking student started from its trained ANN teacher's weights, then aligned to it"),
        ModelSpec("student_spike_driven", "both", overrides={"layout": "spike_driven"},
                  rows={"student": "student_spike_driven", "teacher": "teacher_spike_driven"},
                  description="MedSpikeFormer in the spike-driven layout (every convolution but the first reads "
                              "spikes), aligned to its ANN twin of the same layout (also scored)"),
        ModelSpec("student_ssa", "student", overrides={"lambda_align": 0.0, "network_def#attention": "ssa"},
                  rows={"student": "student_ssa"},
                  description="ablation: spiking self-attention over activated neurons only (no teacher)"),
        ModelSpec("student_aa", "student", overrides={"lambda_align": 0.0, "network_def#interactions": ["aa"]},
                  rows={"student": "student_aa"},
                  description="ablation: AND-SA with the activated-activated term only (no teacher)"),
        ModelSpec("basicunet", "teacher",
                  overrides={"teacher_def": _monai("monai.networks.nets.BasicUNet")},
                  rows={"teacher": "basicunet"}, description="MONAI BasicUNet (default features)"),
        ModelSpec("unet", "teacher",
                  overrides={"teacher_def": _monai("monai.networks.nets.UNet", channels=[16, 32, 64, 128, 256],
                                                   strides=[2, 2, 2, 2], num_res_units=2)},
                  rows={"teacher": "unet"}, description="MONAI UNet (16-256 channels, 2 residual units)"),
        ModelSpec("segresnet", "teacher",
                  overrides={"teacher_def": _monai("monai.networks.nets.SegResNet", init_filters=16)},
                  rows={"teacher": "segresnet"}, description="MONAI SegResNet (16 initial filters)"),
        ModelSpec("swinunetr", "teacher",
                  overrides={"teacher_def": _monai("monai.networks.nets.SwinUNETR", feature_size=24)},
                  rows={"teacher": "swinunetr"}, description="MONAI SwinUNETR 2D (feature size 24)"),
    )
}  # fmt: skip
"""The models ``--models`` names."""


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} in --models; choose from {', '.join(MODELS)}.")
    return MODELS[name]


def jobs_for(models: Sequence[str]) -> list[ModelSpec]:
    """The jobs that train ``models``: one per model, except that ``student`` and ``teacher`` together are one job
    (the student's teacher is the ``teacher`` row, trained once).

    Raises:
        ValueError: an unknown or repeated name, or no model.
    """
    names = [n.strip() for n in models if n.strip()]
    if not names:
        raise ValueError("--models names no model.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--models names {', '.join(repeated)} more than once.")
    specs = [model_spec(n) for n in names]
    if "student" in names and "teacher" in names:
        both = ModelSpec("student", "both", rows={"student": "student", "teacher": "teacher"},
                         description=MODELS["student"].description)  # fmt: skip
        specs = [both if s.name == "student" else s for s in specs if s.name != "teacher"]
    return specs

"""The settings of a run, declared once: default, allowed values, description, group and what a model carries.

Every setting a bundle user overrides (``--epochs 3``, ``--image_size "[32, 32]"``) is one :class:`Setting` in
:data:`SETTINGS`. From these declarations come:

- the bundles' configs (``python -m monai_medspike.bundle sync`` writes each setting with its default, or the
  bundle's dataset value, and the groups that ``TwoPhaseTraining`` takes);
- the check of a run's values (:func:`check_settings`, and the command-line check of every bundle run);
- the table of settings in ``docs/bundles.md`` (:func:`settings_table`; a test holds the page to it);
- the record every checkpoint carries (:mod:`monai_medspike.checkpoints`): a setting marked ``carried`` is read
  back from the checkpoint by evaluation, inference, MONAI Label and the energy command, and may not change on
  resume; one marked ``identity`` changes what the network is, so a value that contradicts the checkpoint is
  refused.

A new setting is one entry here, then ``python -m monai_medspike.bundle sync``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_medspike.errors import UserError
from monai_medspike.networks.nets.medspikeformer import LAYOUTS, PRECISIONS
from monai_medspike.utils import check_flag

__all__ = [
    "CONFIGS",
    "GROUPS",
    "SETTINGS",
    "Setting",
    "SettingsError",
    "check_settings",
    "complete_group",
    "group_settings",
    "is_expression",
    "settings_table",
]

GROUPS = ("network", "data", "training", "run")
"""The groups of settings: what the network is, what it reads, how it trains, where and how the run happens."""

CONFIGS = ("train", "evaluate", "inference")
"""The configs a setting can appear in: ``train.json`` (and its overlays), ``evaluate.json``, ``inference.json``."""


class SettingsError(UserError, ValueError):
    """A setting is unknown or has a value the bundle cannot use."""


def is_expression(value: Any) -> bool:
    """Whether ``value`` is a config expression or reference (``$...``, ``@...``, ``%...``), left to the config."""
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


# ----------------------------------------------------------------------------------------------- allowed values
class Rule:
    """The allowed values of a setting: calling it returns what is wrong with a value, or None; ``text`` says what
    is allowed (the settings table shows it)."""

    text = "any value"

    def __call__(self, value: Any) -> str | None:
        return None


class Whole(Rule):
    def __init__(self, minimum: int, optional: bool = False) -> None:
        self.minimum, self.optional = minimum, optional
        self.text = f"whole number >= {minimum}" + (", or null" if optional else "")

    def __call__(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < self.minimum:
            return f"must be a whole number >= {self.minimum}" + (" (or null)" if self.optional else "")
        return None


class Number(Rule):
    def __init__(self, minimum: float, strict: bool = False) -> None:
        self.minimum, self.strict = minimum, strict
        self.text = f"number {'>' if strict else '>='} {minimum:g}"

    def __call__(self, value: Any) -> str | None:
        bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value  # NaN
        if bad or (value <= self.minimum if self.strict else value < self.minimum):
            return f"must be a {self.text}"
        return None


class Choice(Rule):
    def __init__(self, *choices: Any) -> None:
        self.choices = choices
        self.text = ", ".join("null" if c is None else f"`{c}`" for c in choices)

    def __call__(self, value: Any) -> str | None:
        if value in self.choices and not isinstance(value, bool):
            return None
        return f"must be one of {', '.join('None' if c is None else str(c) for c in self.choices)}"


class Device(Rule):
    text = "`cpu`, `cuda` or `cuda:N` (a GPU that is visible)"

    def __call__(self, value: Any) -> str | None:
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, TypeError):
            return "must be a torch device: cpu, cuda or cuda:N"
        if device.type == "cuda":
            if not torch.cuda.is_available():
                return (
                    "names a CUDA GPU, but none is visible here (torch.cuda.is_available() is False); leave --device "
                    "out (the bundle takes a GPU when there is one) or give --device cpu"
                )
            if device.index is not None and device.index >= torch.cuda.device_count():
                return f"names GPU {device.index}, but {torch.cuda.device_count()} are visible (cuda:0 ..)"
        return None


class Flag(Rule):
    text = "true or false"

    def __call__(self, value: Any) -> str | None:
        try:
            check_flag(value, "flag")
        except ValueError:
            return "must be true or false"
        return None


class FlagOrAuto(Flag):
    text = "true, false or `auto`"

    def __call__(self, value: Any) -> str | None:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return None
        return None if super().__call__(value) is None else "must be true, false or auto"


class ImageSize(Rule):
    text = "[H, W], multiples of 16"

    def __call__(self, value: Any) -> str | None:
        sizes = value if isinstance(value, (list, tuple)) else None
        if (
            sizes is None
            or len(sizes) != 2
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 16 or s % 16 for s in sizes)
        ):
            return "must be two sizes, each a multiple of 16 (the network halves the size four times), e.g. [64, 64]"
        return None


class Widths(Rule):
    text = "list of channel widths"

    def __call__(self, value: Any) -> str | None:
        if (
            not isinstance(value, (list, tuple))
            or not value
            or any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in value)
        ):
            return "must be a non-empty list of channel widths, e.g. [32, 64, 128, 256]"
        return None


class Stages(Rule):
    text = "list of encoder stages 0..3"

    def __call__(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)) or any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 3 for s in value
        ):
            return "must be a list of encoder stages 0..3, e.g. [0, 1, 2, 3]"
        return None


class Names(Rule):
    text = "list of class names, background first"

    def __call__(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)) or len(value) < 2 or not all(isinstance(n, str) and n for n in value):
            return "must be a list of at least two class names, background first, e.g. ['background', 'polyp']"
        return None


class Text(Rule):
    def __init__(self, optional: bool = True) -> None:
        self.optional = optional
        self.text = "text" + (", or null" if optional else "")

    def __call__(self, value: Any) -> str | None:
        if (value is None and self.optional) or (isinstance(value, str) and value):
            return None
        return "must be a non-empty text" + (" (or null)" if self.optional else "")


class Options(Rule):
    text = "dictionary"

    def __call__(self, value: Any) -> str | None:
        return None if isinstance(value, Mapping) else "must be a dictionary, e.g. \"{'key': 'value'}\""


class Existing(Rule):
    """An existing file, folder or either (``kind``); null is allowed."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.text = {"file": "an existing file", "folder": "an existing folder", "any": "an existing file or folder"}[
            kind
        ] + ", or null"

    def __call__(self, value: Any) -> str | None:
        if value is None:
            return None
        path = Path(str(value))
        if self.kind == "file" and not path.is_file():
            return "must be an existing file" + (" (that is a folder)" if path.is_dir() else "")
        if self.kind == "folder" and not path.is_dir():
            return "must be an existing folder" + (" (that is a file)" if path.is_file() else "")
        if self.kind == "any" and not path.exists():
            return "must be an existing file or folder"
        return None


class Resumable(Rule):
    text = "a run folder or its last.pt, or null"

    def __call__(self, value: Any) -> str | None:
        from monai_medspike.runs import resolve_resume

        try:
            resolve_resume(value)
        except FileNotFoundError as e:
            return str(e).split(": ", 1)[-1].rstrip(".")
        return None


# ----------------------------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class Setting:
    """One setting of a run.

    Attributes:
        name: its id in the bundle configs (``--name value`` on the command line).
        group: ``network``, ``data``, ``training`` or ``run`` (:data:`GROUPS`).
        default: its value in the configs (a JSON value, or a config expression ``"$..."``), unless the bundle's
            dataset record gives one (``per_dataset``).
        description: one line for the settings table.
        rule: its allowed values.
        configs: the configs that hold it at the top level (:data:`CONFIGS`; overlays of ``train.json`` inherit).
        carried: the checkpoint keeps it; evaluation, inference, MONAI Label, ``energy`` and a resumed training
            take the checkpoint's value unless it is given (a given value that differs is used, with a note).
        identity: it changes what the network is; a given value that contradicts the checkpoint is refused.
        fixed: a resumed run may not change it (every identity setting is fixed too).
        per_dataset: each bundle's dataset record gives its value (``bundles/<name>/dataset.json``, or the reader).
        optional: a per-dataset setting that only the bundles whose record sets it hold (``slices_per_volume``: the
            volume datasets').
        inference_default: its default in ``inference.json`` where that differs from ``default``.
        published: its value in the published recipe (``configs/recipe_published.json``), if it has one there.
    """

    name: str
    group: str
    default: Any
    description: str
    rule: Rule = field(default_factory=Rule)
    configs: tuple[str, ...] = ("train", "inference")
    carried: bool = False
    identity: bool = False
    fixed: bool = False
    per_dataset: bool = False
    optional: bool = False
    inference_default: Any = None
    published: Any = None

    @property
    def kept_on_resume(self) -> bool:
        """Whether a resumed run must keep the checkpoint's value."""
        return self.identity or self.fixed

    def check(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None: nothing; config expressions are not checked)."""
        return None if is_expression(value) else self.rule(value)

    def normalise(self, value: Any) -> Any:
        """``value`` as the setting holds it: a yes/no setting's word from a command line (``"false"``) as a bool."""
        return check_flag(value, self.name) if isinstance(self.rule, Flag) and not is_expression(value) else value

    def default_in(self, config: str) -> Any:
        """Its default in ``config`` (``train``, ``evaluate`` or ``inference``)."""
        return self.inference_default if config == "inference" and self.inference_default is not None else self.default


_TRAIN = ("train",)
_ALL = ("train", "inference")
_DEVICE = "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')"

_DECLARED = (
    # --- network: what the network is (identity) and how it runs
    Setting("in_channels", "network", 3, "image channels the network takes (1: grey, 3: RGB)", Whole(1),
            carried=True, identity=True, per_dataset=True),
    Setting("out_channels", "network", "$1 if len(@label_names) == 2 else len(@label_names)",
            "output channels: 1 (sigmoid) for two classes, one per class (softmax) for more", Whole(1),
            carried=True, identity=True),
    Setting("spiking", "network", True, "the spiking student (false: its ANN twin)", Flag(), identity=True),
    Setting("time_steps", "network", 4, "time steps T of the spiking network", Whole(1), carried=True, identity=True,
            published=4),
    Setting("embed_dims", "network", [32, 64, 128, 256], "channel width of each encoder stage", Widths(),
            carried=True, identity=True),
    Setting("num_heads", "network", 4, "attention heads per stage", Whole(1), carried=True, identity=True),
    Setting("layout", "network", "published", "published, or spike_driven: every convolution but the encoding "
            "reads spikes (docs/network.md)", Choice(*LAYOUTS), carried=True, identity=True),
    Setting("use_checkpoint", "network", False, "activation checkpointing: about 0.3-0.45 x the training memory "
            "for 1.1 x the time, the same results (docs/performance.md)", Flag()),
    Setting("channels_last", "network", "auto", "channels-last weights and activations: the same network up to "
            "float rounding, faster on a CPU; auto: on a CPU (monai_medspike.speed, docs/performance.md)",
            FlagOrAuto()),
    Setting("precision", "network", "auto", "bfloat16: mixed precision, neurons integrate in float32; auto: "
            "bfloat16 on a CUDA GPU and on a CPU where a probe measures it faster (monai_medspike.speed, "
            "docs/performance.md)", Choice(*PRECISIONS, "auto")),
    Setting("fold_batch_norm", "network", True, "inference: fold the batch norms that follow convolutions into "
            "them (the same masks up to float rounding)", Flag(), configs=("inference",)),
    # --- data: what the network reads
    Setting("dataset", "data", None, "the reader of the release (monai_medspike.data.READERS; the covid bundle: "
            "covid_ct volumes or covid 2D slices)", Text(optional=False), carried=True, identity=True,
            per_dataset=True),
    Setting("dataset_dir", "data", None, "a release folder (its datalist is prepared once, under "
            "<output_root>/data/); null: the built-in demo data", Existing("folder"), carried=True),
    Setting("datalist", "data", None, "a datalist written by python -m monai_medspike.data prepare",
            Existing("file"), carried=True),
    Setting("classes", "data", "binary", "binary, or multiclass (covid: 3 classes)", Choice("binary", "multiclass"),
            carried=True, identity=True),
    Setting("label_names", "data", ["background", "foreground"], "class names, background first",
            Names(), carried=True, identity=True, per_dataset=True),
    Setting("image_size", "data", [64, 64], "training size [H, W]; evaluation and inference take the checkpoint's "
            "unless given", ImageSize(), carried=True, fixed=True, published=[256, 256]),
    Setting("resize", "data", True, "resize images to image_size (false: native resolution, random crops, sliding "
            "window)", Flag(), carried=True, fixed=True, per_dataset=True),
    Setting("slices_per_volume", "data", 4, "CT slices drawn per volume per visit (volume datasets)", Whole(1),
            configs=_TRAIN, carried=True, per_dataset=True, optional=True),
    Setting("demo_count", "data", 24, "images (or volumes) of the built-in demo data", Whole(1), carried=True,
            per_dataset=True),
    Setting("data_options", "data", {}, "reader options, e.g. \"{'mask_dir': 'other_masks'}\"", Options(),
            carried=True, fixed=True, per_dataset=True),
    Setting("transform_options", "data", {}, "options of the training transforms", Options(), configs=_TRAIN,
            carried=True, per_dataset=True),
    Setting("cache", "data", None, "memory or disk: keep decoded images between epochs (docs/bundles.md#caching)",
            Choice(None, "memory", "disk"), configs=_TRAIN),
    Setting("num_workers", "data", 0, "data loader worker processes", Whole(0)),
    # --- training: the budget and the recipe of each phase
    Setting("phase", "training", "both", "teacher, student or both (the ANN teacher, then the aligned student)",
            Choice("teacher", "student", "both"), configs=_TRAIN, carried=True),
    Setting("epochs", "training", 10, "epochs of each phase", Whole(1), configs=_TRAIN, carried=True, published=200),
    Setting("val_interval", "training", 1, "epochs between validations", Whole(1), configs=_TRAIN, carried=True),
    Setting("batch_size", "training", 4, "training batch size", Whole(1), configs=_TRAIN, carried=True,
            per_dataset=True, published=8),
    Setting("learning_rate", "training", 0.003, "Adam's learning rate (may change on resume)", Number(0.0, True),
            configs=_TRAIN, carried=True, published=0.0001),
    Setting("lr_patience", "training", 30, "validations without a lower validation loss before the learning rate "
            "drops (ReduceLROnPlateau)", Whole(0), configs=_TRAIN, carried=True, published=30),
    Setting("early_stop_patience", "training", 100, "validations without a better Dice before a phase stops",
            Whole(1), configs=_TRAIN, carried=True, published=200),
    Setting("early_stop_min_delta", "training", 0.0, "the Dice gain that counts as better", Number(0.0),
            configs=_TRAIN, carried=True),
    Setting("lambda_align", "training", 1.0, "weight of the distribution alignment to the teacher (0: the "
            "student trains alone, no teacher needed)", Number(0.0), configs=_TRAIN, carried=True),
    Setting("lambda_side", "training", 1.0, "weight of the deep supervision of the teacher's side heads, the masks "
            "the student is aligned to (0: untrained side heads, as published)", Number(0.0), configs=_TRAIN,
            carried=True, published=0.0),
    Setting("align_stages", "training", [0, 1, 2, 3], "encoder stages whose side outputs are aligned", Stages(),
            configs=_TRAIN, carried=True),
    Setting("init_from_teacher", "training", False, "the student starts from its trained teacher's weights",
            Flag(), configs=_TRAIN, carried=True),
    Setting("teacher_checkpoint", "training", None, "the teacher for --phase student (default: this run's, else "
            "the newest teacher-*/model.pt)", Existing("file"), configs=_TRAIN, carried=True),
    Setting("bn_recalibration_batches", "training", None, "training batches for batch-norm re-estimation before "
            "each validation (null: all; 0: off)", Whole(0, optional=True), configs=_TRAIN, carried=True),
    # --- run: where and how the run happens
    Setting("bundle_name", "run", None, "the bundle's name: bundle_root finds the bundle's folder by it, and every "
            "checkpoint records it", Text(optional=False), per_dataset=True),
    Setting("seed", "run", 0, "seed of the split and of the training", Whole(0), carried=True, fixed=True),
    Setting("device", "run", _DEVICE, "where to run (CUDA when present)", Device()),
    Setting("output_root", "run", "$@bundle_root + '/outputs'", "the folder of the runs"),
    Setting("ckpt_dir", "run", "$@bundle_root + '/models'", "where a finished training publishes its best student "
            "as model.pt (null: nowhere)"),
    Setting("run_id", "run", "$monai_medspike.distributed.run_stamp()", "names the run folders "
            "(<phase>-<run_id>), the same for both phases and every rank"),
    Setting("run_name", "run", None, "a run folder's name instead of <phase>-<time>", Text(), configs=_TRAIN),
    Setting("overwrite", "run", False, "allow writing into a non-empty run folder", Flag()),
    Setting("resume_from", "run", None, "a run folder or its last.pt to continue", Resumable(), configs=_TRAIN),
    Setting("keep_freed_memory", "run", True, "glibc keeps freed memory for reuse (faster CPU steps)", Flag()),
    Setting("sw_batch_size", "run",
            "$8 if torch.cuda.is_available() or @image_size[0] * @image_size[1] <= 128 * 128 else 1",
            "windows or slices per inferer batch", Whole(1)),
    Setting("distributed", "run", False, "DistributedDataParallel over torchrun's processes (set by "
            "multi_gpu_train.json)", Flag(), configs=_TRAIN),
    Setting("ddp_kwargs", "run", {}, "DistributedDataParallel arguments", Options(), configs=_TRAIN),
    Setting("ckpt_path", "run", None, "evaluation and inference: the model.pt to use (default: the newest trained "
            "student)", Existing("file"), configs=("evaluate", "inference")),
    Setting("eval_split", "run", "test", "evaluation: the datalist list scored", Text(optional=False),
            configs=("evaluate",)),
    Setting("empty_score", "run", 1.0, "evaluation: the score of an image whose mask and prediction are both empty",
            Number(0.0), configs=("evaluate",)),
    Setting("eval_name", "run", None, "evaluation: the run folder's name", Text(), configs=("evaluate",)),
    Setting("input", "run", None, "inference: an image, volume or folder (default: the test split)",
            Existing("any"), configs=("inference",)),
    Setting("infer_name", "run", None, "inference: the run folder's name", Text(), configs=("inference",)),
)  # fmt: skip

SETTINGS: dict[str, Setting] = {s.name: s for s in _DECLARED}
"""Every setting, by name, in the order the configs list them."""


def group_settings(group: str, config: str | None = None) -> list[Setting]:
    """The settings of ``group`` (in declaration order), only those held by ``config`` if given."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}.")
    return [s for s in SETTINGS.values() if s.group == group and (config is None or config in s.configs)]


def check_settings(values: Mapping[str, Any], keys: Iterable[str] | None = None) -> None:
    """Check the values of the declared settings in ``values`` (only ``keys`` if given); expressions are skipped.

    Raises:
        SettingsError: one line per bad setting, naming the key, the value and what is accepted.
    """
    problems = []
    for key in keys if keys is not None else values:
        setting = SETTINGS.get(key)
        if setting is None or key not in values:
            continue
        problem = setting.check(values[key])
        if problem:
            problems.append(f"--{key} {values[key]!r}: {problem}.")
    if problems:
        raise SettingsError("\n".join(problems))


def complete_group(
    group: str, values: Mapping[str, Any] | None, config: str | None = None, required: Sequence[str] = ()
) -> dict[str, Any]:
    """The settings of ``group`` (those ``config`` holds, if given) for Python use: ``values`` checked, flags read
    as booleans, completed with the declared defaults.

    A default that is a config expression (``"$..."``) has no value outside a config: such a setting is left out
    unless given (or named in ``required``, then an error).

    Raises:
        SettingsError: a key that is no setting of ``group`` (with the group that has it), a bad value, or a
            missing required setting.
    """
    values = dict(values or {})
    declared = {s.name: s for s in group_settings(group, config)}
    unknown = [k for k in values if k not in declared]
    if unknown:
        where = {k: SETTINGS[k].group for k in unknown if k in SETTINGS}
        hint = "; ".join(f"{k} belongs to the {g} group" for k, g in where.items())
        raise SettingsError(
            f"the {group} settings have no {', '.join(map(repr, unknown))}{f' ({hint})' if hint else ''}; "
            f"they are: {', '.join(declared)}."
        )
    check_settings(values)
    out = {}
    for name, setting in declared.items():
        if name in values:
            value = values[name]
            out[name] = (
                check_flag(value, name) if isinstance(setting.rule, Flag) and not is_expression(value) else value
            )
        elif not is_expression(setting.default):
            out[name] = setting.default
    missing = [k for k in required if k not in out]
    if missing:
        raise SettingsError(f"the {group} settings need {', '.join(missing)}.")
    return out


def settings_table() -> str:
    """The Markdown table of every setting (docs/bundles.md holds it): id, group, what, allowed values, default,
    and what a checkpoint does with it."""

    def shown(value: Any) -> str:
        if is_expression(value):
            return "computed"
        return "null" if value is None else f"`{value}`".replace("True", "true").replace("False", "false")

    lines = [
        "| id | group | what | allowed | default | checkpoint |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(SETTINGS.values(), key=lambda s: GROUPS.index(s.group)):
        default = "the bundle's" if s.per_dataset else shown(s.default)
        if s.inference_default is not None:
            default += f"; inference: {shown(s.inference_default)}"
        kept = "refused if it differs" if s.identity and not s.carried else ""
        if s.carried:
            kept = "read back; " + ("refused if it differs" if s.identity else "a given value is used, noted")
            kept += "; kept on resume" if s.fixed and not s.identity else ""
        configs = "" if s.configs == _ALL else f" ({', '.join(s.configs)} only)"
        lines.append(f"| `{s.name}` | {s.group} | {s.description}{configs} | {s.rule.text} | {default} | {kept} |")
    return "\n".join(lines) + "\n"

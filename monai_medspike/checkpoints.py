"""What a saved model is: every checkpoint carries a record of its network and its run's settings.

A ``model.pt`` (and the ``last.pt`` of a run) holds ``{"model": state_dict, "record": record}``. The record says

- which bundle trained it and in which phase (``teacher`` or ``student``);
- what the network is: its class and, for MedSpikeFormer, every constructor argument, and its kind (spiking
  student, ANN twin or a MONAI network);
- the run's settings by group (:mod:`monai_medspike.settings`): dataset, classes and label names, the training
  image size, the budget, ...;
- the versions of monai_medspike, MONAI and PyTorch that wrote it.

:class:`TrainedModel` reads it back, so that evaluation, inference, MONAI Label, ``energy`` and export build the
network and the transforms from the checkpoint instead of asking the user again, and refuses a value that
contradicts it. MONAI's tools read the weights under ``"model"`` (``ckpt_export --key_in_ckpt model``, a
``CheckpointLoader`` with ``{"model": network}``, MONAI Label). A checkpoint written before records existed (a bare
state dict) still loads, with one warning.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from monai_medspike.errors import UserError
from monai_medspike.networks.nets.medspikeformer import MODEL_FILE_READERS
from monai_medspike.runs import CHECKPOINT
from monai_medspike.settings import SETTINGS

__all__ = [
    "MODEL_KEY",
    "RECORD_KEY",
    "CheckpointError",
    "TrainedModel",
    "check_resume",
    "describe_network",
    "load_model",
    "load_weights",
    "make_record",
    "model_file",
    "read_checkpoint",
    "save_atomic",
    "unwrap_model_file",
]

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
RECORD_KEY = "record"
FORMAT = 1
#: MedSpikeFormer arguments that change how it runs, not what it computes (free to differ from the checkpoint's)
EXECUTION_ARGUMENTS = ("use_checkpoint", "channels_last", "precision", "attention_method")
_MEDSPIKEFORMER = "monai_medspike.networks.nets.MedSpikeFormer"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used as asked: unreadable, of another model or bundle, or contradicting the
    settings of the run (the message names the file, both values and what to do)."""


def save_atomic(obj: Any, path: str | Path) -> str:
    """``torch.save(obj, path)`` so that a kill at any moment leaves either the previous file or the new one.

    The object is written to a temporary file in the same folder, flushed to disk, then renamed over ``path``
    (a rename within one file system is atomic). The temporary file is removed if writing fails; temporary files of
    an earlier writer that was killed are removed by the next write (one process writes a given file).

    Returns:
        ``path`` as a string.

    Raises:
        UserError: the file could not be written (a full disk, no permission), saying that the file already there
            (if any) is the previous, complete one, and for a run's resumable checkpoint how to resume.
    """
    path = Path(path)
    try:
        _save_atomic(obj, path)
    except OSError as e:
        if path.is_file():
            kept = f"the {path.name} there is the previous one, complete"
            if path.name == CHECKPOINT:
                kept += f": free space, then resume with --resume_from {path.parent}"
        else:
            kept = "no earlier version of it exists"
        raise UserError(f"{path}: not written ({e.strerror or e}); {kept}.") from e
    return str(path)


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write
        with contextlib.suppress(OSError):
            stale.unlink()
    buffer = io.BytesIO()  # serialised first: a failing write then raises the OSError itself, not torch's wrapper
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


# ----------------------------------------------------------------------------------------------- writing
def _plain(value: Any) -> Any:
    """``value`` as JSON data (tuples as lists, paths and devices as text), as the record keeps it."""
    return json.loads(json.dumps(value, default=str))


def describe_network(network: torch.nn.Module) -> dict[str, Any]:
    """What ``network`` is: ``{"_target_": <class path>, **its constructor arguments}`` for MedSpikeFormer (the
    ANN twin included), ``{"_target_": <class path>}`` for any other network."""
    cls = type(network)
    described: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    if hasattr(network, "arguments") and isinstance(network.arguments, Mapping):
        described = {"_target_": _MEDSPIKEFORMER, **network.arguments}
    return _plain(described)


def _kind(network: Mapping[str, Any]) -> str:
    if network.get("_target_") != _MEDSPIKEFORMER:
        return f"MONAI network ({str(network.get('_target_')).rsplit('.', 1)[-1]})"
    return "spiking student" if network.get("spiking", True) else "ANN twin"


def make_record(
    network: torch.nn.Module, phase: str, bundle: str | None, settings: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The record of a network trained in ``phase`` by ``bundle`` with ``settings`` (``{group: {name: value}}``).

    The network group is what the network is (its arguments), so it is taken from ``network`` itself where that is
    a MedSpikeFormer."""
    import monai

    import monai_medspike

    described = describe_network(network)
    groups = {group: dict(values) for group, values in settings.items()}
    if described["_target_"] == _MEDSPIKEFORMER:
        groups["network"] = {
            **groups.get("network", {}),
            **{k: v for k, v in described.items() if k in SETTINGS and SETTINGS[k].group == "network"},
        }
    return _plain(
        {
            "format": FORMAT,
            "bundle": bundle,
            "phase": phase,
            "kind": _kind(described),
            "network": described,
            "settings": groups,
            "versions": {
                "monai_medspike": monai_medspike.__version__,
                "monai": monai.__version__,
                "torch": torch.__version__,
            },  # fmt: skip
        }
    )


def model_file(network: torch.nn.Module, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The content of a ``model.pt``: the weights under ``"model"`` and the record under ``"record"``."""
    content: dict[str, Any] = {MODEL_KEY: network.state_dict()}
    if record is not None:
        content[RECORD_KEY] = dict(record)
    return content


# ----------------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, Any]:
    """The weights, the record (None for a checkpoint written before records) and the whole content of ``path``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, damaged or not a PyTorch checkpoint of a network, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # EOFError, RuntimeError (PytorchStreamReader), UnpicklingError, ...
        size = path.stat().st_size
        cause = (str(error).strip().splitlines() or ["no message"])[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({size} bytes; {type(error).__name__}: {cause}); it is damaged or "
            "not a PyTorch checkpoint. Use another model.pt, or retrain."
        ) from None
    if isinstance(content, Mapping) and isinstance(content.get(MODEL_KEY), Mapping):
        state, record = dict(content[MODEL_KEY]), content.get(RECORD_KEY)
    elif isinstance(content, Mapping) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        state, record = dict(content), None
    else:
        raise CheckpointError(f"checkpoint {path} holds no network weights (neither a state dict nor a 'model' entry).")
    return state, (dict(record) if isinstance(record, Mapping) else None), content


def unwrap_model_file(
    network: torch.nn.Module, state: dict[str, Any], name: str = "(given to load_state_dict)"
) -> None:
    """Turn ``state``, a whole model file (``{"model": weights, "record": ...}``) given to ``network.load_state_dict``
    as if it were the weights, into those weights, in place, after checking the record against ``network`` (the
    ANN teacher is refused for the student and the reverse, as other arguments are). A plain state dict is left as
    it is. :class:`~monai_medspike.networks.nets.MedSpikeFormer` calls it before loading, so MONAI's tools that take
    a checkpoint for a bare state dict (``ckpt_export`` / ``onnx_export`` without ``--key_in_ckpt``,
    ``monai.bundle.load``, ``CheckpointLoader`` with one object) read this package's ``model.pt`` as they read a
    model-zoo one.

    Raises:
        CheckpointError: the record describes another kind of network or other arguments.
    """
    if set(state) != {MODEL_KEY, RECORD_KEY} or not isinstance(state[MODEL_KEY], Mapping):
        return
    weights, record = state.pop(MODEL_KEY), state.pop(RECORD_KEY)
    if isinstance(record, Mapping):
        _check_kind(record.get("network", {}), describe_network(network), Path(name), twin=False)
    state.update(weights)


MODEL_FILE_READERS.append(unwrap_model_file)


def _few(keys: list[str], count: int = 8) -> str:
    return str(keys) if len(keys) <= count else f"{keys[:count]} and {len(keys) - count} more"


def _check_kind(recorded: Mapping[str, Any], network: Mapping[str, Any], path: Path, twin: bool) -> None:
    """Refuse a checkpoint of another kind of network than ``network``, in one line naming the file to use."""
    if recorded.get("_target_") != network.get("_target_"):
        raise CheckpointError(
            f"checkpoint {path} holds a {_kind(recorded)} but the network is a {_kind(network)}; use a checkpoint "
            f"of that network."
        )
    if recorded.get("_target_") != _MEDSPIKEFORMER:
        return
    spiking, wanted = bool(recorded.get("spiking", True)), bool(network.get("spiking", True))
    if spiking != wanted and not twin:
        if wanted:
            raise CheckpointError(
                f"checkpoint {path} holds the ANN teacher (spiking false), not the spiking student: use the "
                "student's model.pt (student-*/model.pt, or the bundle's models/model.pt)."
            )
        raise CheckpointError(
            f"checkpoint {path} holds the spiking student, not its ANN teacher: use the teacher's model.pt "
            "(teacher-*/model.pt)."
        )
    ignored = {"spiking", *EXECUTION_ARGUMENTS}
    differ = [k for k in sorted(set(recorded) | set(network)) if k not in ignored and recorded.get(k) != network.get(k)]
    if differ:
        name = differ[0]
        raise CheckpointError(
            f"checkpoint {path} was trained with {name}={recorded.get(name)!r} but the network has "
            f"{name}={network.get(name)!r}; build the network from the checkpoint (leave --{name} out)."
        )


def load_weights(network: torch.nn.Module, path: str | Path, twin: bool = False) -> torch.nn.Module:
    """Load a checkpoint into ``network`` strictly and return the network.

    ``path`` may hold ``{"model": state_dict, "record": ...}`` (this package's checkpoints, MONAI's
    ``CheckpointSaver``) or a bare state dict (written before records: loaded with one warning). With a record, a
    checkpoint of another kind of network is refused in one line naming the file to use (the ANN teacher's for the
    spiking student and the reverse, unless ``twin``: the student starting from its teacher's weights), as is one
    whose recorded arguments contradict the network's.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable, another kind of network, or other arguments.
        KeyError: missing or unexpected keys, all listed, or a shape mismatch.
    """
    path = Path(path)
    state, record, _ = read_checkpoint(path)
    if record is not None:
        _check_kind(record.get("network", {}), describe_network(network), path, twin)
    else:
        warn_unrecorded(path)
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        layouts = ["spike_driven" if any(".term_norms." in k for k in keys) else "published" for keys in (state, own)]
        hint = (
            f" The checkpoint is of the {layouts[0]} layout and the network of the {layouts[1]} one: build the network "
            f"with the layout it was trained with (bundle: --layout {layouts[0]}; Python: MedSpikeFormer(..., "
            f"layout='{layouts[0]}'))."
            if layouts[0] != layouts[1]
            else ""
        )
        raise KeyError(
            f"checkpoint {path} does not match the network:{hint} Missing keys {_few(missing)}, unexpected keys "
            f"{_few(unexpected)}, shape mismatches {_few(shapes)}. Was it written for another configuration (layout, "
            "spiking, embed_dims, channels)?"
        )
    network.load_state_dict(state)
    logger.info("loaded %s", path)
    return network


def load_model(path: str | Path, **options: Any) -> torch.nn.Module:
    """The network a checkpoint holds, built from its record, with its weights, in eval mode: the Python way to use a
    trained bundle model without its configs (MONAI's ``monai.bundle.load`` builds the network of a config, not of
    the checkpoint). ``options``: ``use_checkpoint``, ``channels_last``, ``precision``.

    Raises:
        CheckpointError: unreadable, without a record (build the network and use :func:`load_weights`), or holding a
            network other than MedSpikeFormer.
    """
    model = TrainedModel(path)
    if model.record is None:
        raise CheckpointError(
            f"checkpoint {path} carries no record of its network; build the network it was trained as and load it "
            "with monai_medspike.checkpoints.load_weights."
        )
    return load_weights(model.network({}, **options), path).eval()


_warned: set[str] = set()


def warn_unrecorded(path: str | Path) -> None:
    """One warning line, once per file: ``path`` was written before checkpoints carried their settings."""
    key = str(Path(path).resolve())
    if key not in _warned:
        _warned.add(key)
        logger.warning(
            "%s carries no settings record (written before checkpoints kept one); it is used with this run's "
            "settings: give the ones it was trained with (e.g. --image_size) if they differ.",
            path,
        )


def check_resume(recorded: Mapping[str, Any], current: Mapping[str, Any], path: str | Path) -> None:
    """Refuse to resume the run whose checkpoint ``path`` holds ``recorded`` with a run whose record would be
    ``current``: another bundle, another network, or another value of a setting a resumed run keeps (every carried
    or identity setting: dataset, classes, image size, channels, time steps, widths, layout, ...). The learning rate,
    the epochs and the rest of the budget may change.

    Raises:
        CheckpointError: one line per difference, naming both values.
    """
    if recorded.get("bundle") not in (None, current.get("bundle")):
        raise CheckpointError(
            f"--resume_from {path} is a run of the {recorded['bundle']} bundle, not of {current.get('bundle')}; "
            f"resume it with the {recorded['bundle']} bundle's train.json."
        )
    problems = []
    old, new = (
        {k: v for group in r.get("settings", {}).values() for k, v in group.items()} for r in (recorded, current)
    )
    for name, setting in SETTINGS.items():
        if name not in old or name not in new or old[name] == new[name]:
            continue
        if setting.kept_on_resume:
            problems.append(
                f"--resume_from {path} was trained with {name} {old[name]!r}; this run has {new[name]!r}, which a "
                f"resumed run cannot change: leave --{name} out, or start a new run."
            )
        elif setting.carried:
            logger.warning("note: --%s %r is used as given; %s was trained with %r", name, new[name], path, old[name])
    networks = recorded.get("network", {}), current.get("network", {})
    ignored = set(EXECUTION_ARGUMENTS) | {k for k in SETTINGS if k in old}
    for key in sorted((set(networks[0]) | set(networks[1])) - ignored):
        if networks[0].get(key) != networks[1].get(key):
            problems.append(
                f"--resume_from {path} holds a network with {key} {networks[0].get(key)!r}; this run builds it with "
                f"{networks[1].get(key)!r}: resume with the network it was trained with."
            )
    if problems:
        raise CheckpointError("\n".join(problems))


def _exported_checkpoint() -> str | None:
    """The ``--ckpt_file`` of a ``python -m monai.bundle ckpt_export|onnx_export|trt_export`` command line: the export
    builds the network of the checkpoint it exports (MONAI gives that file no config id)."""
    from monai_medspike.utils import bundle_command_line

    command, _, arguments = bundle_command_line()
    if command == "onnx_export":
        _check_onnx_packages(arguments.get("converter_kwargs"))
    value = arguments.get("ckpt_file") if command in ("ckpt_export", "onnx_export", "trt_export") else None
    return str(value) if value else None


def _check_onnx_packages(converter_kwargs: Any) -> None:
    """Refuse ``onnx_export`` in one line, before the network is built, where a package it needs is missing:
    ``onnx``, and ``onnxscript`` for torch's default (dynamo) exporter.

    Raises:
        UserError: naming the missing packages and the install command.
    """
    import importlib.util

    needed = ["onnx"]
    if not (isinstance(converter_kwargs, Mapping) and converter_kwargs.get("dynamo") is False):
        needed.append("onnxscript")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"onnx_export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            'pip install -e ".[onnx]" (with -c constraints/cpu.txt on a CPU machine), or pip install onnx '
            "onnxruntime onnxscript."
        )


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    """Under ``python -m monai.bundle``, a checkpoint problem raised inside (from a config expression, which MONAI
    would wrap in a long traceback) ends the run with one line and exit status 2."""
    from monai_medspike.utils import stop_command_line

    try:
        yield
    except (CheckpointError, FileNotFoundError) as error:
        stop_command_line(error)
        raise


class TrainedModel:
    """A trained model file and what its record says it is; None as ``path`` stands for "no trained model yet".

    The bundles' evaluation and inference configs take every carried setting from it
    (``"$@trained_model.setting('image_size', [64, 64])"``) and build their network with :meth:`network`, which
    refuses a given value that contradicts the checkpoint.

    Args:
        path: the checkpoint, or None.
        bundle: the name of the bundle that uses it (a checkpoint of another bundle is refused).
        looked: where a missing model was looked for (for :meth:`require`'s message).

    Raises:
        CheckpointError: the file cannot be read, or is a model of another bundle.
    """

    def __init__(self, path: str | Path | None, bundle: str | None = None, looked: str = "") -> None:
        self.path = None if path is None else Path(path)
        self.bundle = bundle
        self.looked = looked
        self.record: dict[str, Any] | None = None
        if self.path is not None:
            _, self.record, _ = read_checkpoint(self.path)
            if self.record is None:
                warn_unrecorded(self.path)
            elif bundle and self.record.get("bundle") not in (None, bundle):
                other = self.record["bundle"]
                what = "a run" if self.path.name == "last.pt" else "a model"
                raise CheckpointError(
                    f"{self.path} is {what} of the {other} bundle, not of {bundle}; use it with the {other} bundle's "
                    f"configs (bundles/{other}/configs/)."
                )

    @classmethod
    def locate(
        cls, ckpt_path: str | None, ckpt_dir: str | None, output_root: str, bundle: str | None = None
    ) -> TrainedModel:
        """``ckpt_path`` if given, else the checkpoint that ``python -m monai.bundle ckpt_export`` (or ``onnx_export``,
        ``trt_export``) exports (its ``--ckpt_file``), else the newest trained student of the bundle (the newer of
        ``<ckpt_dir>/model.pt`` and the newest ``<output_root>/student-*/model.pt``), else "none yet". Under ``python
        -m monai.bundle`` a problem ends the run with one line (exit status 2).

        Raises:
            FileNotFoundError: ``ckpt_path`` is given but does not exist.
            CheckpointError: the checkpoint cannot be read or is of another bundle.
        """
        from monai_medspike.runs import newest_model

        with _one_line():
            ckpt_path = ckpt_path or _exported_checkpoint()
            if ckpt_path:
                if not Path(ckpt_path).is_file():
                    raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such file; give a trained model.pt.")
                return cls(ckpt_path, bundle)
            found, looked = newest_model(ckpt_dir, output_root)
            return cls(found, bundle, looked)

    @classmethod
    def resumed(cls, resume_from: str | None, bundle: str | None = None) -> TrainedModel:
        """The run that ``--resume_from`` names (its ``last.pt``), whose settings a resumed training keeps; "none"
        without one. Under ``python -m monai.bundle`` a problem ends the run with one line (exit status 2).

        Raises:
            FileNotFoundError: nothing to resume there.
            CheckpointError: the checkpoint cannot be read or is a run of another bundle.
        """
        from monai_medspike.runs import resolve_resume

        with _one_line():
            return cls(resolve_resume(resume_from), bundle)

    def require(self, config: str = "inference.json") -> str:
        """The checkpoint's path.

        Raises:
            FileNotFoundError: there is no trained model; says how to train one or to pass ``--ckpt_path``.
        """
        if self.path is None:
            raise FileNotFoundError(
                f"no trained student: looked for {self.looked or 'a model.pt'}. Train it first (python -m monai.bundle "
                f"run training --config_file <bundle>/configs/train.json) or pass --ckpt_path <model.pt> ({config})."
            )
        return str(self.path)

    def settings(self) -> dict[str, Any]:
        """The recorded settings, all groups in one dict (empty without a record)."""
        groups = (self.record or {}).get("settings", {})
        return {name: value for values in groups.values() for name, value in values.items()}

    def setting(self, name: str, default: Any = None) -> Any:
        """The checkpoint's value of the carried setting ``name``, else ``default`` (no model, or no record).

        The data a model was trained on is one source: its recorded ``datalist`` (or ``dataset_dir``) gives way to a
        ``--dataset_dir`` (or ``--datalist``) given on the command line, which names other data to use."""
        recorded = self.settings()
        other = {"datalist": "dataset_dir", "dataset_dir": "datalist"}.get(name)
        if other is not None:
            from monai_medspike.utils import bundle_command_line

            if bundle_command_line()[2].get(other) not in (None, ""):
                return default
        return recorded[name] if name in recorded and SETTINGS[name].carried else default

    def check(self, given: Mapping[str, Any]) -> list[str]:
        """Compare the run's values of carried and identity settings with the checkpoint's.

        Returns:
            a note for each carried setting given with another value (used as given).

        Raises:
            CheckpointError: an identity setting (channels, classes, layout, spiking, time steps, widths, ...)
                contradicts the checkpoint, naming both values.
        """
        recorded = self.settings()
        if self.record is not None and "spiking" not in recorded:
            recorded["spiking"] = bool(self.record.get("network", {}).get("spiking", True))
        notes = []
        for name, value in given.items():
            setting = SETTINGS[name]
            value = setting.normalise(value)
            if name not in recorded or _plain(value) == recorded[name]:
                continue
            if setting.identity:
                if name == "spiking":
                    _check_kind(self.record["network"], {**self.record["network"], "spiking": value}, self.path, False)
                raise CheckpointError(
                    f"--{name} {_plain(value)!r} contradicts the checkpoint {self.path}, which was trained with "
                    f"{name} {recorded[name]!r}; leave --{name} out to use the checkpoint's."
                )
            if setting.carried:
                notes.append(
                    f"--{name} {_plain(value)!r} is used as given; {self.path} was trained with {recorded[name]!r}"
                )
        for note in notes:
            logger.warning("note: %s", note)
        return notes

    def network(
        self, given: Mapping[str, Any], use_checkpoint: bool = False, channels_last: bool = False,
        precision: str = "float32",
    ) -> torch.nn.Module:  # fmt: skip
        """The network the checkpoint holds, built from its record, checked against the run's values ``given``
        (:meth:`check`), with the execution options of this run. Without a model or a record, the MedSpikeFormer
        that ``given`` describes.

        Raises:
            CheckpointError: see :meth:`check`; or the checkpoint holds a network this cannot build.
        """
        from monai_medspike.networks.nets import MedSpikeFormer

        with _one_line():
            self.check(given)
        options = {"use_checkpoint": use_checkpoint, "channels_last": channels_last, "precision": precision}
        recorded = (self.record or {}).get("network")
        if recorded is None:
            names = ("in_channels", "out_channels", "embed_dims", "num_heads", "time_steps", "layout", "spiking")
            chosen = {k: SETTINGS[k].normalise(given[k]) for k in names if k in given}
            return MedSpikeFormer(spatial_dims=2, **chosen, **options)
        if recorded.get("_target_") != _MEDSPIKEFORMER:
            with _one_line():
                raise CheckpointError(
                    f"checkpoint {self.path} holds a {_kind(recorded)}; this bundle's evaluation and inference build "
                    "MedSpikeFormer. Score other networks with python -m monai_medspike.compare."
                )
        arguments = {k: v for k, v in recorded.items() if k != "_target_"}
        if "spiking" in given:
            arguments["spiking"] = SETTINGS["spiking"].normalise(given["spiking"])
        neuron = arguments.get("neuron")
        if isinstance(neuron, list):  # ("lif", {...}) came back from JSON as a list
            arguments["neuron"] = tuple(neuron)
        return MedSpikeFormer(**{**arguments, **options})

    def __repr__(self) -> str:
        return f"TrainedModel({str(self.path) if self.path else None!r}, kind={(self.record or {}).get('kind')!r})"

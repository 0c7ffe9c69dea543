"""Helpers that the bundle configs in ``bundles/`` call (``"$monai_medspike.bundle.<name>(...)"``).

They locate the bundle folder, provide data (the built-in demo data by default), give every run its own output
folder, and load checkpoints strictly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "META_SCHEMA",
    "bundle_root",
    "export_bundle",
    "shipped_bundle",
    "shipped_bundles",
    "check_flag",
    "end_distributed",
    "run_dir",
    "run_stamp",
    "train_scalars",
    "write_summary",
    "find_checkpoint",
    "input_files",
    "is_main_process",
    "load_weights",
    "prepare_data",
    "require_checkpoint",
    "trained_model",
]

logger = logging.getLogger(__name__)

#: the bundle metadata schema shipped with the package (the mandatory keys and tensor format specifiers of the MONAI
#: Bundle specification), so that ``python -m monai.bundle verify_metadata --filepath <it>`` runs offline
META_SCHEMA = Path(__file__).resolve().with_name("meta_schema.json")


def _is_bundle(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds a bundle whose ``train.json`` calls itself ``name`` (``bundle_root('<name>')``)."""
    train = folder / "configs" / "train.json"
    if not (train.is_file() and (folder / "configs" / "metadata.json").is_file()):
        return False
    text = train.read_text(errors="replace")
    return f"bundle_root('{name}')" in text or f'bundle_root("{name}")' in text


def bundle_root(name: str) -> str:
    """The folder of bundle ``name`` (the one holding ``configs/``), whatever the current directory.

    ``python -m monai.bundle run`` (MONAI's ``ConfigWorkflow.run``) puts the bundle folder of its first config file
    on ``sys.path`` before it runs the workflow: the file's folder, or its parent when that folder is ``configs``.
    The first folder on ``sys.path`` after its first entry (the current directory, which MONAI leaves in front)
    that holds a bundle whose ``train.json`` calls itself ``name`` is therefore the bundle being run, from any
    working directory and for any copy of the bundle (``python -m monai_medspike.bundle export``); the latest run
    comes first when one process runs several. Elsewhere (a ``ConfigParser`` read by hand, ``monai.bundle load``,
    ``verify_net_in_out``) it is the bundle shipped with the package (:func:`shipped_bundle`). A ``bundle_root``
    override (``--bundle_root <folder>``, or ``parser["bundle_root"] = ...`` as MONAI Label does) replaces this
    lookup entirely.

    Raises:
        FileNotFoundError: the bundle cannot be located.
    """
    entries = sys.path[1:] + sys.path[:1]
    for entry in entries:
        folder = Path(entry or ".")
        if _is_bundle(folder, name):
            return str(folder.resolve())
    shipped = shipped_bundle(name)
    if shipped is not None:
        return str(shipped)
    raise FileNotFoundError(
        f"cannot locate the bundle folder of {name!r}; pass it on the command line: --bundle_root <path to {name}>."
    )


def shipped_bundles() -> dict[str, Path]:
    """The bundles that come with this installation, by name: ``monai_medspike/bundles/<name>`` in a wheel or
    sdist install, else ``bundles/<name>`` of the source checkout (an editable install)."""
    here = Path(__file__).resolve().parents[1]
    for root in (here / "bundles", here.parent / "bundles"):
        found = {p.parents[1].name: p.parents[1] for p in sorted(root.glob("*/configs/train.json"))}
        if found:
            return found
    return {}


def shipped_bundle(name: str) -> Path | None:
    """The folder of the shipped bundle ``name`` (see :func:`shipped_bundles`), or None."""
    return shipped_bundles().get(name)


def export_bundle(name: str, destination: str | Path, overwrite: bool = False) -> Path:
    """Write the shipped bundle ``name`` as a bundle folder at ``destination`` (``configs/``, ``docs/``, ``LICENSE``,
    an empty ``models/``, the root links), without any ``outputs/`` or trained weights; returns the folder.

    Raises:
        ValueError: unknown bundle name, listing the shipped ones.
        FileExistsError: ``destination`` exists and is not empty (unless ``overwrite``).
    """
    import shutil

    source = shipped_bundle(name)
    if source is None:
        raise ValueError(f"no bundle named {name!r}; the shipped bundles are: {', '.join(shipped_bundles())}.")
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())) and not overwrite:
        raise FileExistsError(f"{destination} exists and is not empty; choose another folder or pass --overwrite.")
    # the bundle as shipped: no runs, and no weights a local training published into models/
    ignore = shutil.ignore_patterns("outputs", "__pycache__", "*.pt", "*.ts", ".*.tmp")
    # links inside the bundle (train.json -> configs/train.json) stay links; those pointing out of it are copied
    shutil.copytree(source, destination, symlinks=False, ignore=ignore, dirs_exist_ok=True)
    for link in ("train.json", "metadata.json", "logging.conf"):  # a wheel holds them as copies: link again
        target = destination / link
        if (destination / "configs" / link).is_file():
            target.unlink(missing_ok=True)
            target.symlink_to(Path("configs") / link)
    return destination


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main_process() -> bool:
    """True outside distributed training and on rank 0 within it (the process that logs and saves)."""
    return not _distributed() or torch.distributed.get_rank() == 0


def end_distributed() -> None:
    """End distributed training: wait for every rank, then destroy the process group (nothing outside one).

    Without the wait a rank that finishes first tears its connections down while another still uses them (rank 0
    writing the last checkpoint), and gloo aborts that rank at exit ("terminate called without an active
    exception"), failing a run that had finished.
    """
    if _distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run_stamp() -> str:
    """A timestamp that names the output folders of one run, e.g. ``20261128-153000``.

    In distributed training every rank gets rank 0's stamp, so all ranks agree on the folders.
    """
    stamp = [time.strftime("%Y%m%d-%H%M%S")]
    if _distributed():
        torch.distributed.broadcast_object_list(stamp, src=0)
    return stamp[0]


_FLAG_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def check_flag(value: Any, argument: str) -> bool:
    """A yes/no setting as a bool, from a config's ``true``/``false`` or a command line's word for it.

    ``python -m monai.bundle run`` passes ``--flag False`` as the bool False but ``--flag false`` as the string
    ``"false"``, which Python would take for true. Words (``true``/``false``, ``1``/``0``, ``yes``/``no``,
    ``on``/``off``, any case) and 0/1 are read as meant; anything else raises a ValueError naming ``--argument``.
    """
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"--{argument} must be true or false, got {value!r}; e.g. --{argument} False.")


def run_dir(output_root: str, name: str, overwrite: bool = False) -> str:
    """The output folder ``<output_root>/<name>`` of a run; nothing is created here.

    An existing non-empty folder is an error unless ``overwrite`` is True, so a run never replaces an earlier
    run's outputs without being told to.
    """
    folder = Path(output_root) / name
    # in distributed training rank 0 checks; the others may already see rank 0's first files there
    if is_main_process() and folder.is_dir() and any(folder.iterdir()) and not check_flag(overwrite, "overwrite"):
        raise FileExistsError(
            f"{folder} holds an earlier run; choose another --run_name, or pass --overwrite true to replace it."
        )
    return str(folder)


def find_checkpoint(output_root: str, phase: str, filename: str = "model.pt") -> str | None:
    """The ``filename`` of the newest run of ``phase`` under ``output_root`` (by folder name), or None."""
    root = Path(output_root)
    if not root.is_dir():
        return None
    runs = sorted((p for p in root.glob(f"{phase}-*") if (p / filename).is_file()), key=lambda p: p.name)
    return str(runs[-1] / filename) if runs else None


def require_checkpoint(path: str | None, what: str, how: str) -> str:
    """Return ``path`` if it is a file, else stop with an error saying what is missing and how to make it."""
    if path is None or not Path(path).is_file():
        where = f"{path} does not exist" if path else "none was found"
        raise FileNotFoundError(f"{what} checkpoint is required but {where}. {how}")
    return str(path)


def trained_model(ckpt_dir: str | None, output_root: str, config: str = "train.json") -> str:
    """The trained student that evaluation and inference load by default: the newer of the bundle's published
    ``<ckpt_dir>/model.pt`` and the newest ``student-*/model.pt`` under ``output_root``.

    Raises:
        FileNotFoundError: neither exists; the message says how to train one or to pass ``--ckpt_path``.
    """
    candidates = [Path(ckpt_dir) / "model.pt"] if ckpt_dir else []
    newest_run = find_checkpoint(output_root, "student")
    candidates += [Path(newest_run)] if newest_run else []
    found = [c for c in candidates if c.is_file()]
    if found:
        return str(max(found, key=lambda c: c.stat().st_mtime_ns))
    looked = " or ".join(str(c) for c in [*candidates[:1], Path(output_root) / "student-*" / "model.pt"])
    raise FileNotFoundError(
        f"no trained student: looked for {looked}. Train it first (python -m monai.bundle run training "
        f"--config_file <bundle>/configs/{config}) or pass --ckpt_path <model.pt>."
    )


def _few(keys: list[str], count: int = 8) -> str:
    return str(keys) if len(keys) <= count else f"{keys[:count]} and {len(keys) - count} more"


def load_weights(network: torch.nn.Module, path: str, key: str = "model") -> torch.nn.Module:
    """Load a checkpoint into ``network`` strictly and return the network.

    ``path`` may hold a state dict or a dict with ``key`` (as MONAI's ``CheckpointSaver`` writes).

    Raises:
        FileNotFoundError: no file at ``path``.
        KeyError: missing or unexpected keys, all listed, or a shape mismatch.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        layouts = ["spike_driven" if any(".term_norms." in k for k in keys) else "published" for keys in (state, own)]
        hint = (
            f" The checkpoint is of the {layouts[0]} layout and the network of the {layouts[1]} one: build the network "
            f"with the layout it was trained with (bundle: --layout {layouts[0]}; MONAI Label: --conf "
            f"<model>.layout {layouts[0]}; Python: MedSpikeFormer(..., layout='{layouts[0]}'))."
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


def prepare_data(
    output_root: str,
    dataset: str,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    seed: int = 0,
    demo_count: int | None = None,
    **options: Any,
) -> str:
    """The datalist a bundle trains on.

    - ``datalist`` given: used as it is (it must exist).
    - ``dataset_dir`` given: a datalist for that release folder is prepared once (with ``seed`` and
      ``options``) under ``<output_root>/data/`` and reused by later runs.
    - neither: the built-in demo data of ``dataset`` is generated once under ``<output_root>/demo_data/`` and
      prepared the same way. Nothing is downloaded.
    """
    from monai_medspike.data import DataError

    arguments = (output_root, dataset, dataset_dir, datalist, seed, demo_count)
    try:
        if not _distributed():
            return _prepare_data(*arguments, **options)
        # rank 0 writes the data and the datalist, the others wait and read them
        if torch.distributed.get_rank() == 0:
            path = _prepare_data(*arguments, **options)
        torch.distributed.barrier()
        if torch.distributed.get_rank() != 0:
            path = _prepare_data(*arguments, **options)
        return path
    except DataError as error:
        _stop_on_data_error(error)
        raise


def _prepare_data(
    output_root: str,
    dataset: str,
    dataset_dir: str | None,
    datalist: str | None,
    seed: int,
    demo_count: int | None,
    **options: Any,
) -> str:
    from monai_medspike.data import make_demo_dataset, prepare
    from monai_medspike.data.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION

    if datalist:
        if not Path(datalist).is_file():
            raise FileNotFoundError(
                f"datalist {datalist} does not exist; write one with python -m monai_medspike.data prepare."
            )
        return str(datalist)
    root = Path(output_root)
    if dataset_dir:
        source = Path(dataset_dir).resolve()
        key = [str(source), seed, options, DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION]
        tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        out = root / "data" / f"{dataset}-{tag}.json"
    else:
        source = root / "demo_data" / dataset
        if not source.is_dir():
            make_demo_dataset(dataset, source, count=demo_count, seed=seed)
        # one datalist per set of options (e.g. binary and multi-class labels of the same demo volumes)
        key = [options, DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION]
        tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        out = root / "demo_data" / f"{dataset}-seed{seed}-{tag}.json"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = prepare(dataset, source, out, seed=seed, **options)
        logger.info("prepared %s: %s", out, {k: v["count"] for k, v in summary["splits"].items()})
    return str(out)


def write_summary(
    engine: Any, out_dir: str, extra: dict | None = None, label_names: list[str] | tuple[str, ...] | None = None
) -> str:
    """Write ``engine.state.metrics`` (and ``extra``) as ``<out_dir>/summary.json``; return the file path.

    With ``label_names`` (background first, as in the bundle's ``label_names``) the summary also holds
    ``per_class``: for each foreground class, the mean over images of every metric whose per-image details the
    engine kept (``engine.state.metric_details``, one column per foreground class). Images where a metric is not
    finite (e.g. HD95 with an empty mask) are left out of that mean and counted in ``<metric>_not_finite``.

    Raises:
        ValueError: a metric has a different number of classes than ``label_names`` names.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {
        k: (float(v) if isinstance(v, int | float) or hasattr(v, "item") else v)
        for k, v in engine.state.metrics.items()
    }
    summary = {"metrics": metrics, "images": len(engine.data_loader.dataset), **(extra or {})}
    if label_names is not None:
        summary["per_class"] = _per_class(getattr(engine.state, "metric_details", {}) or {}, list(label_names)[1:])
    path = folder / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("evaluation summary written to %s: %s", path, metrics)
    return str(path)


def _per_class(details: dict[str, Any], foreground: list[str]) -> dict[str, dict[str, float | int | None]]:
    per_class: dict[str, dict[str, float | int | None]] = {name: {} for name in foreground}
    for metric, values in details.items():
        values = torch.as_tensor(values, dtype=torch.float64)
        values = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
        if values.shape[1] != len(foreground):
            raise ValueError(
                f"metric {metric!r} has {values.shape[1]} classes but label_names names {len(foreground)} "
                f"foreground classes ({foreground}); make label_names match out_channels."
            )
        for column, name in enumerate(foreground):
            column_values = values[:, column]
            finite = torch.isfinite(column_values)
            per_class[name][metric] = float(column_values[finite].mean()) if finite.any() else None
            if not finite.all():
                per_class[name][f"{metric}_not_finite"] = int((~finite).sum())
    return per_class


_INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_VOLUME_SUFFIXES = (".nii.gz", ".nii")


def _stop_on_data_error(error: Exception) -> None:
    from monai_medspike.workflows.settings import stop_command_line

    stop_command_line(error)


def input_files(
    source: str | None, datalist_file: str, split: str = "test", dataset: str | None = None
) -> list[dict[str, str]]:
    """The images an inference run reads: ``[{"image": path}, ...]``, each checked before any is segmented.

    ``source`` may be one image or volume file, or a folder (every file of the dataset's kind in it, sorted); None
    takes the ``split`` of the datalist. With ``dataset``, a volume dataset takes NIfTI volumes only and a 2D one
    images only, and every file is read and checked (readable, one 3D volume that fits in memory with finite
    values, or an 8-bit image), so that a bad file stops the run before any output is written.

    Raises:
        DataError: ``source`` does not exist or holds no input; a file of the wrong kind, unreadable or bad; two
            inputs with the same name (their outputs would overwrite each other). Under ``python -m monai.bundle``
            the message ends the run (exit status 2) without a traceback.
    """
    from monai_medspike.data import DataError

    try:
        return _input_files(source, datalist_file, split, dataset)
    except DataError as error:
        _stop_on_data_error(error)
        raise


def _input_files(source: str | None, datalist_file: str, split: str, dataset: str | None) -> list[dict[str, str]]:
    from monai_medspike.data import DataError, get_reader
    from monai_medspike.data.io import read_image, read_volume
    from monai_medspike.data.readers import by_name

    if source is None:
        from monai.data import load_decathlon_datalist

        return [{"image": e["image"]} for e in load_decathlon_datalist(datalist_file, data_list_key=split)]
    volume = dataset is not None and get_reader(dataset).kind == "volume"
    suffixes = _VOLUME_SUFFIXES if volume else _INPUT_SUFFIXES + (() if dataset else _VOLUME_SUFFIXES)
    kind = "NIfTI volume (.nii, .nii.gz)" if volume else "image (" + ", ".join(suffixes) + ")"

    def name(path: Path) -> str | None:
        lower = path.name.lower()
        return next((path.name[: -len(s)] for s in suffixes if lower.endswith(s)), None)

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if (p.is_file() or p.is_symlink()) and name(p) is not None)
        if not files:
            held = sorted(p.name for p in path.iterdir())[:5]
            raise DataError(f"--input {path}: holds no {kind}; it holds {held or 'nothing'}.")
    elif path.is_file() or path.is_symlink():
        if name(path) is None:
            hint = " For 2D CT slices use the 2D COVID data (--dataset covid)." if volume else ""
            raise DataError(f"--input {path}: not a {kind}; the {dataset or 'bundle'} network reads those.{hint}")
        files = [path]
    else:
        raise DataError(f"--input {path}: no such file or folder.")
    by_name(files, name)  # two inputs of one name would write one output
    if dataset is not None:
        for file in files:
            read_volume(file) if volume else read_image(file)
    return [{"image": str(p)} for p in files]


def train_scalars(output: dict, loss: Any = None, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
    """Scalars of one training iteration for ``StatsHandler``/``TensorBoardStatsHandler``.

    ``train_loss`` from the trainer output, the loss terms kept in ``loss.components`` (``seg``, ``align``) and
    the learning rate of the first parameter group.
    """
    scalars = {"train_loss": float(output["loss"])}
    for name, value in getattr(loss, "components", {}).items():
        scalars[f"train_{name}_loss"] = float(value)
    if optimizer is not None:
        scalars["lr"] = float(optimizer.param_groups[0]["lr"])
    return scalars

"""The data a bundle run reads: the datalist it trains and evaluates on (:func:`prepare_data`: a given datalist, a
release folder prepared once, or the built-in demo data) and the inputs an inference run segments
(:func:`input_files`), each checked before any work."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai_medspike.data.errors import DataError
from monai_medspike.distributed import main_process_first
from monai_medspike.runs import check_writable, folder_lock
from monai_medspike.utils import stop_command_line

__all__ = ["input_files", "prepare_data"]

logger = logging.getLogger(__name__)


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

    - ``datalist`` given: used as it is (it must exist; the workflows check it as they load it,
      :func:`monai_medspike.data.checks.load_datalist`).
    - ``dataset_dir`` given: a datalist for that release folder is prepared once (with ``seed`` and
      ``options``) under ``<output_root>/data/`` and reused by later runs.
    - neither: the built-in demo data of ``dataset`` is generated once under ``<output_root>/demo_data/`` and
      prepared the same way (said in the log). Nothing is downloaded.

    Raises:
        DataError: both ``datalist`` and ``dataset_dir`` (which one is meant is ambiguous: an overlay's datalist would
            hide a release folder given on the command line); a missing datalist.
    """
    arguments = (output_root, dataset, dataset_dir, datalist, seed, demo_count)

    def prepare_once() -> str:
        if datalist:
            return _prepare_data(*arguments, **options)
        check_writable(Path(output_root), "output_root")  # before any data is generated or prepared there
        # two runs on one output_root: the second waits for the first's data, then reuses it
        with folder_lock(Path(output_root) / "data-preparation"):
            return _prepare_data(*arguments, **options)

    try:
        # rank 0 writes the data and the datalist, the others wait and read them
        return main_process_first(prepare_once)
    except DataError as error:
        stop_command_line(error)
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
    from monai_medspike.data.datalist import prepare
    from monai_medspike.data.demo import make_demo_dataset
    from monai_medspike.data.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION

    if datalist and dataset_dir:
        raise DataError(
            f"both a datalist ({datalist}) and a release folder (--dataset_dir {dataset_dir}) are given: which one to "
            "train and score on is ambiguous. Give one: --datalist None to use the folder, or drop --dataset_dir."
        )
    if datalist:
        if not Path(datalist).is_file():
            raise DataError(
                f"datalist {datalist} does not exist (given as --datalist, or recorded by the checkpoint used); give "
                "one that does (--datalist <file>), or --dataset_dir <release folder>; write one with python -m "
                "monai_medspike.data prepare."
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
        logger.warning(
            "no --datalist or --dataset_dir given: using the built-in demo data of %s (synthetic images, under %s)",
            dataset,
            source,
        )
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


_INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_VOLUME_SUFFIXES = (".nii.gz", ".nii")


def input_files(
    source: str | None,
    datalist_file: str | Callable[[], str],
    split: str = "test",
    dataset: str | None = None,
    options: dict[str, Any] | None = None,
) -> list[dict[str, str]]:
    """The images an inference run reads: ``[{"image": path}, ...]``, each checked before any is segmented.

    ``source`` may be one image or volume file, or a folder (every file of the dataset's kind in it, sorted); None
    takes the ``split`` of the datalist (``datalist_file``, or a callable that prepares it: called only then, so that
    a given ``source`` needs no data of the model's, demo or release). With ``dataset``, a volume dataset takes NIfTI
    volumes only and a 2D one
    images only, and every file is read and checked (readable, one 3D volume that fits in memory with finite
    values, or an 8-bit image), so that a bad file stops the run before any output is written.

    Raises:
        DataError: ``source`` does not exist or holds no input; a file of the wrong kind, unreadable or bad; two
            inputs with the same name (their outputs would overwrite each other). Under ``python -m monai.bundle``
            the message ends the run (exit status 2) without a traceback.
    """
    try:
        return _input_files(source, datalist_file, split, dataset, options)
    except DataError as error:
        stop_command_line(error)
        raise


def _input_files(
    source: str | None,
    datalist_file: str | Callable[[], str],
    split: str,
    dataset: str | None,
    options: dict[str, Any] | None,
) -> list[dict[str, str]]:
    from monai_medspike.data.io import read_image, read_volume
    from monai_medspike.data.readers import by_name, get_reader

    if source is None:
        from monai_medspike.data.checks import load_datalist

        datalist_file = datalist_file() if callable(datalist_file) else datalist_file
        return [{"image": e["image"]} for e in load_datalist(datalist_file, split, dataset, options, labels=False)]
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

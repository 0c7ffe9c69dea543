"""One comparison job: train a model with the bundle's workflow on the saved split, then score the test split.

A job runs in its own folder ``<out>/runs/<model>-seed<seed>/`` and writes ``result.json`` last; a folder with a
``result.json`` is a finished job and is skipped when the comparison runs again.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from monai_medspike.compare.models import MODELS
from monai_medspike.data.io import read_json

__all__ = ["SCORE_NAMES", "bundle_parser", "prepare_split", "run_job", "score_images"]

logger = logging.getLogger(__name__)

#: the per-image scores of the comparison (the paper's five and MONAI's HD95), at training and original size
SCORE_NAMES = ("dice", "iou", "accuracy", "specificity", "sensitivity", "hd95")
DAMAGED_RESULT = "it is damaged (an interrupted write?): remove it and run the comparison again to redo that job."
"""What to do with a damaged ``result.json``."""
_RESULT = "result.json"


def bundle_parser(bundle: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """The bundle's ``train.json`` as a ``ConfigParser`` with its root set and ``overrides`` applied.

    An override value that is callable is called with the bundle's ``in_channels`` and ``out_channels`` (a MONAI
    network's constructor arguments, see :mod:`.models`).

    Raises:
        FileNotFoundError: ``bundle`` has no ``configs/train.json``.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle)
    train = bundle / "configs" / "train.json"
    if not train.is_file():
        raise FileNotFoundError(f"--bundle {bundle}: no configs/train.json there; pass a bundle folder.")
    parser = ConfigParser()
    parser.read_config(str(train))
    parser["bundle_root"] = str(bundle.resolve())
    later = {}
    for key, value in (overrides or {}).items():
        if callable(value):
            later[key] = value
        else:
            parser[key] = value
    if later:
        channels = int(parser.get_parsed_content("in_channels")), int(parser.get_parsed_content("out_channels"))
        parser.parse(reset=True)
        for key, make in later.items():
            parser[key] = make(*channels)
    parser.parse(reset=True)
    return parser


def prepare_split(
    out: Path,
    bundle: str | Path,
    dataset_dir: str | None = None,
    datalist: str | None = None,
    test_datalist: str | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write ``<out>/datalist.json``, the one split every job trains and scores on (absolute paths).

    The split is the bundle's: ``datalist`` as given, a release folder's datalist prepared with ``seed``, or the
    built-in demo data. ``test_datalist`` replaces its test list by the ``test`` list of another datalist (an
    external test set, e.g. written by ``python -m monai_medspike.data prepare ... --test_fraction 1``). An
    existing ``datalist.json`` is kept, so that a resumed comparison scores the same images.
    """
    from monai_medspike.data import DataError
    from monai_medspike.data.checks import load_datalist

    path = out / "datalist.json"
    if path.is_file():
        return path
    parser = bundle_parser(
        bundle,
        {"output_root": str(out.resolve()), "dataset_dir": dataset_dir, "datalist": datalist, "seed": seed,
         **(overrides or {})},
    )  # fmt: skip
    source = parser.get_parsed_content("datalist_file")
    dataset, options = parser.get_parsed_content("dataset"), parser.get_parsed_content("data_options")
    # checked like every datalist (load_datalist): an empty split, a leak or a bad label stops here, before any job
    split = {key: load_datalist(source, key, dataset, options) for key in ("training", "validation", "test")}
    if test_datalist:
        split["test"] = load_datalist(test_datalist, "test", dataset, options)
        trained = {str(Path(e["image"]).resolve()) for key in ("training", "validation") for e in split[key]}
        leaked = [e["image"] for e in split["test"] if str(Path(e["image"]).resolve()) in trained]
        if leaked:
            raise DataError(
                f"--test_datalist {test_datalist}: {len(leaked)} test image(s) are in the training or validation split "
                f"of {source} (e.g. {leaked[0]}); an external test set must be disjoint from them."
            )
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"source": str(source), "test_source": test_datalist, **split}, indent=1) + "\n")
    tmp.replace(path)
    return path


def _per_image(pred: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """The scores of one image: binarised one-hot (or one-channel) ``pred`` and ``label`` ``(1, C, *spatial)``."""
    from monai.metrics import compute_hausdorff_distance

    from monai_medspike.metrics import PerImageScore

    scores = {name: float(PerImageScore(name)(pred, label).mean()) for name in SCORE_NAMES if name != "hd95"}
    background = pred.shape[1] == 1
    hd = compute_hausdorff_distance(pred, label, include_background=background, percentile=95)
    scores["hd95"] = float(hd.float().mean())
    return scores


def _discrete(probabilities: torch.Tensor) -> torch.Tensor:
    if probabilities.shape[1] == 1:
        return (probabilities > 0.5).float()
    index = probabilities.argmax(dim=1, keepdim=True)
    return torch.zeros_like(probabilities).scatter_(1, index, 1.0)


def _one_hot(label: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 1:
        return (label > 0.5).float()
    index = label.long().clamp(0, channels - 1)
    return torch.zeros((label.shape[0], channels, *label.shape[2:])).scatter_(1, index, 1.0)


def score_images(
    network: torch.nn.Module, parser: Any, entries: list[dict], device: torch.device
) -> tuple[list[dict[str, Any]], float]:
    """Score ``network`` on ``entries``, at the training size and at each image's original size.

    At the training size the prediction and the label both come out of the bundle's evaluation transforms
    (``val_transforms``). At the original size the probabilities are resized back (bilinear; trilinear within a
    volume) to the label as stored, loaded without resizing, then thresholded: the way papers score.

    Returns:
        one row per image (``image`` and ``<score>_train``, ``<score>_original`` for :data:`SCORE_NAMES`), and the
        mean inference time per image in seconds (network and inferer, after one untimed warm-up image).
    """
    from monai_medspike.data import get_transforms

    val_transforms = parser.get_parsed_content("val_transforms")
    native_transforms = get_transforms(
        parser.get_parsed_content("dataset"), "eval", spatial_size=parser.get_parsed_content("image_size"),
        classes=parser.get_parsed_content("classes"), resize=False,
        reader_options=parser.get_parsed_content("data_options"),
    )  # fmt: skip
    inferer = parser.get_parsed_content("inferer")
    channels = int(parser.get_parsed_content("out_channels"))
    network = network.to(device).eval()
    rows: list[dict[str, Any]] = []
    times: list[float] = []
    with torch.no_grad():
        for i, entry in enumerate(entries):
            item = val_transforms(dict(entry))
            image = torch.as_tensor(item["image"])[None].to(device)
            if i == 0:
                inferer(image, network)  # warm-up: first-use allocations and kernels
            start = time.perf_counter()
            logits = inferer(image, network)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            logits = torch.as_tensor(logits).float().cpu()
            probabilities = torch.sigmoid(logits) if channels == 1 else torch.softmax(logits, dim=1)
            label = _one_hot(torch.as_tensor(item["label"])[None].float(), channels)
            row: dict[str, Any] = {"image": Path(entry["image"]).name}
            row.update({f"{k}_train": v for k, v in _per_image(_discrete(probabilities), label).items()})
            native = _one_hot(torch.as_tensor(native_transforms(dict(entry))["label"])[None].float(), channels)
            size = tuple(native.shape[2:])
            if tuple(probabilities.shape[2:]) != size:
                mode = "bilinear" if len(size) == 2 else "trilinear"
                probabilities = torch.nn.functional.interpolate(
                    probabilities, size=size, mode=mode, align_corners=False
                )
            row.update({f"{k}_original": v for k, v in _per_image(_discrete(probabilities), native).items()})
            rows.append(row)
    return rows, sum(times) / max(1, len(times))


def _energy(network: torch.nn.Module, parser: Any, images: int = 4) -> dict[str, float]:
    from monai_medspike.energy.report import bundle_images
    from monai_medspike.metrics.spiking import count_operations

    batch = bundle_images(parser, images, split="test")
    report = count_operations(network.cpu().eval(), batch)
    dense = report.dense_macs
    return {
        "energy_mj": report.energy * 1e3,
        "macs_g": report.macs / 1e9,
        "sops_g": report.sops / 1e9,
        "spike_input_share": 1.0 - report.macs / dense if dense else 0.0,
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Train and score one (model, seed); returns the rows of ``result.json`` (one per network scored).

    Args:
        job: ``model`` (a name in :data:`.models.MODELS`), ``phase`` and ``rows`` (of its :class:`.ModelSpec`, which
            :func:`.models.jobs_for` may change: the student job scores its teacher too), ``seed``, ``folder``,
            ``bundle``, ``datalist`` (the saved split), ``device``, ``threads`` (CPU threads of this job) and
            ``overrides`` (bundle ids: epochs, image size, ...).
    """
    from monai.utils import set_determinism

    from monai_medspike.checkpoints import load_weights
    from monai_medspike.utils import keep_freed_memory

    folder = Path(job["folder"])
    done = folder / _RESULT
    if done.is_file():
        return read_json(done, DAMAGED_RESULT)["rows"]
    base = MODELS[job["model"]]
    spec = replace(base, phase=job.get("phase", base.phase), rows=dict(job.get("rows", base.rows)))
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    keep_freed_memory(True)
    set_determinism(seed=int(job["seed"]))
    device = torch.device(job["device"])
    overrides = {
        **job.get("overrides", {}),
        "output_root": str(folder.resolve()),
        "ckpt_dir": None,
        "datalist": str(Path(job["datalist"]).resolve()),
        "seed": int(job["seed"]),
        "phase": spec.phase,
        "run_id": "run",
        "overwrite": True,
        "device": device,
        "num_workers": 0,
        **spec.overrides,
    }
    parser = bundle_parser(job["bundle"], overrides)
    workflow = parser.get_parsed_content("workflow")
    logger.info("job %s seed %s: training in %s", spec.name, job["seed"], folder)
    folders = workflow.run()
    split = json.loads(Path(job["datalist"]).read_text())
    results = []
    for phase, name in spec.rows.items():
        network = parser.get_parsed_content("network_def" if phase == "student" else "teacher_def")
        checkpoint = Path(folders[phase]) / "model.pt"
        load_weights(network, str(checkpoint))
        rows, seconds = score_images(network, parser, split["test"], device)
        for row in rows:
            row.update(model=name, seed=int(job["seed"]))
        _write_csv(folder / f"{name}.csv", rows)
        history = workflow.history.get(phase, {})
        epochs = max(1, int(history.get("epochs", 1)))
        result = {
            "model": name,
            "seed": int(job["seed"]),
            "checkpoint": str(checkpoint),
            "parameters": sum(p.numel() for p in network.parameters()),
            "epochs": int(history.get("epochs", 0)),
            "seconds_per_epoch": float(history.get("seconds", 0.0)) / epochs,
            "best_val_dice": history.get("best_val_dice"),
            "best_epoch": history.get("best_epoch"),
            "inference_seconds_per_image": seconds,
            "test_images": len(rows),
            "device": str(device),
            **_energy(network, parser),
        }
        for score in SCORE_NAMES:
            for size in ("train", "original"):
                values = [r[f"{score}_{size}"] for r in rows]
                finite = [v for v in values if v == v and abs(v) != float("inf")]
                result[f"{score}_{size}"] = sum(finite) / len(finite) if finite else None
        results.append(result)
        network.to(device)
    tmp = done.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"job": job, "rows": results}, indent=2, default=str) + "\n")
    tmp.replace(done)
    return results

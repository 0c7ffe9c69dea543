"""The comparison's outputs: ``summary.json``, ``results.md`` (mean ± std over seeds, paired statistics against the
reference model, cost) and two plots."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_medspike.compare.jobs import DAMAGED_RESULT, SCORE_NAMES
from monai_medspike.compare.stats import mean_std, paired_comparison
from monai_medspike.data.io import read_json

__all__ = ["collect", "markdown", "plot", "summarise", "write_report"]

_COST = ("parameters", "seconds_per_epoch", "inference_seconds_per_image", "energy_mj", "best_val_dice")


def collect(runs: Path) -> tuple[list[dict[str, Any]], dict[str, dict[int, list[dict[str, Any]]]]]:
    """The finished jobs under ``runs``: their result rows, and per model and seed the per-image rows (CSV)."""
    results: list[dict[str, Any]] = []
    images: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for done in sorted(runs.glob("*/result.json")):
        for row in read_json(done, DAMAGED_RESULT)["rows"]:
            results.append(row)
            with (done.parent / f"{row['model']}.csv").open(newline="") as f:
                per_image = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
            images.setdefault(row["model"], {})[int(row["seed"])] = per_image
    return results, images


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def summarise(
    results: list[dict[str, Any]],
    images: dict[str, dict[int, list[dict[str, Any]]]],
    reference: str = "student",
    order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per model: mean and standard deviation over seeds of each score and cost, and the paired statistics of its
    per-image Dice (at training and at original size) against ``reference``."""
    models = list(order) if order else list(dict.fromkeys(r["model"] for r in results))
    summary: dict[str, Any] = {"reference": reference, "models": {}}
    for model in models:
        rows = [r for r in results if r["model"] == model]
        if not rows:
            continue
        entry: dict[str, Any] = {"seeds": sorted(int(r["seed"]) for r in rows), "test_images": rows[0]["test_images"]}
        for key in [f"{s}_{size}" for s in SCORE_NAMES for size in ("train", "original")] + list(_COST):
            mean, std = mean_std([float(r[key]) for r in rows if r.get(key) is not None])
            entry[key] = {"mean": mean, "std": std}
        for key in ("energy_mj", "macs_g", "sops_g"):
            entry[key] = (
                {"mean": mean_std([float(r[key]) for r in rows])[0], "std": 0.0} if key != "energy_mj" else (entry[key])
            )
        if model != reference and reference in images and model in images:
            for size in ("train", "original"):
                key = f"dice_{size}"
                entry[f"vs_{reference}_{key}"] = paired_comparison(
                    {s: [r[key] for r in rs] for s, rs in images[model].items()},
                    {s: [r[key] for r in rs] for s, rs in images[reference].items()},
                )
        summary["models"][model] = entry
    return summary


def _pm(value: dict[str, float], digits: int = 3) -> str:
    mean, std = value["mean"], value["std"]
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(value: float | None) -> str:
    return "–" if value is None else (f"{value:.2g}" if value >= 0.001 else "<0.001")


def markdown(summary: dict[str, Any], info: dict[str, Any]) -> str:
    """The comparison as Markdown: the scores table, the paired statistics against the reference, the cost."""
    ref = summary["reference"]
    models = summary["models"]
    lines = [
        f"{info.get('title', 'Comparison')}: {info.get('test_images', '?')} test images, seeds "
        f"{', '.join(map(str, info.get('seeds', [])))}; mean ± std over seeds of the per-seed mean over images.",
        "",
        "| model | Dice | IoU | HD95 | Dice (original size) | IoU (original size) | HD95 (original size) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        lines.append(
            f"| {name} | {_pm(m['dice_train'])} | {_pm(m['iou_train'])} | {_pm(m['hd95_train'], 1)} "
            f"| {_pm(m['dice_original'])} | {_pm(m['iou_original'])} | {_pm(m['hd95_original'], 1)} |"
        )
    lines += [
        "",
        f"Against {ref} (paired over the same test images; Dice difference = model - {ref}, averaged over seeds per "
        "image, with a 95 % bootstrap interval; Wilcoxon signed-rank p over images and over the seeds' means):",
        "",
        "| model | Dice diff. | 95 % interval | p (images) | p (seeds) | Dice diff. (original size) | p (images) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        t, o = m.get(f"vs_{ref}_dice_train"), m.get(f"vs_{ref}_dice_original")
        if not t or t["mean_difference"] is None:
            continue
        lines.append(
            f"| {name} | {t['mean_difference']:+.3f} | {t['interval_low']:+.3f} .. {t['interval_high']:+.3f} "
            f"| {_p(t['images_p'])} | {_p(t['seeds_p'])} | {o['mean_difference']:+.3f} | {_p(o['images_p'])} |"
        )
    lines += [
        "",
        "| model | parameters (M) | train s / epoch | inference ms / image | energy mJ / image | best val. Dice |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in models.items():
        lines.append(
            f"| {name} | {m['parameters']['mean'] / 1e6:.2f} | {m['seconds_per_epoch']['mean']:.1f} "
            f"| {m['inference_seconds_per_image']['mean'] * 1e3:.1f} | {m['energy_mj']['mean']:.3f} "
            f"| {_pm(m['best_val_dice'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], images: dict[str, dict[int, list[dict[str, Any]]]], out: Path) -> list[Path]:
    """``dice_boxplot.png`` (per-image Dice, averaged over seeds, per model) and ``dice_vs_energy.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = [m for m in summary["models"] if m in images]
    written = []
    fig, ax = plt.subplots(figsize=(1.2 * len(models) + 2, 4))
    data = [np.nanmean([[r["dice_train"] for r in rows] for rows in images[m].values()], axis=0) for m in models]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right")
    ax.set_ylabel("Dice per test image (mean over seeds)")
    fig.tight_layout()
    written.append(out / "dice_boxplot.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for m in models:
        s = summary["models"][m]
        ax.errorbar(s["energy_mj"]["mean"], s["dice_train"]["mean"], yerr=s["dice_train"]["std"], fmt="o", capsize=3)
        ax.annotate(m, (s["energy_mj"]["mean"], s["dice_train"]["mean"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.15)
    ax.set_xlabel("energy per image (mJ, 45 nm estimate)")
    ax.set_ylabel("test Dice (mean ± std over seeds)")
    fig.tight_layout()
    written.append(out / "dice_vs_energy.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def write_report(out: Path, info: dict[str, Any], order: Sequence[str] | None = None) -> dict[str, Any]:
    """Collect the finished jobs of ``out/runs`` and write ``summary.json``, ``results.md`` and the plots."""
    results, images = collect(out / "runs")
    if not results:
        raise FileNotFoundError(f"no finished job under {out / 'runs'}; run the comparison first.")
    summary = summarise(results, images, info.get("reference", "student"), order)
    info = {**info, "test_images": results[0]["test_images"], "seeds": sorted({int(r["seed"]) for r in results})}
    summary["info"] = info
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(markdown(summary, info))
    plot(summary, images, out)
    return summary

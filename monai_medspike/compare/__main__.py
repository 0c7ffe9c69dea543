"""``python -m monai_medspike.compare``: train and score several models over several seeds on one saved split.

python -m monai_medspike.compare --bundle bundles/kvasir --dataset_dir <Kvasir-SEG folder> \\
    --models student,teacher,student_no_align,basicunet,unet --seeds 0 1 2 --epochs 10 --out results/kvasir

Every (model, seed) trains with the bundle's workflow (same split, transforms, budget and model selection by the
best validation Dice), then scores the test split at the training size and at each image's original size.
Writes ``<out>/runs/<model>-seed<seed>/`` (one per job: checkpoints, TensorBoard, ``<model>.csv`` per-image
scores, ``result.json``), then ``<out>/summary.json``, ``<out>/results.md`` and two plots. A rerun skips the
finished jobs. See docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from monai_medspike.compare.jobs import DAMAGED_RESULT
from monai_medspike.compare.models import MODELS, jobs_for
from monai_medspike.data.io import read_json
from monai_medspike.utils import Progress, command_arguments

__all__ = ["main", "plan_jobs"]

logger = logging.getLogger("monai_medspike.compare")

DEFAULT_MODELS = "student,teacher,student_no_align,basicunet"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m monai_medspike.compare", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="bundle folder, e.g. bundles/kvasir (with --report_only: the finished jobs' one)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset_dir", help="release folder (split with the bundle's defaults and --split_seed)")
    data.add_argument("--datalist", help="a datalist with training, validation and test lists")
    p.add_argument("--test_datalist", help="an external test set: the 'test' list of this datalist is scored")
    p.add_argument("--models", help=f"comma-separated, from: {', '.join(MODELS)} (default: {DEFAULT_MODELS}; with "
                   "--report_only: the finished jobs' models)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the train/validation/test split (default 0)")
    p.add_argument("--epochs", type=int, help="epochs of each phase (default: the bundle's)")
    p.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), help="training size (default: the bundle's)")
    p.add_argument("--batch_size", type=int, help="default: the bundle's")
    p.add_argument("--learning_rate", type=float, help="default: the bundle's")
    p.add_argument("--set", action="append", default=[], metavar="ID=JSON",
                   help="any other bundle override, e.g. --set lambda_align=0.5 (repeatable)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--jobs", type=int, default=1, help="jobs run at once, each in its own process (default 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, or a list (cuda:0,cuda:1) given to the jobs in turn")
    p.add_argument("--report_only", action="store_true", help="only rewrite the report from the finished jobs")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("epochs", "batch_size", "learning_rate"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    if args.image_size:
        out["image_size"] = list(args.image_size)
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {item!r}: write ID=VALUE, e.g. --set lambda_align=0.5")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def plan_jobs(args: argparse.Namespace, datalist: Path) -> list[dict[str, Any]]:
    """One job per model (see :func:`.models.jobs_for`) and seed, with its folder, device and CPU threads."""
    import torch

    devices = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).split(",")
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    overrides = _overrides(args)
    jobs = []
    for spec in jobs_for(args.models.split(",")):
        for seed in args.seeds:
            jobs.append(
                {
                    "model": spec.name, "phase": spec.phase, "rows": spec.rows, "seed": seed,
                    "folder": str(Path(args.out) / "runs" / f"{spec.name}-seed{seed}"),
                    "bundle": str(Path(args.bundle).resolve()), "datalist": str(datalist),
                    "device": devices[len(jobs) % len(devices)], "threads": threads, "overrides": overrides,
                }
            )  # fmt: skip
    return jobs


def _finished_jobs(out: Path) -> list[dict[str, Any]]:
    """The jobs of the finished runs under ``out/runs`` (each ``result.json`` keeps its job: bundle, model, seed,
    settings), in the order they were planned.

    Raises:
        FileNotFoundError: no finished job there.
    """
    done = sorted((out / "runs").glob("*/result.json"))
    if not done:
        raise FileNotFoundError(f"no finished job under {out / 'runs'}; run the comparison first.")
    jobs = []
    for path in done:
        try:
            jobs.append(
                read_json(
                    path,
                    DAMAGED_RESULT,
                )["job"]
            )
        except KeyError as e:
            raise ValueError(
                f"{path} is not a finished job's result ({e}); remove it and run the comparison again."
            ) from None
    return jobs


def _run(job: dict[str, Any]) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from monai_medspike.compare.jobs import run_job

    return run_job(job)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(command_arguments(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from monai_medspike.compare.jobs import prepare_split
    from monai_medspike.compare.report import write_report

    out = Path(args.out)
    try:
        given_models = args.models is not None
        if args.report_only:
            finished = _finished_jobs(out)
            args.bundle = args.bundle or finished[0]["bundle"]
            args.models = args.models or ",".join(dict.fromkeys(job["model"] for job in finished))
        args.models = args.models or DEFAULT_MODELS
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        jobs_for(names)  # refuse unknown names before any work
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}.")
        if not args.report_only:
            if not args.bundle or not Path(args.bundle, "configs", "train.json").is_file():
                raise FileNotFoundError(f"--bundle {args.bundle}: no configs/train.json there; pass a bundle folder.")
            overrides = _overrides(args)
            from monai.bundle import ConfigParser

            from monai_medspike.workflows import check_overrides

            train = Path(args.bundle, "configs", "train.json")  # unknown ids and bad values, before any work
            check_overrides(ConfigParser.load_config_file(str(train)), overrides, source=str(train))
            datalist = prepare_split(
                out, args.bundle, args.dataset_dir, args.datalist, args.test_datalist, args.split_seed, overrides
            )
            jobs = plan_jobs(args, datalist)
            todo = [j for j in jobs if not (Path(j["folder"]) / "result.json").is_file()]
            logger.info("%d job(s), %d finished, %d to run, %d at once", len(jobs), len(jobs) - len(todo), len(todo),
                        args.jobs)  # fmt: skip
            progress = Progress("finished", "jobs", len(todo), every=0.0, log=logger)  # a line per finished job
            if args.jobs == 1:
                for done, job in enumerate(todo, 1):
                    _run(job)
                    logger.info("finished %s seed %s", job["model"], job["seed"])
                    progress.step(done)
            else:
                with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
                    for done, (job, future) in enumerate([(j, pool.submit(_run, j)) for j in todo], 1):
                        future.result()
                        logger.info("finished %s seed %s", job["model"], job["seed"])
                        progress.step(done)
        order = [name for spec in jobs_for(names) for name in spec.rows.values()]
        command = shlex.join(["python", "-m", "monai_medspike.compare", *(sys.argv[1:] if argv is None else argv)])
        if args.report_only and not given_models:
            order = list(dict.fromkeys(name for job in finished for name in job["rows"].values()))
            if (out / "summary.json").is_file():  # the order of the run that trained the jobs
                earlier = read_json(out / "summary.json", "remove it; the report is written again from the jobs.")
                order = list(dict.fromkeys([*(m for m in earlier.get("models", {}) if m in order), *order]))
        if args.report_only and (out / "summary.json").is_file():  # the command that trained the jobs
            summary = read_json(out / "summary.json", "remove it; the report is written again from the jobs.")
            command = summary.get("info", {}).get("command", command)
        info = {"title": f"{Path(args.bundle).name}", "bundle": str(args.bundle), "command": command}
        write_report(out, info, order=order)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'results.md'}, {out / 'summary.json'} and the plots")
    return 0


if __name__ == "__main__":
    from monai_medspike.errors import run_command

    sys.exit(run_command(main))

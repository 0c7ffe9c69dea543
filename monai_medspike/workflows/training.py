"""The two-phase training of every bundle, defined once: the ANN teacher, then the spiking student aligned to it.

A bundle's ``train.json`` holds its dataset's keys and one ``TwoPhaseTraining`` component built from them; its
``training`` id calls :meth:`TwoPhaseTraining.run`. Each phase is the same definition (:meth:`TwoPhaseTraining.
build_phase`) with a different network, loss and output folder.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, load_decathlon_datalist
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    EarlyStopHandler,
    IgniteMetricHandler,
    LrScheduleHandler,
    MeanDice,
    MeanIoUHandler,
    StatsHandler,
    TensorBoardImageHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.transforms import Compose, Randomizable

from monai_medspike.bundle import find_checkpoint, is_main_process, run_dir, train_scalars
from monai_medspike.handlers import (
    BatchNormRecalibration,
    BestModelSaver,
    DivergenceGuard,
    FiringRateHandler,
    ResumableCheckpoint,
    TeacherLoader,
)
from monai_medspike.handlers.checkpoint import save_atomic
from monai_medspike.losses import DistributionAlignmentLoss, SegmentationAlignmentLoss

from .settings import stop_command_line

__all__ = [
    "CACHES",
    "PHASES",
    "Phase",
    "TwoPhaseTraining",
    "load_resumable",
    "make_dataset",
    "publish_model",
    "resolve_resume",
    "trained_epochs",
]

logger = logging.getLogger(__name__)

PHASES = ("teacher", "student")
CHECKPOINT = "last.pt"
CACHES = (None, "memory", "disk")


def _cached_part(transform: Callable) -> str:
    """A hash of the transforms a cache holds the result of (those before the first random one): a change of any
    of their settings (e.g. the image size) gives another cache folder, never a stale entry."""
    chain = transform.transforms if isinstance(transform, Compose) else (transform,)
    cached = []
    for t in chain:
        if isinstance(t, Randomizable):
            break
        cached.append(t)
    return hashlib.sha1(pickle.dumps(cached)).hexdigest()[:12]


def make_dataset(data: list, transform: Callable, cache: str | None = None, cache_dir: str | Path = "cache") -> Dataset:
    """A MONAI dataset over ``data`` with ``transform``: plain (``cache=None``), ``CacheDataset`` (``"memory"``)
    or ``PersistentDataset`` under ``cache_dir`` (``"disk"``); the cached part is everything before the first
    random transform."""
    if cache is None:
        return Dataset(data=data, transform=transform)
    if cache == "memory":
        return CacheDataset(data=data, transform=transform, progress=False)
    if cache == "disk":
        return PersistentDataset(data=data, transform=transform, cache_dir=Path(cache_dir) / _cached_part(transform))
    raise ValueError(f"cache must be one of {', '.join(map(str, CACHES))}; got {cache!r}.")


def publish_model(model: str | Path, ckpt_dir: str | Path) -> Path | None:
    """Copy a run's ``model.pt`` to ``<ckpt_dir>/model.pt`` atomically (the bundle's model, model-zoo layout).

    Returns the published file, or None when the run saved no model (no finite validation).
    """
    model = Path(model)
    if not model.is_file():
        logger.warning("%s was not written (no finite validation); nothing published to %s", model, ckpt_dir)
        return None
    target = Path(ckpt_dir) / "model.pt"
    save_atomic(torch.load(model, map_location="cpu", weights_only=True), target)
    logger.info("published %s as %s", model, target)
    return target


def trained_epochs(state: dict) -> tuple[int, int]:
    """``(epochs done, epochs planned)`` of a resumable checkpoint (ignite keeps the iteration, not the epoch)."""
    trainer = state["trainer"]
    return int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1), int(trainer["max_epochs"])


def load_resumable(path: Path) -> dict:
    """The content of a resumable checkpoint, checked to hold what resuming needs.

    Raises:
        ValueError: ``path`` is another kind of checkpoint (e.g. a ``model.pt``), naming what it lacks.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [
        k for k in ("model", "optimizer", "lr_scheduler", "trainer") if not isinstance(state, dict) or k not in state
    ]
    if missing:
        raise ValueError(
            f"--resume_from {path} is not a resumable checkpoint (it lacks {', '.join(missing)}); give the run "
            f"folder or its {CHECKPOINT}, not model.pt."
        )
    return state


def resolve_resume(resume_from: str | Path | None) -> Path | None:
    """The resumable checkpoint that ``--resume_from`` names: a ``last.pt`` file, or a run folder holding one.

    Raises:
        FileNotFoundError: nothing there to resume, with what the folder (or its parent) holds.
    """
    if resume_from is None or resume_from == "":
        return None
    path = Path(resume_from)
    if path.is_dir():
        if (path / CHECKPOINT).is_file():
            return (path / CHECKPOINT).resolve()
        held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if not p.name.startswith("."))
        runs = sorted(p.name for p in path.glob("*-*") if (p / CHECKPOINT).is_file())
        hint = (
            f" Runs there that can be resumed: {', '.join(runs)}."
            if runs
            else " A run writes it at the end of each epoch; one killed in its first epoch has nothing to resume."
        )
        raise FileNotFoundError(
            f"--resume_from {path}: no {CHECKPOINT} in this folder (it holds: {', '.join(held) or 'nothing'}).{hint}"
        )
    if path.is_file():
        return path.resolve()
    parent = path.parent
    runs = sorted(p.name for p in parent.glob("*-*") if (p / CHECKPOINT).is_file()) if parent.is_dir() else []
    where = f" Resumable runs in {parent}: {', '.join(runs)}." if runs else ""
    raise FileNotFoundError(
        f"--resume_from {path}: no such file or folder; give a run folder or its {CHECKPOINT}.{where}"
    )


@dataclass
class Phase:
    """The engines and handlers of one phase, as :meth:`TwoPhaseTraining.build_phase` wires them."""

    name: str
    output_dir: str
    network: torch.nn.Module  # the network that is trained and saved
    train_network: torch.nn.Module  # what the trainer runs (the network, with its teacher, maybe in DDP)
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    trainer: SupervisedTrainer
    evaluator: SupervisedEvaluator
    checkpoint: ResumableCheckpoint


class TwoPhaseTraining:
    """Train the ANN teacher, then the spiking student aligned to it (distribution alignment), or one of them.

    Each phase trains with Adam and ``ReduceLROnPlateau`` on the validation loss, validates every ``val_interval``
    epochs after re-estimating batch-norm statistics, keeps the best network by validation Dice as
    ``<run>/model.pt``, writes a resumable ``<run>/last.pt`` atomically at the end of every epoch, stops early when
    the Dice stalls, and stops with an error at the first non-finite loss, gradient or weight. Runs go to
    ``<output_root>/teacher-<run_id>`` and ``<output_root>/student-<run_id>``.

    Args:
        network_def: the spiking student (``MedSpikeFormer``).
        teacher_def: its ANN teacher (``MedSpikeFormer(spiking=False)``, or any MONAI network for ``phase="teacher"``).
        datalist_file: the datalist with ``training`` and ``validation`` lists.
        train_transforms, val_transforms: the transform chains of the two lists.
        inferer: validation inferer.
        postprocessing: turns ``pred``/``label`` into discrete masks (keeps ``logits``/``label_index`` for the loss).
        out_channels: the networks' output channels (1: sigmoid, more: softmax).
        device: where to train.
        output_root: the folder of the runs.
        run_id: names the run folders (the same for both phases).
        phase: ``"teacher"``, ``"student"`` or ``"both"``.
        epochs, val_interval, batch_size, num_workers, learning_rate, lr_patience: the budget.
        early_stop_patience, early_stop_min_delta: stop when the validation Dice has not improved by more than
            ``early_stop_min_delta`` for ``early_stop_patience`` validations.
        lambda_align: weight of the alignment loss (0: the student trains alone, no teacher is needed).
        align_stages: encoder stages whose side outputs are aligned.
        lambda_side: weight of the deep supervision of the teacher's side heads in the teacher phase (their masks are
            what the student is aligned to; 0: they stay as initialised, as in the published code); a teacher without
            side outputs (a MONAI network) ignores it.
        init_from_teacher: the student starts from its teacher's weights (the ANN twin has the student's parameters)
            instead of a random initialisation; needs the teacher checkpoint even with ``lambda_align`` 0.
        teacher_checkpoint: the teacher for the student phase; default: this run's teacher (``both``) or the newest
            ``teacher-*/model.pt`` under ``output_root``.
        bn_recalibration_batches: training batches for batch-norm re-estimation (None: all; 0: off).
        run_name: the run folder's name instead of ``<phase>-<run_id>`` (single phase only).
        overwrite: allow writing into a non-empty run folder.
        resume_from: a run folder or its ``last.pt`` to continue (see :func:`resolve_resume`).
        distributed: wrap the network in ``DistributedDataParallel`` and shard the data (``torchrun``).
        ddp_kwargs: keyword arguments for ``DistributedDataParallel``.
        cache: ``None`` reads and decodes every image at every epoch (MONAI ``Dataset``); ``"memory"`` keeps
            each sample's result up to the first random transform in memory (``CacheDataset``); ``"disk"`` keeps it
            under ``<output_root>/cache/<hash of those transforms>/`` (``PersistentDataset``, reused by later runs).
        train_data, val_data: ``[{"image": ..., "label": ...}, ...]`` lists used instead of the datalist's
            ``training`` and ``validation`` lists (the bundle ids ``train#dataset#data`` and
            ``validate#dataset#data``, which MONAI Label's ``BundleTrainTask`` sets). An empty ``val_data`` with
            ``train_data`` validates on the training data.
        train_handlers: further Ignite handlers attached to the trainer of the last phase this run trains (the
            bundle id ``train#handlers``; MONAI Label puts its ``CheckpointLoader`` there).
        ckpt_dir: where the best student is published as ``model.pt`` when its phase ends (atomically), the file
            evaluation, inference, ``ckpt_export`` and MONAI Label load by default; None: not published.
    """

    def __init__(
        self,
        network_def: torch.nn.Module,
        teacher_def: torch.nn.Module,
        datalist_file: str,
        train_transforms: Callable,
        val_transforms: Callable,
        inferer: Any,
        postprocessing: Callable,
        out_channels: int,
        device: torch.device | str,
        output_root: str,
        run_id: str,
        phase: str = "both",
        epochs: int = 10,
        val_interval: int = 1,
        batch_size: int = 2,
        num_workers: int = 0,
        learning_rate: float = 1e-3,
        lr_patience: int = 30,
        early_stop_patience: int = 100,
        early_stop_min_delta: float = 0.0,
        lambda_align: float = 1.0,
        align_stages: Sequence[int] = (0, 1, 2, 3),
        lambda_side: float = 1.0,
        init_from_teacher: bool = False,
        teacher_checkpoint: str | None = None,
        bn_recalibration_batches: int | None = None,
        run_name: str | None = None,
        overwrite: bool | str = False,
        resume_from: str | None = None,
        distributed: bool = False,
        ddp_kwargs: dict | None = None,
        cache: str | None = None,
        train_data: Sequence[dict] | None = None,
        val_data: Sequence[dict] | None = None,
        train_handlers: Sequence[Any] | None = None,
        ckpt_dir: str | None = None,
    ) -> None:
        if phase not in (*PHASES, "both"):
            raise ValueError(f"--phase must be one of teacher, student, both; got {phase!r}.")
        self.networks = {"teacher": teacher_def, "student": network_def}
        self.datalist_file = datalist_file
        self.transforms = {"training": train_transforms, "validation": val_transforms}
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.out_channels = int(out_channels)
        self.activation = "sigmoid" if self.out_channels == 1 else "softmax"
        self.device = torch.device(device)
        self.output_root = str(output_root)
        self.run_id = run_id
        self.phase = phase
        self.epochs = int(epochs)
        self.val_interval = int(val_interval)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.learning_rate = float(learning_rate)
        self.lr_patience = int(lr_patience)
        self.early_stop_patience = int(early_stop_patience)
        self.early_stop_min_delta = float(early_stop_min_delta)
        self.lambda_align = float(lambda_align)
        self.align_stages = list(align_stages)
        self.lambda_side = float(lambda_side)
        self.init_from_teacher = bool(init_from_teacher)
        self.teacher_checkpoint = teacher_checkpoint
        self.bn_recalibration_batches = bn_recalibration_batches
        self.run_name = run_name
        self.overwrite = overwrite
        self.resume_from = resume_from
        self.distributed = bool(distributed)
        self.ddp_kwargs = dict(ddp_kwargs or {})
        if cache not in CACHES:
            raise ValueError(f"--cache must be one of {', '.join(map(str, CACHES))}; got {cache!r}.")
        self.cache = cache
        self.data = {"training": train_data, "validation": val_data}
        if train_data is not None and not train_data:
            raise ValueError("train#dataset#data is empty; give at least one {'image': ..., 'label': ...} pair.")
        self.train_handlers = list(train_handlers or [])
        self.ckpt_dir = ckpt_dir
        #: per phase trained by :meth:`run`: ``seconds`` (training with its validations), ``epochs`` (reached),
        #: ``best_val_dice`` and ``best_epoch``
        self.history: dict[str, dict[str, float]] = {}
        self._loaders: dict[str, DataLoader] = {}

    # ----------------------------------------------------------------------------------------------- data
    def loader(self, split: str) -> DataLoader:
        """The data loader of ``split`` (``"training"`` shuffled, ``"validation"`` in order), built once."""
        if split not in self._loaders:
            data = self.data[split]
            if data is None:
                data = load_decathlon_datalist(self.datalist_file, data_list_key=split)
            elif not data:  # no validation list of its own (MONAI Label with one study): validate on training
                logger.warning("no validation data given; validating on the training data")
                data = self.data["training"]
            data = list(data)
            dataset = make_dataset(data, self.transforms[split], self.cache, Path(self.output_root) / "cache")
            training = split == "training"
            sampler = None
            if self.distributed:
                from monai.data import DistributedSampler

                sampler = DistributedSampler(dataset, even_divisible=training, shuffle=training)
            self._loaders[split] = DataLoader(
                dataset,
                batch_size=self.batch_size if training else 1,
                shuffle=training and sampler is None,
                sampler=sampler,
                num_workers=self.num_workers,
            )
        return self._loaders[split]

    # ----------------------------------------------------------------------------------------------- phases
    def phases(self) -> list[str]:
        """The phases this run trains, in order."""
        return list(PHASES) if self.phase == "both" else [self.phase]

    def phase_dir(self, name: str) -> str:
        """The run folder of phase ``name`` (checked to be free unless ``overwrite``)."""
        folder = self.run_name if (self.run_name and self.phase == name) else f"{name}-{self.run_id}"
        return run_dir(self.output_root, folder, self.overwrite)

    def student_teacher_checkpoint(self) -> str | None:
        """The teacher checkpoint the student aligns to."""
        if self.teacher_checkpoint:
            return str(self.teacher_checkpoint)
        if self.phase == "both":
            return str(Path(self.output_root) / f"teacher-{self.run_id}" / "model.pt")
        return find_checkpoint(self.output_root, "teacher")

    def _wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        if not self.distributed:
            return network
        kwargs = dict(self.ddp_kwargs)
        if self.device.type == "cuda":
            kwargs.setdefault("device_ids", [self.device])
        return torch.nn.parallel.DistributedDataParallel(network, **kwargs)

    def build_phase(
        self,
        name: str,
        output_dir: str | None = None,
        teacher_checkpoint: str | None = None,
        teacher_state: dict | None = None,
    ) -> Phase:
        """Wire the trainer, evaluator and handlers of phase ``name`` (``"teacher"`` or ``"student"``).

        The student's teacher is loaded from ``teacher_checkpoint`` when training starts, or from ``teacher_state``
        (the teacher kept in a resumed student's ``last.pt``) at once.
        """
        if name not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {name!r}.")
        student = name == "student"
        output_dir = output_dir or self.phase_dir(name)
        network = self.networks[name].to(self.device)
        align = student and self.lambda_align > 0
        init = student and self.init_from_teacher  # TeacherLoader leaves a resumed student's weights alone
        side = not student and self.lambda_side > 0 and hasattr(network, "forward_with_side_outputs")
        handlers: list[Any] = []
        extra: dict[str, Any] = {}
        hint = "Train it first (--phase teacher or --phase both), pass --teacher_checkpoint <model.pt>, or set " + (
            "--lambda_align 0." if align else "init_from_teacher false."
        )
        from monai_medspike.networks.nets import DistributionAlignmentNet

        if align:
            teacher = self.networks["teacher"].to(self.device)
            teacher_checkpoint = teacher_checkpoint or self.student_teacher_checkpoint()
            # the teacher travels with the student's checkpoint: a resume needs no teacher file
            extra.update(teacher_checkpoint=teacher_checkpoint, teacher=teacher.state_dict)
            if teacher_state is not None:
                teacher.load_state_dict(teacher_state)
                teacher.eval()
                logger.info("teacher restored from the resumed checkpoint (trained as %s)", teacher_checkpoint)
            else:
                start = network if init else None
                handlers.append(TeacherLoader(teacher, teacher_checkpoint, hint=hint, student=start))
            train_network = self._wrap(DistributionAlignmentNet(network, teacher))
        elif side:
            train_network = self._wrap(DistributionAlignmentNet(network))  # no teacher: the side outputs only
        else:
            if init:
                teacher_checkpoint = teacher_checkpoint or self.student_teacher_checkpoint()
                handlers.append(TeacherLoader(None, teacher_checkpoint, hint=hint, student=network))
            train_network = self._wrap(network)
        alignment = DistributionAlignmentLoss(stages=self.align_stages, activation=self.activation) if align else None
        loss = SegmentationAlignmentLoss(
            activation=self.activation,
            lambda_align=self.lambda_align if align else 0.0,
            alignment=alignment,
            lambda_side=self.lambda_side if side else 0.0,
        )
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        lr_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", patience=self.lr_patience)
        main = is_main_process()
        tb_dir = f"{output_dir}/tb"
        evaluator = self._evaluator(train_network, network, output_dir, tb_dir if main else None)
        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=self.epochs,
            train_data_loader=self.loader("training"),
            network=train_network,
            optimizer=optimizer,
            loss_function=loss,
            decollate=False,
        )
        checkpoint = ResumableCheckpoint(
            output_dir,
            {"model": network, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "trainer": trainer},
            extra=lambda: {
                "phase": name,
                "run_id": self.run_id,
                "learning_rate": self.learning_rate,
                "best": {
                    "best_metric": float(getattr(evaluator.state, "best_metric", -1.0)),
                    "best_metric_epoch": int(getattr(evaluator.state, "best_metric_epoch", -1)),
                },
                **{key: value() if callable(value) else value for key, value in extra.items()},
            },
        )
        scalars = lambda output: train_scalars(output, loss, optimizer)  # noqa: E731
        handlers += [
            DivergenceGuard(network, name, checkpoint.path, self.learning_rate),
            BatchNormRecalibration(
                network, self.loader("training"), num_batches=self.bn_recalibration_batches, interval=self.val_interval
            ),
            ValidationHandler(validator=evaluator, epoch_level=True, interval=self.val_interval),
            LrScheduleHandler(
                lr_scheduler, print_lr=True, step_transform=lambda engine: evaluator.state.metrics["val_loss"]
            ),
            checkpoint,
        ]
        if main:
            handlers += [
                StatsHandler(output_transform=scalars),
                TensorBoardStatsHandler(log_dir=tb_dir, output_transform=scalars),
            ]
            if student:
                handlers.append(FiringRateHandler(network, log_dir=tb_dir))
            if sys.stderr.isatty():
                from ignite.handlers import ProgressBar

                handlers.append(ProgressBar(persist=True))
        if name == self.phases()[-1]:
            handlers += self.train_handlers
        for handler in handlers:
            handler.attach(trainer)
        EarlyStopHandler(
            patience=self.early_stop_patience,
            min_delta=self.early_stop_min_delta,
            score_function=lambda engine: engine.state.metrics["val_mean_dice"],
            trainer=trainer,
            epoch_level=True,
        ).attach(evaluator)
        return Phase(name, output_dir, network, train_network, loss, optimizer, lr_scheduler, trainer, evaluator,
                     checkpoint)  # fmt: skip

    def _evaluator(
        self, train_network: torch.nn.Module, network: torch.nn.Module, output_dir: str, tb_dir: str | None
    ) -> SupervisedEvaluator:
        background = self.out_channels == 1
        pair = from_engine(["pred", "label"])
        val_loss = SegmentationAlignmentLoss(activation=self.activation, lambda_align=0.0)
        val_handlers: list[Any] = []
        if tb_dir is not None:
            val_handlers += [
                StatsHandler(iteration_log=False),
                TensorBoardStatsHandler(log_dir=tb_dir, iteration_log=False),
                TensorBoardImageHandler(
                    log_dir=tb_dir,
                    batch_transform=from_engine(["image", "label"]),
                    output_transform=from_engine(["pred"]),
                    max_channels=1,
                    frame_dim=-1,
                    epoch_level=True,
                ),
            ]
        val_handlers.append(BestModelSaver(network, output_dir))
        return SupervisedEvaluator(
            device=self.device,
            val_data_loader=self.loader("validation"),
            network=train_network,
            inferer=self.inferer,
            postprocessing=self.postprocessing,
            key_val_metric={"val_mean_dice": MeanDice(include_background=background, output_transform=pair)},
            additional_metrics={
                "val_mean_iou": MeanIoUHandler(include_background=background, output_transform=pair),
                "val_loss": IgniteMetricHandler(
                    loss_fn=val_loss, output_transform=from_engine(["logits", "label_index"])
                ),
            },
            val_handlers=val_handlers,
        )

    # ----------------------------------------------------------------------------------------------- running
    def run(self) -> dict[str, str]:
        """Train the phases (resuming where ``resume_from`` says); returns ``{phase: run folder}``."""
        resume = resolve_resume(self.resume_from)
        state = load_resumable(resume) if resume else None
        todo = self.phases()
        if state is not None and state.get("phase") == "teacher" and self.phase == "both":
            student = resume.parent.parent / f"student-{state.get('run_id')}" / CHECKPOINT
            if student.is_file():  # the student of this run had started too: continue it
                resume, state = student, load_resumable(student)
        resumed_phase = None
        if state is not None:
            resumed_phase = state.get("phase") or (self.phase if self.phase != "both" else None)
            if resumed_phase not in PHASES:
                raise ValueError(
                    f"--resume_from {resume} does not say which phase it holds (an older checkpoint); "
                    "add --phase teacher or --phase student."
                )
            if resumed_phase not in todo:
                raise ValueError(
                    f"--resume_from {resume} holds the {resumed_phase} phase but --phase is {self.phase}; "
                    f"use --phase {resumed_phase} or --phase both."
                )
            todo = todo[todo.index(resumed_phase) :]
            self.run_id = state.get("run_id") or self.run_id
        folders: dict[str, str] = {}
        for name in todo:
            if state is not None and name == resumed_phase:
                folder = str(resume.parent)
                done, planned = trained_epochs(state)
                if done >= self.epochs or (state.get("finished") and done < planned):
                    how = "stopped early after" if done < min(planned, self.epochs) else "has trained"
                    logger.info(
                        "the %s in %s %s %d epoch(s) (--epochs %d); not trained again", name, folder, how, done,
                        self.epochs,
                    )  # fmt: skip
                    folders[name] = folder
                    continue
                phase = self.build_phase(name, folder, state.get("teacher_checkpoint"), state.get("teacher"))
                self._load(phase, state, resume)
            else:
                if name == "student" and resumed_phase == "teacher":
                    # the teacher of this run has just been resumed: the student goes beside it
                    folder = resume.parent.parent / f"student-{self.run_id}"
                    teacher = str(resume.parent / "model.pt")
                    if folder.is_dir() and any(folder.iterdir()):  # killed in its first epoch: nothing to keep
                        logger.info("the student in %s wrote no checkpoint; it starts again", folder)
                    phase = self.build_phase(name, str(folder), teacher)
                else:
                    phase = self.build_phase(name)
            logger.info("training the %s in %s", name, phase.output_dir)
            try:
                phase.trainer.run()
            except FloatingPointError as error:  # DivergenceError, or a non-finite network at validation
                stop_command_line(error, status=1)
                raise
            folders[name] = phase.output_dir
            self.history[name] = {
                "seconds": float(phase.trainer.state.times.get("COMPLETED") or 0.0),
                "epochs": int(phase.trainer.state.epoch),
                "best_val_dice": float(getattr(phase.evaluator.state, "best_metric", -1.0)),
                "best_epoch": int(getattr(phase.evaluator.state, "best_metric_epoch", -1)),
            }
            del phase
        if "student" in folders and self.ckpt_dir and is_main_process():
            publish_model(Path(folders["student"]) / "model.pt", self.ckpt_dir)
        return folders

    def _load(self, phase: Phase, state: dict, path: Path) -> None:
        phase.network.load_state_dict(state["model"])
        phase.optimizer.load_state_dict(state["optimizer"])
        phase.lr_scheduler.load_state_dict(state["lr_scheduler"])
        phase.trainer.load_state_dict(state["trainer"])
        phase.trainer.state.max_epochs = self.epochs
        if state.get("learning_rate") not in (None, self.learning_rate):
            for group in phase.optimizer.param_groups:
                group["lr"] = self.learning_rate
            logger.info("learning rate set to --learning_rate %g (the run started at %g)", self.learning_rate,
                        state["learning_rate"])  # fmt: skip
        best = state.get("best", {})
        phase.evaluator.state.best_metric = best.get("best_metric", -1.0)
        phase.evaluator.state.best_metric_epoch = best.get("best_metric_epoch", -1)
        logger.info(
            "resuming the %s from %s at epoch %d (best val_mean_dice %.4f at epoch %d)",
            phase.name, path, phase.trainer.state.epoch + 1, phase.evaluator.state.best_metric,
            phase.evaluator.state.best_metric_epoch,
        )  # fmt: skip

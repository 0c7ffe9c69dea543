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
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    EarlyStopHandler,
    IgniteMetricHandler,
    LrScheduleHandler,
    MeanDice,
    MeanIoUHandler,
    TensorBoardImageHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.transforms import Compose, Randomizable

from monai_medspike.checkpoints import (
    CheckpointError,
    check_resume,
    make_record,
    read_checkpoint,
    save_atomic,
    warn_unrecorded,
)
from monai_medspike.data.checks import load_datalist
from monai_medspike.distributed import is_main_process, run_stamp
from monai_medspike.errors import UserError
from monai_medspike.handlers import (
    BatchNormRecalibration,
    BestModelSaver,
    DivergenceGuard,
    FiringRateHandler,
    ResumableCheckpoint,
    StatsHandler,
    TeacherLoader,
)
from monai_medspike.losses import DistributionAlignmentLoss, SegmentationAlignmentLoss
from monai_medspike.runs import CHECKPOINT, find_checkpoint, folder_lock, resolve_resume, run_dir
from monai_medspike.settings import SETTINGS, SettingsError, complete_group
from monai_medspike.utils import stop_command_line

__all__ = [
    "CACHES",
    "PHASES",
    "Phase",
    "TwoPhaseTraining",
    "load_resumable",
    "make_dataset",
    "publish_model",
    "resolve_resume",
    "train_scalars",
    "trained_epochs",
]

logger = logging.getLogger(__name__)

PHASES = ("teacher", "student")
CACHES = SETTINGS["cache"].rule.choices


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


def trained_epochs(state: dict) -> tuple[int, int]:
    """``(epochs done, epochs planned)`` of a resumable checkpoint (ignite keeps the iteration, not the epoch)."""
    trainer = state["trainer"]
    return int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1), int(trainer["max_epochs"])


def load_resumable(path: Path) -> dict:
    """The content of a resumable checkpoint, checked to hold what resuming needs.

    Raises:
        CheckpointError: ``path`` is unreadable (naming it), or another kind of checkpoint (e.g. a ``model.pt``),
            naming what it lacks.
    """
    _, _, state = read_checkpoint(path)
    missing = [
        k for k in ("model", "optimizer", "lr_scheduler", "trainer") if not isinstance(state, dict) or k not in state
    ]
    if missing:
        raise CheckpointError(
            f"--resume_from {path} is not a resumable checkpoint (it lacks {', '.join(missing)}); give the run "
            f"folder or its {CHECKPOINT}, not model.pt."
        )
    return state


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
    ``<output_root>/teacher-<run_id>`` and ``<output_root>/student-<run_id>``. Both files carry the record of the
    network and of the run's settings (:mod:`monai_medspike.checkpoints`), which evaluation, inference and MONAI
    Label read back, and which a resumed run is compared with.

    The settings come in three groups, each a dict of the settings declared in :mod:`monai_medspike.settings`
    (missing ones take their declared defaults; a bundle's ``workflow`` block passes every one):

    - ``data``: ``dataset``, ``classes``, ``label_names``, ``image_size``, ``cache``, ``num_workers``, ... (what the
      transforms were built from is recorded; ``cache`` and ``num_workers`` shape the loaders);
    - ``training``: ``phase``, ``epochs``, ``val_interval``, ``batch_size``, ``learning_rate``, ``lr_patience``,
      ``early_stop_patience``, ``early_stop_min_delta``, ``lambda_align``, ``lambda_side``, ``align_stages``,
      ``init_from_teacher``, ``teacher_checkpoint``, ``bn_recalibration_batches``;
    - ``run``: ``output_root`` (required), ``run_id``, ``run_name``, ``overwrite``, ``resume_from``, ``ckpt_dir``
      (where the best student is published as ``model.pt``), ``device``, ``distributed`` (``torchrun``),
      ``ddp_kwargs``, ``bundle_name``, ``seed``.

    The network group is what ``network_def`` is (its arguments are recorded from the network itself).

    Args:
        network_def: the spiking student (``MedSpikeFormer``).
        teacher_def: its ANN teacher (``MedSpikeFormer(spiking=False)``, or any MONAI network for ``phase="teacher"``).
        datalist_file: the datalist with ``training`` and ``validation`` lists.
        train_transforms, val_transforms: the transform chains of the two lists.
        inferer: validation inferer.
        postprocessing: turns ``pred``/``label`` into discrete masks (keeps ``logits``/``label_index`` for the loss).
        data, training, run: the settings groups above.
        train_data, val_data: ``[{"image": ..., "label": ...}, ...]`` lists used instead of the datalist's
            ``training`` and ``validation`` lists (the bundle ids ``train#dataset#data`` and
            ``validate#dataset#data``, which MONAI Label's ``BundleTrainTask`` sets). An empty ``val_data`` with
            ``train_data`` validates on the training data.
        train_handlers: further Ignite handlers attached to the trainer of the last phase this run trains (the
            bundle id ``train#handlers``; MONAI Label puts its ``CheckpointLoader`` there).

    Raises:
        SettingsError: a key that is no setting of its group, or a bad value.
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
        data: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        train_data: Sequence[dict] | None = None,
        val_data: Sequence[dict] | None = None,
        train_handlers: Sequence[Any] | None = None,
    ) -> None:
        self.settings = {
            "data": complete_group("data", data, config="train"),
            "training": complete_group("training", training, config="train"),
            "run": complete_group("run", run, config="train", required=("output_root",)),
        }
        self.training = self.settings["training"]
        self.run_settings = self.settings["run"]
        self.networks = {"teacher": teacher_def, "student": network_def}
        self.datalist_file = datalist_file
        self.transforms = {"training": train_transforms, "validation": val_transforms}
        self.inferer = inferer
        self.postprocessing = postprocessing
        out_channels = getattr(network_def, "out_channels", None)
        if not isinstance(out_channels, int):
            raise ValueError("network_def must be a MedSpikeFormer (its out_channels decides sigmoid or softmax).")
        self.out_channels = out_channels
        self.activation = "sigmoid" if self.out_channels == 1 else "softmax"
        device = self.run_settings.get("device")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.output_root = str(self.run_settings["output_root"])
        self.run_id = self.run_settings.get("run_id") or run_stamp()
        self.phase = self.training["phase"]
        self.lists = {"training": train_data, "validation": val_data}
        if train_data is not None and not train_data:
            raise ValueError("train#dataset#data is empty; give at least one {'image': ..., 'label': ...} pair.")
        self.train_handlers = list(train_handlers or [])
        #: per phase trained by :meth:`run`: ``seconds`` (training with its validations), ``epochs`` (reached),
        #: ``best_val_dice`` and ``best_epoch``
        self.history: dict[str, dict[str, float]] = {}
        self._loaders: dict[str, DataLoader] = {}
        self._current: str | None = None  # the run folder of the phase being trained

    def record(self, name: str) -> dict[str, Any]:
        """The record of phase ``name``'s network and of this run's settings, saved with its checkpoints."""
        student = getattr(self.networks["student"], "arguments", {})
        channels = {k: student[k] for k in ("in_channels", "out_channels") if k in student}
        groups = {"network": channels, **self.settings}
        return make_record(self.networks[name], name, self.run_settings.get("bundle_name"), groups)

    # ----------------------------------------------------------------------------------------------- data
    def loader(self, split: str) -> DataLoader:
        """The data loader of ``split`` (``"training"`` shuffled, ``"validation"`` in order), built once."""
        if split not in self._loaders:
            data = self.lists[split]
            if data is None:
                data_settings = self.settings["data"]
                options = data_settings.get("data_options")
                data = load_datalist(self.datalist_file, split, data_settings.get("dataset"), options)
            elif not data:  # no validation list of its own (MONAI Label with one study): validate on training
                logger.warning("no validation data given; validating on the training data")
                data = self.lists["training"]
            data = list(data)
            dataset = make_dataset(
                data, self.transforms[split], self.settings["data"]["cache"], Path(self.output_root) / "cache"
            )
            training = split == "training"
            sampler = None
            if self.run_settings["distributed"]:
                from monai.data import DistributedSampler

                sampler = DistributedSampler(dataset, even_divisible=training, shuffle=training)
            self._loaders[split] = DataLoader(
                dataset,
                batch_size=self.training["batch_size"] if training else 1,
                shuffle=training and sampler is None,
                sampler=sampler,
                num_workers=self.settings["data"]["num_workers"],
            )
        return self._loaders[split]

    # ----------------------------------------------------------------------------------------------- phases
    def phases(self) -> list[str]:
        """The phases this run trains, in order."""
        return list(PHASES) if self.phase == "both" else [self.phase]

    def phase_dir(self, name: str) -> str:
        """The run folder of phase ``name`` (checked to be free unless ``overwrite``)."""
        run_name = self.run_settings["run_name"]
        folder = run_name if (run_name and self.phase == name) else f"{name}-{self.run_id}"
        return run_dir(self.output_root, folder, self.run_settings["overwrite"])

    def student_teacher_checkpoint(self) -> str | None:
        """The teacher checkpoint the student aligns to."""
        if self.training["teacher_checkpoint"]:
            return str(self.training["teacher_checkpoint"])
        if self.phase == "both":
            return str(Path(self.output_root) / f"teacher-{self.run_id}" / "model.pt")
        return find_checkpoint(self.output_root, "teacher")

    def _wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        if not self.run_settings["distributed"]:
            return network
        kwargs = dict(self.run_settings["ddp_kwargs"])
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
        align = student and self.training["lambda_align"] > 0
        init = student and self.training["init_from_teacher"]  # TeacherLoader leaves a resumed student's weights alone
        side = not student and self.training["lambda_side"] > 0 and hasattr(network, "forward_with_side_outputs")
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
        stages = self.training["align_stages"]
        alignment = DistributionAlignmentLoss(stages=stages, activation=self.activation) if align else None
        loss = SegmentationAlignmentLoss(
            activation=self.activation,
            lambda_align=self.training["lambda_align"] if align else 0.0,
            alignment=alignment,
            lambda_side=self.training["lambda_side"] if side else 0.0,
        )
        optimizer = torch.optim.Adam(network.parameters(), lr=self.training["learning_rate"])
        lr_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", patience=self.training["lr_patience"]
        )
        main = is_main_process()
        tb_dir = f"{output_dir}/tb"
        evaluator = self._evaluator(train_network, network, output_dir, tb_dir if main else None, name)
        trainer = SupervisedTrainer(
            device=self.device,
            max_epochs=self.training["epochs"],
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
                "learning_rate": self.training["learning_rate"],
                "record": self.record(name),
                "best": {
                    "best_metric": float(getattr(evaluator.state, "best_metric", -1.0)),
                    "best_metric_epoch": int(getattr(evaluator.state, "best_metric_epoch", -1)),
                },
                **{key: value() if callable(value) else value for key, value in extra.items()},
            },
        )
        scalars = lambda output: train_scalars(output, loss, optimizer)  # noqa: E731
        handlers += [
            DivergenceGuard(network, name, checkpoint.path, self.training["learning_rate"]),
            BatchNormRecalibration(
                network,
                self.loader("training"),
                num_batches=self.training["bn_recalibration_batches"],
                interval=self.training["val_interval"],
            ),
            ValidationHandler(validator=evaluator, epoch_level=True, interval=self.training["val_interval"]),
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
            patience=self.training["early_stop_patience"],
            min_delta=self.training["early_stop_min_delta"],
            score_function=lambda engine: engine.state.metrics["val_mean_dice"],
            trainer=trainer,
            epoch_level=True,
        ).attach(evaluator)
        return Phase(name, output_dir, network, train_network, loss, optimizer, lr_scheduler, trainer, evaluator,
                     checkpoint)  # fmt: skip

    def _evaluator(
        self, train_network: torch.nn.Module, network: torch.nn.Module, output_dir: str, tb_dir: str | None, name: str
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
        val_handlers.append(BestModelSaver(network, output_dir, record=lambda: self.record(name)))
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
        """Train the phases (resuming where ``resume_from`` says); returns ``{phase: run folder}``.

        Under ``python -m monai.bundle`` a run that cannot go on for a reason the user can fix (a resume point of
        another bundle or with other settings, a damaged checkpoint: exit status 2; a diverging loss: 1) ends with
        one line saying why.
        """
        try:
            return self._run()
        except KeyboardInterrupt:
            raise UserError(self._interrupted()) from None
        except (CheckpointError, SettingsError, FileNotFoundError) as error:
            stop_command_line(error)
            raise
        except FloatingPointError as error:  # DivergenceError, or a non-finite network at validation
            stop_command_line(error, status=1)
            raise

    def _interrupted(self) -> str:
        """What an interrupted run says: where to resume, or that nothing can be."""
        folder = self._current
        if folder is not None and (Path(folder) / CHECKPOINT).is_file():
            return (
                f"interrupted (Ctrl-C); {Path(folder) / CHECKPOINT} holds the last finished epoch: resume with "
                f"--resume_from {folder}"
            )
        return "interrupted (Ctrl-C) before an epoch of this run ended: nothing to resume; run the training again."

    def _resume_point(self) -> tuple[Path | None, dict | None]:
        resume = resolve_resume(self.run_settings["resume_from"])
        state = load_resumable(resume) if resume else None
        if state is not None and state.get("phase") == "teacher" and self.phase == "both":
            student = resume.parent.parent / f"student-{state.get('run_id')}" / CHECKPOINT
            if student.is_file():  # the student of this run had started too: continue it
                resume, state = student, load_resumable(student)
        return resume, state

    def _run(self) -> dict[str, str]:
        resume, state = self._resume_point()
        todo = self.phases()
        resumed_phase = None
        if state is not None:
            resumed_phase = state.get("phase") or (self.phase if self.phase != "both" else None)
            if resumed_phase not in PHASES:
                raise CheckpointError(
                    f"--resume_from {resume} does not say which phase it holds (an older checkpoint); "
                    "add --phase teacher or --phase student."
                )
            if resumed_phase not in todo:
                raise CheckpointError(
                    f"--resume_from {resume} holds the {resumed_phase} phase but --phase is {self.phase}; "
                    f"use --phase {resumed_phase} or --phase both."
                )
            if state.get("record") is None:
                warn_unrecorded(resume)
            else:
                check_resume(state["record"], self.record(resumed_phase), resume)
            todo = todo[todo.index(resumed_phase) :]
            self.run_id = state.get("run_id") or self.run_id
        epochs = self.training["epochs"]
        folders: dict[str, str] = {}
        for name in todo:
            if state is not None and name == resumed_phase:
                folder = str(resume.parent)
                done, planned = trained_epochs(state)
                if done >= epochs or (state.get("finished") and done < planned):
                    how = "stopped early after" if done < min(planned, epochs) else "has trained"
                    logger.info("the %s in %s %s %d epoch(s) (--epochs %d); not trained again", name, folder, how,
                                done, epochs)  # fmt: skip
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
            self._current = phase.output_dir
            with folder_lock(Path(phase.output_dir), wait=False) if is_main_process() else nullcontext():
                phase.trainer.run()  # a second run on this folder (started at the same second) is refused
            folders[name] = phase.output_dir
            self.history[name] = {
                "seconds": float(phase.trainer.state.times.get("COMPLETED") or 0.0),
                "epochs": int(phase.trainer.state.epoch),
                "best_val_dice": float(getattr(phase.evaluator.state, "best_metric", -1.0)),
                "best_epoch": int(getattr(phase.evaluator.state, "best_metric_epoch", -1)),
            }
            del phase
        ckpt_dir = self.run_settings.get("ckpt_dir")
        if "student" in folders and ckpt_dir and is_main_process():
            publish_model(Path(folders["student"]) / "model.pt", ckpt_dir)
        return folders

    def _load(self, phase: Phase, state: dict, path: Path) -> None:
        try:
            phase.network.load_state_dict(state["model"])
        except RuntimeError as error:  # a checkpoint without a record, of another network
            raise CheckpointError(
                f"--resume_from {path} does not fit this run's network ({str(error).splitlines()[0]}); resume it "
                "with the settings it was trained with."
            ) from None
        phase.optimizer.load_state_dict(state["optimizer"])
        phase.lr_scheduler.load_state_dict(state["lr_scheduler"])
        phase.trainer.load_state_dict(state["trainer"])
        phase.trainer.state.max_epochs = self.training["epochs"]
        learning_rate = self.training["learning_rate"]
        if state.get("learning_rate") not in (None, learning_rate):
            for group in phase.optimizer.param_groups:
                group["lr"] = learning_rate
            logger.info("learning rate set to --learning_rate %g (the run started at %g)", learning_rate,
                        state["learning_rate"])  # fmt: skip
        best = state.get("best", {})
        phase.evaluator.state.best_metric = best.get("best_metric", -1.0)
        phase.evaluator.state.best_metric_epoch = best.get("best_metric_epoch", -1)
        logger.info(
            "resuming the %s from %s at epoch %d (best val_mean_dice %.4f at epoch %d)",
            phase.name, path, phase.trainer.state.epoch + 1, phase.evaluator.state.best_metric,
            phase.evaluator.state.best_metric_epoch,
        )  # fmt: skip

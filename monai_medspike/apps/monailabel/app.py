"""The MONAI Label app and its tasks for the five local MedSpikeFormer bundles (needs ``monailabel``).

The tasks are MONAI Label's stock ``BundleInferTask`` and ``BundleTrainTask``, built with public constructor
arguments only; each bundle folder is a model-zoo bundle they run as it is (``configs/inference.json`` standing
alone, ``models/model.pt``, the ``train#...`` ids of ``configs/train.json``). The subclasses here add, through
public methods only:

- names mapped to the bundle folders on disk (:func:`.bundles.resolve_models`), never to the model zoo;
- an input check after ``EnsureChannelFirstd`` (:meth:`MedSpikeInferTask.pre_transforms`), a PNG label for 2D
  images and a NIfTI label for CT volumes, both ``uint8`` (:meth:`MedSpikeInferTask.writer`), the label names
  with the background in the result;
- ``--conf <model>.<id> <value>`` config overrides for both tasks, ``--conf output_root`` for the run folders;
- training on the studies this model reads (2D images or CT volumes), in one process.

Weights: a model is served from ``<bundle>/models/model.pt``, which every training publishes (``python -m
monai.bundle run training`` or ``POST /train/<model>``); MONAI Label reloads the file when it changes. A model
without that file is not listed under ``models`` in ``/info/`` and answers 409 saying how to train it; its infer
task is created at the first request (or ``/info/``) after the file appears.

Options (``--conf KEY VALUE`` of ``monailabel start_server``): ``models`` (``all`` or a comma-separated list),
``bundles`` (folder holding the bundle folders), ``output_root`` (folder for the runs, ``<output_root>/<model>``;
default each bundle's ``outputs/``), ``<model>.<config id>``, ``preload``, ``skip_trainers``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

import monai_medspike
from monai_medspike.apps.monailabel.bundles import (
    BundleInfo,
    bundle_info,
    bundle_overrides,
    insert_input_check,
    model_studies,
    resolve_models,
    served_model,
)
from monai_medspike.errors import user_message
from monai_medspike.networks.layers import lif_kernel
from monai_medspike.networks.utils import fold_for_inference
from monai_medspike.utils import check_flag, first_cause

__all__ = ["MedSpikeApp", "MedSpikeInferTask", "MedSpikeTrainTask", "ModelNotTrainedError", "not_trained_message"]

logger = logging.getLogger(__name__)


class ModelNotTrainedError(MONAILabelException):
    """An infer request for a model whose ``models/model.pt`` does not exist (yet)."""

    def __init__(self, msg: str) -> None:
        super().__init__(MONAILabelError.INFERENCE_ERROR, msg)


def not_trained_message(name: str, bundle: str | Path) -> str:
    """What a request for an untrained model is told: the missing file and the two ways to write it."""
    bundle = Path(bundle)
    return (
        f"model {name} is not trained yet: {served_model(bundle)} does not exist. Train it: POST /train/{name} "
        f"(MONAI Label), or python -m monai.bundle run training --config_file {bundle / 'configs' / 'train.json'}; "
        "both publish models/model.pt, which is served from the next request on."
    )


def _first_line(err: BaseException, limit: int = 400) -> str:
    """The line a request's failure is answered with: the user's error anywhere in its chain (as the commands
    report it, :func:`monai_medspike.errors.user_message`), else the first line of the error itself."""
    text = (user_message(err) or str(getattr(err, "msg", None) or err)).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _what_it_serves(record: dict | None) -> Any:
    """What of a model's record decides the served network and transforms: the network and the settings inference
    takes from the model (not the run's folders, time or budget, which every training changes)."""
    from monai_medspike.settings import SETTINGS

    if record is None:
        return None
    settings = {k: v for group in record.get("settings", {}).values() for k, v in group.items()}
    served = {k: v for k, v in settings.items() if k in SETTINGS and SETTINGS[k].carried}
    return record.get("network"), {k: v for k, v in served.items() if "inference" in SETTINGS[k].configs}


class MedSpikeInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` on one local bundle, with input checks and lossless label files.

    Args:
        name: model name (``covid``, ``kvasir``, ...).
        path: the bundle folder; ``models/model.pt`` must exist.
        conf: the app's ``--conf`` options (``<name>.<id>`` overrides, ``preload``).

    Raises:
        FileNotFoundError: the bundle lacks ``configs/inference.json`` or ``models/model.pt``.
    """

    def __init__(self, name: str, path: str | Path, conf: dict[str, str]) -> None:
        super().__init__(str(path), conf, type=InferType.SEGMENTATION, load_strict=True)
        if not self.is_valid():
            raise FileNotFoundError(
                f"{path} is no servable bundle: it needs configs/inference.json, configs/metadata.json and "
                f"models/model.pt. {not_trained_message(name, path)}"
            )
        self.name = name
        # the network, the transforms and the labels are those the served model's record says (e.g. its training
        # size and layout), with the app's --conf <name>.<id> overrides (a contradicting one is refused)
        self.overrides = {"ckpt_path": str(served_model(path)), **bundle_overrides(conf, name)}
        self._network_lock = threading.Lock()
        self._folded: Any = None
        self._configure()

    def _configure(self) -> None:
        """Build the network and the bundle's description from the served model's record (again when a newly
        published model.pt was trained with other settings)."""
        model = served_model(self.bundle_path)
        self._configured = model.stat().st_mtime_ns if model.is_file() else None
        self.bundle_config.update(self.overrides)
        self.bundle_config.parse(reset=True)
        self._serves = _what_it_serves(self.bundle_config.get_parsed_content("trained_model").record)
        self.network = self.bundle_config.get_parsed_content("network_def", instantiate=True)
        self.bundle: BundleInfo = bundle_info(self.name, self.bundle_config)
        if self.labels != self.bundle.labels:  # metadata.json describes the default classes only
            self.labels = self.bundle.labels

    def _follow_published_model(self) -> None:
        """Rebuild the network and the transforms when the served model.pt changed and its record with it."""
        model = served_model(self.bundle_path)
        if not model.is_file() or model.stat().st_mtime_ns == self._configured:
            return
        from monai_medspike.checkpoints import read_checkpoint

        _, record, _ = read_checkpoint(model)
        if _what_it_serves(record) == self._serves:  # other weights of the same network: MONAI Label reloads them
            self._configured = model.stat().st_mtime_ns
            return
        logger.info("model %s: %s was trained with other settings; the network and transforms follow it", self.name,
                    model)  # fmt: skip
        self._configure()  # MONAI Label then loads the new file into a copy of the new network (its mtime changed)

    def info(self) -> dict[str, Any]:
        info = super().info()
        if self.bundle.volume:  # a 2D network run slice by slice: clients get and send volumes
            info["dimension"] = 3
        return info

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        return insert_input_check(super().pre_transforms(data), self.bundle)

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        if extension is None and not data.get("result_extension"):
            extension = ".nii.gz" if self.bundle.volume else ".png"  # never a lossy JPEG label
        data["result_dtype"] = data.get("result_dtype") or "uint8"
        return super().writer(data, extension=extension, dtype=dtype)

    def _get_network(self, device: Any, data: Any) -> Any:
        # one request at a time: a second one must not get the cached network before it is folded
        with self._network_lock:
            network = super()._get_network(device, data)  # a fresh copy of the bundle's network when model.pt changes
            fold = check_flag(self.bundle_config.get("fold_batch_norm", False), "fold_batch_norm")
            if network is not None and fold and network is not self._folded:
                if isinstance(network, torch.jit.ScriptModule):
                    logger.warning("fold_batch_norm: %s is a TorchScript model; nothing folded.", self.get_path())
                else:
                    fold_for_inference(network)
                self._folded = network  # the cached network; a reload of model.pt brings a fresh copy
            return network

    def __call__(self, request: dict, callbacks: Any = None) -> tuple[Any, dict]:
        if self.get_path() is None:  # removed since: never serve the network's initial weights
            raise ModelNotTrainedError(not_trained_message(self.bundle.name, self.bundle_path))
        with self._network_lock:  # before the transforms of this request are built from the config
            self._follow_published_model()
        file_name, result = super().__call__(request, callbacks)
        result["label_names"] = {name: i for i, name in enumerate(self.bundle.label_names)}
        result["model_path"] = self.get_path()
        return file_name, result


class _ModelStudies:
    """A datastore whose ``datalist()`` holds only the labelled studies one model reads (see
    :func:`.bundles.model_studies`); everything else is the wrapped datastore's."""

    def __init__(self, datastore: Any, info: BundleInfo) -> None:
        self.datastore = datastore
        self.studies = model_studies(datastore.datalist(), info)

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        return [dict(s) for s in self.studies]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.datastore, name)


class MedSpikeTrainTask(BundleTrainTask):
    """MONAI Label's ``BundleTrainTask`` on one local bundle: its two-phase training on the labelled studies.

    MONAI Label sets ``train#dataset#data`` and ``validate#dataset#data`` (split by ``val_split``),
    ``train#trainer#max_epochs`` (epochs per phase) and ``train#handlers`` (its ``CheckpointLoader``: the student
    starts from ``models/model.pt`` when there is one); the bundle publishes the best student as
    ``models/model.pt``. Only the studies this model reads are given to it. Training runs in this process (MONAI
    Label's multi-GPU path is not used).

    Args:
        name: model name.
        path: the bundle folder.
        conf: the app's ``--conf`` options (``<name>.<id>`` overrides, ``output_root``).
    """

    def __init__(self, name: str, path: str | Path, conf: dict[str, str]) -> None:
        super().__init__(str(path), conf, load_strict=True)
        if not self.is_valid():
            raise FileNotFoundError(f"{path} is no trainable bundle: it needs configs/train.json and metadata.json.")
        self.name = name
        self.overrides = bundle_overrides(conf, name)
        if conf.get("output_root"):
            self.overrides.setdefault("output_root", str(Path(conf["output_root"]) / name))
        self.bundle_config.update(self.overrides)
        self.bundle: BundleInfo = bundle_info(name, self.bundle_config)

    def config(self) -> dict[str, Any]:
        options = super().config()
        options.update(max_epochs=int(self.bundle_config.get_parsed_content("epochs")), multi_gpu=False)
        # no experiment tracking in the bundles; pretrained=false fails in MONAI Label 0.8.5 (os.path.exists(None))
        for key in ("tracking", "tracking_uri", "tracking_experiment_name", "pretrained", "gpus"):
            options.pop(key, None)
        return options

    def model_overrides(self) -> dict[str, Any]:
        """The settings the served ``models/model.pt`` was trained with that a training starting from it keeps (what
        the network is and reads: channels, classes, layout, time steps, widths, image size, ...), read from its
        record; none without a served model. The app's ``--conf`` overrides go over them."""
        from monai_medspike.checkpoints import TrainedModel
        from monai_medspike.settings import SETTINGS

        model = served_model(self.bundle_path)
        if not model.is_file():
            return {}
        recorded = TrainedModel(model, self.bundle_config.get_parsed_content("bundle_name")).settings()
        kept = {k: v for k, v in recorded.items() if k in SETTINGS and SETTINGS[k].kept_on_resume}
        return {k: v for k, v in kept.items() if "train" in SETTINGS[k].configs}

    def run_single_gpu(self, request: dict, overrides: dict) -> None:
        """MONAI Label's run, with the served model's settings (:meth:`model_overrides`) and the app's ``--conf``
        overrides (config ids, ``output_root``) added."""
        super().run_single_gpu(request, {**overrides, **self.model_overrides(), **self.overrides})

    def __call__(self, request: dict, datastore: Any) -> dict:
        request = dict(request)
        if not strtobool(str(request.get("pretrained", True))):
            raise ValueError(
                f"pretrained=false is not supported: MONAI Label's BundleTrainTask fails on it. To train {self.name} "
                f"from scratch, move {served_model(self.bundle_path)} away first."
            )
        request.update(multi_gpu=False, force_multi_gpu=False)
        request.setdefault("max_epochs", int(self.bundle_config.get_parsed_content("epochs")))
        studies = _ModelStudies(datastore, self.bundle)
        if len(studies.studies) < 2:  # nothing to split off: the bundle validates on the training data
            request["val_split"] = 0.0
        model = served_model(self.bundle_path)
        before = model.stat().st_mtime_ns if model.is_file() else None
        path = list(sys.path)
        try:
            super().__call__(request, studies)
        finally:
            sys.path[:] = path  # BundleTrainTask leaves the bundle folder on sys.path when the run fails
        published = model.is_file() and model.stat().st_mtime_ns != before
        if not published:
            logger.warning("training %s published no model (no finite validation Dice)", self.name)
        return {"model": self.name, "checkpoint": str(model) if model.is_file() else None, "published": published}


class MedSpikeApp(MONAILabelApp):
    """MONAI Label app serving the local bundles ``isic2018, kvasir, busi, monuseg, covid`` (see module docs)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles = resolve_models(conf.get("models", "all"), conf.get("bundles"))
        # compile the CPU LIF kernel at start-up, not inside the first /infer (no-op once cached or on a GPU)
        lif_kernel.warm_up("cuda" if torch.cuda.is_available() else "cpu")
        self.infer_tasks: dict[str, InferTask] = {}
        #: models whose model.pt cannot be served as configured: ``{name: (its modification time, the reason)}``
        self.unservable: dict[str, tuple[int, str]] = {}
        self.tasks_lock = threading.Lock()
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"monai_medspike MedSpikeFormer ({monai_medspike.__version__})",
            description="Spiking transformer segmentation: 2D images (isic2018, kvasir, busi, monuseg) and "
            "COVID-19 CT volumes slice by slice (covid), from the local bundles",
            version=monai_medspike.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        """The infer tasks of the trained models; :meth:`load_trained_models` adds the others once trained."""
        self.load_trained_models()
        return self.infer_tasks  # the same dict: tasks added to it later are served

    def load_trained_models(self) -> list[str]:
        """Create the infer task of every served model whose ``models/model.pt`` now exists; returns the models
        still without one. A model whose checkpoint cannot be served as configured (damaged, of another bundle, or
        contradicted by a ``--conf`` option) is kept in ``unservable`` with the reason, until the file changes."""
        untrained = []
        with self.tasks_lock:
            for name, path in self.bundles.items():
                model = served_model(path)
                if name in self.infer_tasks:
                    continue
                if not model.is_file():
                    untrained.append(name)
                    continue
                stamp = model.stat().st_mtime_ns
                if self.unservable.get(name, (None,))[0] == stamp:
                    continue
                try:
                    self.infer_tasks[name] = MedSpikeInferTask(name, path, self.conf)
                except (ValueError, RuntimeError, KeyError, FileNotFoundError) as err:
                    reason = f"model {name} cannot be served: {_first_line(first_cause(err))}"
                    logger.error(reason)
                    self.unservable[name] = (stamp, reason)
                    continue
                self.unservable.pop(name, None)
                logger.info("serving %s from %s", name, model)
        return untrained

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {name: MedSpikeTrainTask(name, path, self.conf) for name, path in self.bundles.items()}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def info(self) -> dict[str, Any]:
        """MONAI Label's ``info``; ``models`` lists the trained models, ``untrained`` the others (with the way to
        train them)."""
        untrained = self.load_trained_models()
        info = super().info()
        info["untrained"] = {name: not_trained_message(name, self.bundles[name]) for name in untrained}
        info["unservable"] = {name: reason for name, (_, reason) in self.unservable.items()}
        return info

    def infer(self, request: dict, datastore: Any = None) -> dict:
        """MONAI Label's ``infer``, with failures turned into HTTP errors that say what went wrong.

        404: unknown model; 409: the model has no ``models/model.pt`` yet; 422: the image cannot be read or does not
        fit the model (wrong dimensions or channels). The server goes on serving.
        """
        model = request.get("model")
        if model not in self.bundles:
            raise HTTPException(404, f"unknown model {model!r}; this server serves {', '.join(self.bundles)}.")
        self.load_trained_models()
        if model in self.unservable:
            raise HTTPException(409, self.unservable[model][1])
        if model not in self.infer_tasks:
            raise HTTPException(409, not_trained_message(model, self.bundles[model]))
        try:
            return super().infer(request, datastore)
        except ModelNotTrainedError as err:
            raise HTTPException(409, err.msg) from err
        except HTTPException:
            raise
        except Exception as err:
            if user_message(err) is None:  # the user's errors are answered in one line, without a traceback
                logger.exception("infer %s failed", model)
            raise HTTPException(422, f"model {model}: the input could not be segmented: {_first_line(err)}") from err

    def train(self, request: dict) -> dict:
        """MONAI Label's ``train``; 404 for an unknown model, 422 when the request or the studies cannot train it,
        500 with the cause when the training itself fails."""
        model = request.get("model")
        if model not in self.trainer_names():
            raise HTTPException(404, f"unknown model {model!r}; this server trains {', '.join(self.trainer_names())}.")
        try:
            result = super().train(request)
        except Exception as err:
            if isinstance(err, ValueError | MONAILabelException) or user_message(err) is not None:
                raise HTTPException(422, f"training {model}: {_first_line(err)}") from err
            logger.exception("training %s failed", model)
            raise HTTPException(500, f"training {model} failed: {_first_line(err)}") from err
        self.load_trained_models()
        return result

    def trainer_names(self) -> list[str]:
        """The models this app trains (none with ``--conf skip_trainers true``)."""
        return [] if strtobool(self.conf.get("skip_trainers", "false")) else list(self.bundles)

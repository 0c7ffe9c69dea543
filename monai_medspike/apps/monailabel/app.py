"""The MONAI Label app and its tasks for the five local MedSpikeFormer bundles (needs ``monailabel``).

Built on MONAI Label's bundle tasks (``BundleInferTask``, ``BundleTrainTask``) with what differs here:

- names map to the bundle folders on disk (:func:`.bundles.resolve_models`), never to the model zoo;
- inference reads ``inference.json`` as an overlay on ``train.json`` (the bundles keep one network definition),
  loads the newest trained student of the model's output folder at each request (so a model trained from
  MONAI Label, or from the command line, is served at the next request), checks the input, resets the neuron
  state before and after each request, and returns a label image of the input's geometry holding class indices;
- training writes the studies folder's labelled images into a datalist and runs the bundle's own ``training``
  into the folder the infer task loads from.

Options (``--conf KEY VALUE`` of ``monailabel start_server``): ``models`` (``all`` or a comma-separated list),
``bundles`` (folder holding the bundle folders), ``output_root`` (folder for runs; default each bundle's
``outputs/``), ``preload``.
"""

from __future__ import annotations

import logging
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
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.infer.bundle import BundleConstants as InferConstants
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleConstants as TrainConstants
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

import monai_medspike
from monai_medspike.apps.monailabel.bundles import (
    BundleInfo,
    bundle_info,
    bundle_overrides,
    find_model,
    infer_post_transforms,
    insert_input_check,
    load_bundle_config,
    model_output_root,
    reset_spiking_state,
    resolve_models,
    write_training_datalist,
)
from monai_medspike.bundle import run_stamp

__all__ = ["MedSpikeApp", "MedSpikeInferTask", "MedSpikeTrainTask", "ModelNotTrainedError"]

logger = logging.getLogger(__name__)


class ModelNotTrainedError(MONAILabelException):
    """An infer request for a model with no checkpoint yet."""

    def __init__(self, msg: str) -> None:
        super().__init__(MONAILabelError.INFERENCE_ERROR, msg)


def _first_line(err: BaseException, limit: int = 400) -> str:
    text = str(getattr(err, "msg", None) or err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[:limit] + "..."


class _InferConstants(InferConstants):
    def configs(self) -> Sequence[str]:
        return ["inference.json"]

    def key_preprocessing(self) -> Sequence[str]:
        return ["infer_transforms"]

    def key_postprocessing(self) -> Sequence[str]:
        return ["infer_postprocessing"]


class _TrainConstants(TrainConstants):
    def configs(self) -> Sequence[str]:
        return ["train.json"]


class MedSpikeInferTask(BundleInferTask):
    """Segmentation with one local bundle: a 2D image, or a CT volume slice by slice, to a label image.

    Args:
        name: model name (``covid``, ``kvasir``, ...).
        path: the bundle folder.
        conf: the app's ``--conf`` options.
        output_root: the model's run folder, searched for the newest trained student at each request.
    """

    def __init__(self, name: str, path: str | Path, conf: dict[str, str], output_root: str | Path) -> None:
        self.const = _InferConstants()
        self.pre_filter = None
        self.post_filter = None
        self.extend_load_image = True
        self.add_post_restore = False  # the bundle's Invertd already restores the input's geometry
        self.dropout = 0.0
        self.bundle_path = str(path)
        self.output_root = Path(output_root)
        self.bundle_config = load_bundle_config(path, self.output_root, overrides=bundle_overrides(conf, name))
        self.bundle_config.config["use_click"] = False
        self.bundle: BundleInfo = bundle_info(name, self.bundle_config)
        self.key_image, self.key_pred = "image", "pred"
        self.version = self.bundle.version or monai_medspike.__version__
        network = self.bundle_config.get_parsed_content("network_def", instantiate=True)
        BasicInferTask.__init__(
            self,
            path=None,
            network=network,
            type=InferType.SEGMENTATION,
            labels=self.bundle.labels,
            dimension=3 if self.bundle.volume else 2,
            description=self.bundle.description,
            preload=False,
            load_strict=True,
        )
        self.valid = True

    def is_valid(self) -> bool:
        return True  # listed even before training; a request without a checkpoint gets an error saying so

    def get_path(self, validate: bool = True) -> str | None:
        return find_model(self.output_root, self.bundle_path)

    def _get_network(self, device: Any, data: Any) -> torch.nn.Module:
        if self.get_path() is None:  # listed before training: say how to train it
            raise ModelNotTrainedError(
                f"model {self.bundle.name} has no trained checkpoint yet (looked for student-*/model.pt under "
                f"{self.output_root} and {Path(self.bundle_path) / 'models' / 'model.pt'}). Train it first: "
                f"POST /train/{self.bundle.name}, or python -m monai.bundle run training --config_file "
                f"{Path(self.bundle_path) / 'configs' / 'train.json'}.",
            )
        network = super()._get_network(device, data)
        reset_spiking_state(network)  # no membrane left from an earlier request; forward clears it again at its end
        return network

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        return insert_input_check(super().pre_transforms(data), self.bundle)

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        self._update_device(data)
        return infer_post_transforms(self.bundle_config, self.key_pred)

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        if extension is None and not data.get("result_extension"):
            extension = ".nii.gz" if self.bundle.volume else ".png"  # never a lossy JPEG label
        data["result_dtype"] = data.get("result_dtype") or "uint8"
        return super().writer(data, extension=extension, dtype=dtype)

    def __call__(self, request: dict, callbacks: Any = None) -> tuple[Any, dict]:
        file_name, result = super().__call__(request, callbacks)
        result["label_names"] = {name: i for i, name in enumerate(self.bundle.label_names)}
        result["model_path"] = self.get_path()
        return file_name, result


class MedSpikeTrainTask(BundleTrainTask):
    """Training of one local bundle on the studies folder's labelled images.

    The labelled images this model reads go into a datalist (:func:`.bundles.write_training_datalist`, split by
    ``val_split``); then the bundle's own ``training`` runs (teacher, then student) for ``max_epochs`` epochs per
    phase into ``output_root``, where the infer task finds the new student at its next request.
    """

    def __init__(self, name: str, path: str | Path, conf: dict[str, str], output_root: str | Path) -> None:
        self.name = name
        self.output_root = Path(output_root)
        self.overrides = bundle_overrides(conf, name)
        super().__init__(str(path), conf, const=_TrainConstants())
        self.bundle: BundleInfo = bundle_info(name, self.bundle_config)

    def _load_bundle_config(self, path: str, config: str) -> Any:
        return load_bundle_config(path, self.output_root, configs=("train.json",), overrides=self.overrides)

    def config(self) -> dict[str, Any]:
        options = super().config()
        options.update({"max_epochs": int(self.bundle_config.get("epochs", 10)), "multi_gpu": False})
        for key in ("tracking", "tracking_uri", "tracking_experiment_name", "pretrained", "model_filename"):
            options.pop(key, None)
        return options

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Translate MONAI Label's generic overrides into this bundle's config ids."""
        training = overrides.pop(self.const.key_train_dataset_data(), []) or []
        validation = overrides.pop(self.const.key_validate_dataset_data(), None) or []
        epochs = int(overrides.pop(self.const.key_train_trainer_max_epochs()))
        for key in (self.const.key_train_handlers(), self.const.key_bundle_root()):
            overrides.pop(key, None)
        stamp = run_stamp()
        datalist = write_training_datalist(
            [*training, *validation],
            self.output_root / "monailabel" / f"{self.name}-{stamp}",
            self.bundle,
            val_split=float(self._request.get("val_split", 0.2)),
        )
        overrides.update(
            {
                "bundle_root": self.bundle_path,
                "output_root": str(self.output_root),
                "datalist": str(datalist),
                "epochs": epochs,
                "run_name": f"monailabel-{stamp}",
                **self.overrides,
            }
        )
        logger.info("training %s: %s", self.name, overrides)
        return overrides

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        """Nothing to load: the bundle trains its teacher, then its student from that teacher, from scratch."""

    def _partition_datalist(self, datalist: list, request: dict, shuffle: bool = False) -> tuple[list, list]:
        return datalist, []  # split by write_training_datalist, after keeping what this model reads

    def __call__(self, request: dict, datastore: Any) -> dict:
        self._request = dict(request)
        request = {**request, "multi_gpu": False, "run_id": "run"}
        try:
            super().__call__(request, datastore)
        except (ValueError, FileNotFoundError) as err:
            raise MONAILabelException(MONAILabelError.APP_ERROR, f"training {self.name}: {err}") from err
        return {"model": self.name, "checkpoint": find_model(self.output_root, self.bundle_path)}


class MedSpikeApp(MONAILabelApp):
    """MONAI Label app serving the local bundles ``isic2018, kvasir, busi, monuseg, covid`` (see module docs)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.models = resolve_models(conf.get("models", "all"), conf.get("bundles"))
        self.output_roots = {
            name: model_output_root(path, name, conf.get("output_root")) for name, path in self.models.items()
        }
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
        return {
            name: MedSpikeInferTask(name, path, self.conf, self.output_roots[name])
            for name, path in self.models.items()
        }

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {
            name: MedSpikeTrainTask(name, path, self.conf, self.output_roots[name])
            for name, path in self.models.items()
        }

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def infer(self, request: dict, datastore: Any = None) -> dict:
        """MONAI Label's ``infer``, with failures turned into HTTP errors that say what went wrong.

        404: unknown model; 409: the model has no checkpoint yet; 422: the image cannot be read or does not fit
        the model (wrong dimensions or channels). The server goes on serving.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"unknown model {model!r}; this server serves {', '.join(self._infers)}.")
        try:
            return super().infer(request, datastore)
        except ModelNotTrainedError as err:
            raise HTTPException(409, err.msg) from err
        except HTTPException:
            raise
        except Exception as err:
            logger.exception("infer %s failed", model)
            raise HTTPException(422, f"model {model}: the input could not be segmented: {_first_line(err)}") from err

    def train(self, request: dict) -> dict:
        """MONAI Label's ``train``; 404 for an unknown model, 422 when the studies cannot train it, 500 with the
        cause when the training itself fails."""
        model = request.get("model")
        if model not in self._trainers:
            raise HTTPException(404, f"unknown model {model!r}; this server trains {', '.join(self._trainers)}.")
        try:
            return super().train(request)
        except MONAILabelException as err:
            raise HTTPException(422, err.msg) from err
        except Exception as err:
            logger.exception("training %s failed", model)
            raise HTTPException(500, f"training {model} failed: {_first_line(err)}") from err

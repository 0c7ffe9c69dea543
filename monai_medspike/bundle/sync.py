"""The bundles' configs, generated as data: each bundle is its dataset record, the shared configs and the settings.

A bundle folder holds ``dataset.json``, its dataset record: the reader (``dataset``), the values of the settings
that are the bundle's own (``settings``: batch size, demo data, ...; the reader gives the channels and the label
names), its changes to the published recipe (``recipe_published``), its metadata text (``metadata``) and the
modules to import for a reader outside this package (``imports``). From it, the settings declared in
:mod:`monai_medspike.settings` and the configs in ``monai_medspike/bundle/shared/`` (valid JSON: what every bundle
runs), :func:`bundle_configs` builds ``configs/train.json``, ``inference.json``, ``evaluate.json``,
``multi_gpu_train.json``, ``recipe_published.json`` and ``metadata.json`` by loading, merging and dumping JSON, and
the export section of its ``docs/README.md`` (between :data:`EXPORT_BEGIN` and :data:`EXPORT_END`)::

    python -m monai_medspike.bundle sync                      # write the configs of the checkout's bundles
    python -m monai_medspike.bundle sync --check              # exit 1, naming the files, where one differs
    python -m monai_medspike.bundle sync --bundles <folder>   # the bundles under another folder (a new dataset)

The generated files are complete and standalone (MONAI's ``monai.bundle run`` and MONAI Label read them as they
are). A new setting is one declaration in :mod:`monai_medspike.settings`, then ``sync``; a new dataset is a reader,
its record and a README, then ``sync`` (docs/bundles.md).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_medspike.settings import SETTINGS, Setting, is_expression

__all__ = [
    "GENERATED", "RECORD", "SHARED", "bundle_configs", "discover", "dump", "export_section", "load_record",
    "sync_bundles",
]  # fmt: skip

SHARED = Path(__file__).resolve().parent / "shared"
RECORD = "dataset.json"
GENERATED = (
    "train.json", "inference.json", "evaluate.json", "multi_gpu_train.json", "recipe_published.json", "metadata.json",
)  # fmt: skip
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
_ROOT_LINKS = ("train.json", "metadata.json", "logging.conf")
_RECORD_KEYS = {"name", "dataset", "imports", "settings", "recipe_published", "metadata", "eval_metrics"}
_METADATA_KEYS = {"name", "task", "description", "changelog", "data_source", "data_type", "image_classes", "modality",
                  "references"}  # fmt: skip
#: the order of the settings in a config: what is read, what reads it, how it trains, how the run goes
_GROUP_ORDER = ("data", "network", "training", "run")
#: the workflow groups of ``TwoPhaseTraining`` (its network group is the network itself)
_WORKFLOW_GROUPS = ("data", "training", "run")


def load_record(folder: str | Path) -> dict[str, Any]:
    """The dataset record of the bundle in ``folder``, checked.

    Raises:
        ValueError: no record, an unknown key, a setting that is not the bundle's own, or missing metadata text;
            naming the file.
    """
    path = Path(folder) / RECORD
    if not path.is_file():
        raise ValueError(f"{path} does not exist: a bundle folder holds its dataset record (docs/bundles.md).")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from None
    unknown = sorted(set(record) - _RECORD_KEYS)
    if unknown or "dataset" not in record:
        raise ValueError(f"{path}: needs 'dataset' and may hold {sorted(_RECORD_KEYS)}; unknown keys {unknown}.")
    for key in ("settings", "recipe_published"):
        bad = sorted(k for k in record.get(key, {}) if k not in SETTINGS or (key == "settings" and not _own(k)))
        if bad:
            mine = sorted(k for k, s in SETTINGS.items() if _own(k))
            raise ValueError(f"{path}: {key} {bad} are not settings a bundle sets for itself; those are {mine}.")
    missing = sorted(_METADATA_KEYS - set(record.get("metadata", {})))
    if missing:
        raise ValueError(f"{path}: metadata lacks {missing}.")
    return {"name": Path(folder).resolve().name, "imports": [], "settings": {}, "recipe_published": {}, **record}


def _own(name: str) -> bool:
    return SETTINGS[name].per_dataset


def _reader(record: Mapping[str, Any]) -> Any:
    """The bundle's reader with its default options (``@setting`` references in them take the settings' values)."""
    import importlib

    from monai_medspike.data import get_reader

    for module in record["imports"]:
        importlib.import_module(module)
    options = record["settings"].get("data_options", {})
    resolved = {k: _value(v[1:], record) if isinstance(v, str) and v.startswith("@") else v for k, v in options.items()}
    return get_reader(record["dataset"], **resolved)


def _value(name: str, record: Mapping[str, Any], config: str = "train") -> Any:
    """The value of setting ``name`` in a bundle's ``config``: the record's, what the reader knows, else the
    declared default."""
    setting = SETTINGS[name]
    if name in record["settings"]:
        return record["settings"][name]
    if name == "bundle_name":
        return record["name"]
    if name == "dataset":
        return record["dataset"]
    if name == "in_channels":
        return _reader(record).channels
    if name == "label_names":
        return list(_reader(record).label_names)
    return setting.default_in(config)


def _held(setting: Setting, record: Mapping[str, Any], config: str) -> bool:
    return config in setting.configs and (not setting.optional or setting.name in record["settings"])


def _ordered(config: str, record: Mapping[str, Any]) -> list[Setting]:
    held = [s for s in SETTINGS.values() if _held(s, record, config)]
    return sorted(held, key=lambda s: (s.name != "bundle_name", _GROUP_ORDER.index(s.group)))


def _python(value: Any) -> str:
    """``value`` as Python source inside a config expression: an expression's own text without its ``$``, a
    reference as it is, containers item by item."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_python(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_python(v) for v in value) + "]"
    if is_expression(value):
        return value[1:] if value.startswith("$") else value
    return repr(value)


def _shared(name: str) -> dict[str, Any]:
    return json.loads((SHARED / name).read_text())


def _with_imports(config: dict[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    config["imports"] = [*config.get("imports", []), *(f"$import {m}" for m in record["imports"])]
    return config


def _settings_block(config: str, record: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The settings of ``config`` with the bundle's values; each carried one as the value of the config's model
    (``@resumed``: the run a training resumes; ``@trained_model``: the model evaluation or inference uses) when it
    has one."""
    block: dict[str, Any] = {}
    for setting in _ordered(config, record):
        value = _value(setting.name, record, config)
        block[setting.name] = f"$@{model}.setting({setting.name!r}, {_python(value)})" if setting.carried else value
        if setting.name == "bundle_name":
            block["bundle_root"] = "$monai_medspike.bundle.bundle_root(@bundle_name)"
    return block


def _describes_the_model(setting: Setting) -> bool:
    """Whether evaluation and inference take ``setting`` from the model (a carried setting that inference holds:
    what the network is and what it reads, not how it was trained)."""
    return setting.carried and "inference" in setting.configs


def _model_settings(config: str, record: Mapping[str, Any]) -> dict[str, str]:
    """``{name: "@name"}`` of the settings a trained model is checked against (what it is and reads)."""
    return {s.name: f"@{s.name}" for s in _ordered(config, record) if _describes_the_model(s) or s.identity}


def _train(record: Mapping[str, Any]) -> dict[str, Any]:
    shared = _shared("train.json")
    config = {"imports": shared.pop("imports"), **_settings_block("train", record, "resumed"), **shared}
    workflow = config["workflow"]
    # each setting of a group as a reference to its top-level id, unless the shared config wires it otherwise (the
    # epochs: MONAI Label's id train#trainer#max_epochs, which --epochs sets)
    groups = {
        group: {
            s.name: workflow.get(group, {}).get(s.name, f"@{s.name}")
            for s in _ordered("train", record)
            if s.group == group
        }
        for group in _WORKFLOW_GROUPS
    }
    # the groups go after the components the workflow takes, before the ids MONAI Label sets
    tail = {k: workflow.pop(k) for k in ("train_data", "val_data", "train_handlers")}
    workflow.update(groups)
    workflow.update(tail)
    return _with_imports(config, record)


def _evaluate(record: Mapping[str, Any]) -> dict[str, Any]:
    shared = _shared("evaluate.json")
    config: dict[str, Any] = {}
    for setting in _ordered("evaluate", record):
        if "train" not in setting.configs:
            config[setting.name] = _value(setting.name, record, "evaluate")
    config["trained_model"] = shared.pop("trained_model")
    # the settings of train.json that say what the model is and reads, now the evaluated model's
    carried = _settings_block("train", record, "trained_model")
    config.update({n: carried[n] for n in carried if n in SETTINGS and _describes_the_model(SETTINGS[n])})
    config["model_settings"] = _model_settings("train", record)
    return {**config, **shared}


def _inference(record: Mapping[str, Any]) -> dict[str, Any]:
    shared = _shared("inference.json")
    config = {"imports": shared.pop("imports"), **_settings_block("inference", record, "trained_model")}
    config["trained_model"] = shared.pop("trained_model")
    config["model_settings"] = _model_settings("inference", record)
    return _with_imports({**config, **shared, "_meta_": _export_meta(record)}, record)


def _export_meta(record: Mapping[str, Any]) -> dict[str, Any]:
    """What ``inference.json`` tells MONAI's export commands run without ``--meta_file`` or ``--input_shape``: the
    network's inputs and outputs as in ``metadata.json``, at the bundle's default image size (``monai.bundle
    onnx_export`` traces a fixed shape from it). ``--meta_file`` replaces it (``run`` reads ``metadata.json``)."""
    io = json.loads(json.dumps(_metadata(record)["network_data_format"]))
    size = list(_value("image_size", record))
    io["inputs"]["image"]["spatial_shape"] = io["outputs"]["pred"]["spatial_shape"] = size
    return {"network_data_format": io}


def _recipe(record: Mapping[str, Any]) -> dict[str, Any]:
    recipe = {s.name: s.published for s in SETTINGS.values() if s.published is not None}
    return {**recipe, **record["recipe_published"]}


def _minimum_versions() -> dict[str, str]:
    """The lowest version of each dependency the package declares (pyproject.toml, else the installed metadata)."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    else:
        from importlib.metadata import requires

        requirements = [r for r in requires("monai-medspike") or [] if "extra ==" not in r]
    versions = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(?:==|>=)\s*([0-9][^,;\s]*)", requirement)
        if match:
            versions[match.group(1).lower()] = match.group(3)
    return versions


def _metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    import monai_medspike
    from monai_medspike.workflows.components import written_mask

    text = record["metadata"]
    version = monai_medspike.__version__
    if version not in text["changelog"]:
        raise ValueError(
            f"{record['name']}/{RECORD}: metadata.changelog has no entry for this version ({version}); add one."
        )
    names = _value("label_names", record)
    names = list(_reader(record).label_names) if is_expression(names) else list(names)
    channels = int(_value("in_channels", record))
    out_channels = 1 if len(names) == 2 else len(names)
    foreground = names[1] if out_channels == 1 else ", ".join(names)
    versions = _minimum_versions()
    mask = written_mask(record["dataset"], out_channels, names)
    shape = ["16*n", "16*n"]
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": text["changelog"],
        "monai_version": versions.get("monai", ""),
        "pytorch_version": versions.get("torch", ""),
        "numpy_version": versions.get("numpy", ""),
        "required_packages_version": {
            "monai_medspike": version,
            **{name: versions[name] for name in ("spikingjelly", "nibabel", "itk-io", "pytorch-ignite", "tensorboard")},
        },
        "name": text["name"],
        "task": text["task"],
        "description": text["description"],
        "authors": "monai_medspike developers",
        "copyright": "Copyright (c) monai_medspike developers",
        "data_source": text["data_source"],
        "data_type": text["data_type"],
        "image_classes": text["image_classes"],
        "label_classes": "single channel, "
        + (
            f"1 is {names[1]}, 0 is everything else"
            if out_channels == 1
            else "class indices: " + ", ".join(f"{i} {n}" for i, n in enumerate(names))
        ),  # fmt: skip
        "pred_classes": f"single channel logits of {foreground}; sigmoid > 0.5 gives the mask"
        if out_channels == 1
        else f"{out_channels} channels of logits ({foreground}); the argmax gives the class",
        "eval_metrics": record.get("eval_metrics", {}),
        "intended_use": "Research on spiking networks for medical image segmentation; not for diagnostic use",
        "references": text["references"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": text["modality"],
                    "num_channels": channels,
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"} if channels == 1 else dict(zip("012", "RGB", strict=False)),
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": out_channels,
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): name for i, name in enumerate(names)},
                }
            },
        },  # fmt: skip
        "inference_output": mask,
    }


#: the markers of the README section ``sync`` writes (a README without them is left alone)
README = Path("docs") / "README.md"
EXPORT_BEGIN = "<!-- generated by python -m monai_medspike.bundle sync: export -->"
EXPORT_END = "<!-- end of generated export -->"


def export_section(record: Mapping[str, Any]) -> str:
    """The README section of a bundle on exporting its model (TorchScript and ONNX), with the exact commands."""
    name = record["name"]
    configs = f"bundles/{name}/configs"
    channels = int(_value("in_channels", record))
    height, width = _value("image_size", record)
    return f"""{EXPORT_BEGIN}
## Export (TorchScript, ONNX)

MONAI's export commands build the network from the record of the `--ckpt_file` they export and read its weights
from it (no `--key_in_ckpt` needed). TorchScript is traced (`--use_trace True`: spikingjelly's neurons cannot be
scripted) and runs at any size divisible by 16, without spikingjelly. ONNX (`pip install -e ".[onnx]"`, with
`-c constraints/cpu.txt` on a CPU machine) takes a fixed input shape: give `(1, {channels}, H, W)` with the size
the model was trained at, to which the bundle's inference resizes every input ({height} x {width} by default, else the
`--image_size` of its training; left out, the default is taken). ONNX Runtime gives the torch network's logits
(tested, both layouts).

```bash
python -m monai.bundle ckpt_export network_def --filepath model.ts --ckpt_file <model.pt> --use_trace True \\
    --config_file {configs}/inference.json --meta_file {configs}/metadata.json
python -m monai.bundle onnx_export network_def --filepath model.onnx --ckpt_file <model.pt> \\
    --config_file {configs}/inference.json --input_shape "[1, {channels}, {height}, {width}]"
```
{EXPORT_END}"""


def _with_export_section(text: str, record: Mapping[str, Any]) -> str:
    """``text`` (a README) with its generated export section brought up to date."""
    begin, end = text.find(EXPORT_BEGIN), text.find(EXPORT_END)
    if begin < 0 or end < begin:
        return text
    return text[:begin] + export_section(record) + text[end + len(EXPORT_END) :]


def bundle_configs(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The generated configs of the bundle in ``folder``: ``{file name: content}`` (:data:`GENERATED`).

    Raises:
        ValueError: the dataset record is missing or wrong, naming the file and the key.
    """
    record = load_record(folder)
    return {
        "train.json": _train(record),
        "inference.json": _inference(record),
        "evaluate.json": _evaluate(record),
        "multi_gpu_train.json": _shared("multi_gpu_train.json"),
        "recipe_published.json": _recipe(record),
        "metadata.json": _metadata(record),
    }


def dump(value: Any, indent: int = 0, width: int = 120) -> str:
    """JSON text of a config as people read it: one key per line, a value on one line where it fits."""
    compact = json.dumps(value, separators=(", ", ": "))
    pad = " " * (indent + 4)
    if indent and len(compact) + indent <= width - 20 and not (isinstance(value, dict) and "_target_" in value):
        return compact
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k)}: {dump(v, indent + 4, width)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list) and value:
        items = [f"{pad}{dump(v, indent + 4, width)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return compact


def discover(root: str | Path) -> list[Path]:
    """The bundle folders under ``root``: each folder holding a dataset record, sorted."""
    return sorted(p.parent for p in Path(root).glob(f"*/{RECORD}"))


def sync_bundles(folders: list[str | Path], write: bool = True) -> list[Path]:
    """Bring the bundles' generated configs in line with their records, the shared configs and the settings;
    returns the files that differed (rewritten when ``write``, with the bundle's root links and ``models/``).
    Every file is generated before any is written, so an error leaves all as they were.

    Raises:
        ValueError: a bundle's dataset record is missing or wrong (naming the file and the key).
    """
    texts: dict[Path, str] = {}
    for folder in folders:
        for name, config in bundle_configs(folder).items():
            path = Path(folder) / "configs" / name
            text = dump(config) + "\n"
            if not path.is_file() or path.read_text() != text:
                texts[path] = text
        readme = Path(folder) / README
        if readme.is_file():
            text = readme.read_text()
            if _with_export_section(text, load_record(folder)) != text:
                texts[readme] = _with_export_section(text, load_record(folder))
    if write:
        for path, text in texts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        for folder in map(Path, folders):
            _complete_folder(folder)
    return list(texts)


def _complete_folder(folder: Path) -> None:
    """The rest of a model-zoo bundle folder: ``configs/logging.conf``, ``models/``, the root links."""
    logging_conf = folder / "configs" / "logging.conf"
    if not logging_conf.is_file():
        logging_conf.write_text((SHARED / "logging.conf").read_text())
    (folder / "models").mkdir(exist_ok=True)
    for link in _ROOT_LINKS:
        target = folder / link
        if not target.exists() and not target.is_symlink():
            os.symlink(Path("configs") / link, target)

"""Checks a bundle run's settings before any work starts: unknown keys and bad values get one short message.

``python -m monai.bundle run`` accepts any ``--key value``: a misspelt key (``--epochz 3``) silently adds an unused
setting, and a bad value (``--epochs abc``, ``--image_size 65``) fails late, at the end of a long traceback, often
after folders were created. :func:`check_command_line` (the first entry of every bundle's ``initialize``) reads the
command line the way ``monai.bundle`` does, and stops with a short message naming the key, the value and what is
accepted.
"""

from __future__ import annotations

import difflib
import json
import logging
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_medspike.bundle import check_flag
from monai_medspike.networks.nets.medspikeformer import LAYOUTS, PRECISIONS

__all__ = [
    "SETTINGS",
    "SettingsError",
    "check_command_line",
    "check_overrides",
    "check_settings",
    "stop_command_line",
]

logger = logging.getLogger(__name__)

# what `python -m monai.bundle run` takes itself (monai.bundle.scripts.run / create_workflow / ConfigWorkflow)
_RUN_ARGUMENTS = {
    "config_file", "meta_file", "logging_file", "init_id", "run_id", "final_id", "tracking", "args_file",
    "workflow_name", "workflow_type", "properties_path",
}  # fmt: skip


class SettingsError(ValueError):
    """A bundle setting is unknown or has a value the bundle cannot use."""


def _int(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            return f"must be a whole number >= {minimum}"
        return None

    return check


def _number(minimum: float, strict: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value  # NaN
        if bad or (value <= minimum if strict else value < minimum):
            return f"must be a number {'>' if strict else '>='} {minimum:g}"
        return None

    return check


def _choice(*choices: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _flag(value: Any) -> str | None:
    try:
        check_flag(value, "flag")
    except ValueError:
        return "must be true or false"
    return None


def _image_size(value: Any) -> str | None:
    sizes = value if isinstance(value, (list, tuple)) else None
    if (
        sizes is None
        or len(sizes) != 2
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 16 or s % 16 for s in sizes)
    ):
        return "must be two sizes, each a multiple of 16 (the network halves the size four times), e.g. [64, 64]"
    return None


def _stages(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or any(not isinstance(s, int) or not 0 <= s <= 3 for s in value):
        return "must be a list of encoder stages 0..3, e.g. [0, 1, 2, 3]"
    return None


def _path(kind: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        path = Path(str(value))
        if kind == "file" and not path.is_file():
            return "must be an existing file" + (" (that is a folder)" if path.is_dir() else "")
        if kind == "folder" and not path.is_dir():
            return "must be an existing folder" + (" (that is a file)" if path.is_file() else "")
        if kind == "any" and not path.exists():
            return "must be an existing file or folder"
        return None

    return check


def _resume(value: Any) -> str | None:
    from .training import resolve_resume

    try:
        resolve_resume(value)
    except FileNotFoundError as e:
        return str(e).split(": ", 1)[-1].rstrip(".")
    return None


SETTINGS: dict[str, Callable[[Any], str | None]] = {
    "epochs": _int(1),
    "val_interval": _int(1),
    "batch_size": _int(1),
    "num_workers": _int(0),
    "demo_count": _int(1),
    "slices_per_volume": _int(1),
    "time_steps": _int(1),
    "num_heads": _int(1),
    "seed": _int(0),
    "lr_patience": _int(0),
    "early_stop_patience": _int(1),
    "sw_batch_size": _int(1),
    "learning_rate": _number(0.0, strict=True),
    "lambda_align": _number(0.0, strict=False),
    "lambda_side": _number(0.0, strict=False),
    "image_size": _image_size,
    "align_stages": _stages,
    "phase": _choice("teacher", "student", "both"),
    "classes": _choice("binary", "multiclass"),
    "layout": _choice(*LAYOUTS),
    "precision": _choice(*PRECISIONS),
    "overwrite": _flag,
    "keep_freed_memory": _flag,
    "use_checkpoint": _flag,
    "channels_last": _flag,
    "fold_batch_norm": _flag,
    "resize": _flag,
    "cache": lambda value: None if value in (None, "memory", "disk") else "must be memory, disk or None",
    "datalist": _path("file"),
    "dataset_dir": _path("folder"),
    "teacher_checkpoint": _path("file"),
    "ckpt_path": _path("file"),
    "input": _path("any"),
    "resume_from": _resume,
}
"""Validator of each well-known bundle setting: returns what is wrong with a value, or None."""


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


def check_settings(config: Mapping[str, Any], keys: Sequence[str] | None = None) -> None:
    """Check the values of the well-known settings in ``config`` (only ``keys`` if given); expressions are skipped.

    Raises:
        SettingsError: one line per bad setting, naming the key, the value and what is accepted.
    """
    problems = []
    for key in keys if keys is not None else config:
        check = SETTINGS.get(key)
        if check is None or key not in config or _is_expression(config[key]):
            continue
        problem = check(config[key])
        if problem:
            problems.append(f"--{key} {config[key]!r}: {problem}.")
    if problems:
        raise SettingsError("\n".join(problems))


def _node(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def _known(config: Mapping[str, Any], key: str) -> bool:
    node: Any = config
    parts = key.split("#")
    for i, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:  # a new keyword argument of a component (``--network_def#dropout 0.1``) if its target takes it
            last = i == len(parts) - 1 and i > 0
            return last and isinstance(node, Mapping) and "_target_" in node and _accepts(node["_target_"], part)
    return True


def _accepts(target: Any, argument: str) -> bool:
    """Whether the callable named ``target`` takes a keyword ``argument`` (True when that cannot be told)."""
    import inspect
    import pydoc

    function = pydoc.locate(target) if isinstance(target, str) and "." in target else None
    if function is None:
        return True
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == argument or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "the config") -> None:
    """Refuse override keys that ``config`` does not have (with the nearest valid keys) and bad values.

    Args:
        config: the merged configuration, before the overrides.
        overrides: ``{id: value}`` as ``monai.bundle`` parsed them.
        source: the config files, for the message.

    Raises:
        SettingsError: naming each unknown key with its nearest valid keys, and each bad value.
    """
    problems = []
    for key in overrides:
        if key in _RUN_ARGUMENTS or _known(config, key):
            continue
        parent, _, leaf = key.rpartition("#")
        node = _node(config, parent) if parent else config
        names = [k for k in node if not k.startswith("_")] if isinstance(node, Mapping) else []
        near = difflib.get_close_matches(leaf, names, n=3, cutoff=0.6)
        prefix = f"--{parent}#" if parent else "--"
        hint = f" Did you mean {' or '.join(prefix + k for k in near)}?" if near else ""
        problems.append(f"--{key}: unknown setting; {source} has no id {key!r}.{hint}")
    merged = {**config, **{k: v for k, v in overrides.items() if "#" not in k}}
    try:
        check_settings(merged, [k for k in overrides if k in SETTINGS])
    except SettingsError as e:
        problems.append(str(e))
    if problems:
        raise SettingsError("\n".join(problems))


def _parse_command_line(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The config files and the ``--key value`` overrides of a ``python -m monai.bundle run ...`` command line."""
    from fire.parser import DefaultParseValue  # how `python -m monai.bundle` (fire) reads values

    overrides: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 < len(args) and not args[i + 1].startswith("--"):
                    value, i = args[i + 1], i + 1
                else:
                    value = "True"
            overrides[key.replace("-", "_") if key in ("config-file", "args-file") else key] = DefaultParseValue(value)
        i += 1
    args_file = overrides.get("args_file")
    if args_file:
        from monai.bundle import ConfigParser

        overrides = {**ConfigParser.load_config_file(str(args_file)), **overrides}
    files = overrides.get("config_file") or []
    if isinstance(files, str):
        files = json.loads(files.replace("'", '"')) if files.strip().startswith("[") else files.split(",")
    return [str(f).strip() for f in files], overrides


def _running_bundle_cli(argv: Sequence[str]) -> bool:
    program = Path(argv[0]) if argv else Path()
    return program.name == "__main__.py" and program.parent.name == "bundle" and program.parent.parent.name == "monai"


def stop_command_line(error: BaseException, status: int = 2, argv: Sequence[str] | None = None) -> None:
    """Under ``python -m monai.bundle``, end the process with ``error: <message>`` on stderr and ``status``.

    A run stopped for a reason the user can fix (a bad setting, a diverging loss) then ends with one readable
    line, not a traceback wrapped in MONAI's "Failed to evaluate ConfigExpression". Elsewhere (Python, MONAI
    Label) this returns and the caller re-raises ``error``.
    """
    if _running_bundle_cli(list(sys.argv if argv is None else argv)):
        sys.stderr.write(f"error: {error}\n")
        sys.stderr.flush()
        raise SystemExit(status) from None


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Check the ``--key value`` settings of a ``python -m monai.bundle`` command before any work starts.

    Does nothing when the bundle is not run from that command line (``monai.bundle.run(...)`` in Python, MONAI
    Label). An unknown key, or a bad value of a well-known setting (:data:`SETTINGS`), prints one short message per
    problem and exits with status 2, before data is prepared or any folder is created.
    """
    argv = list(sys.argv if argv is None else argv)
    if not _running_bundle_cli(argv):
        return
    from monai.bundle import ConfigParser

    files, overrides = _parse_command_line(argv[1:])
    if not files:
        return
    config = ConfigParser.load_config_files(files)
    try:
        check_overrides(config, overrides, source=" + ".join(files))
    except SettingsError as error:
        stop_command_line(error, argv=argv)
        raise

"""Checks a bundle run's command line before any work starts: unknown keys and bad values get one short message.

``python -m monai.bundle run`` accepts any ``--key value``: a misspelt key (``--epochz 3``) silently adds an unused
setting, and a bad value (``--epochs abc``, ``--image_size 65``) fails late, at the end of a long traceback, often
after folders were created. :func:`check_command_line` (the first entry of every bundle's ``initialize``) reads the
command line the way ``monai.bundle`` does, and stops with a short message naming the key, the value and what is
accepted (the allowed values of every setting are declared in :mod:`monai_medspike.settings`).
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from monai_medspike.settings import SETTINGS, SettingsError, check_settings
from monai_medspike.utils import bundle_command_line, running_bundle_cli, stop_command_line

__all__ = ["check_command_line", "check_overrides"]

logger = logging.getLogger(__name__)

# what `python -m monai.bundle run` takes itself (monai.bundle.scripts.run / create_workflow / ConfigWorkflow)
_RUN_ARGUMENTS = {
    "config_file", "meta_file", "logging_file", "init_id", "run_id", "final_id", "tracking", "args_file",
    "workflow_name", "workflow_type", "properties_path",
}  # fmt: skip


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


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Check the ``--key value`` settings of a ``python -m monai.bundle`` command before any work starts.

    Does nothing when the bundle is not run from that command line (``monai.bundle.run(...)`` in Python, MONAI
    Label). An unknown key, or a bad value of a declared setting (:data:`monai_medspike.settings.SETTINGS`),
    prints one short message per problem and exits with status 2, before data is prepared or any folder is created.
    """
    argv = list(sys.argv if argv is None else argv)
    if not running_bundle_cli(argv):
        return
    from monai.bundle import ConfigParser

    files, overrides = bundle_command_line(argv)[1:]
    if not files:
        return
    config = ConfigParser.load_config_files(files)
    try:
        check_overrides(config, overrides, source=" + ".join(files))
    except SettingsError as error:
        stop_command_line(error, argv=argv)
        raise

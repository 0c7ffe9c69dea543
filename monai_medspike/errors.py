"""The one error boundary of every command: a failure the user can cause ends in one line and exit status 2.

Every command of the package passes through it: ``python -m monai.bundle run training|evaluating|inferring`` (the
boundary is installed when a bundle config imports the package, :func:`install_bundle_boundary`), ``python -m
monai_medspike.data|compare|energy|bundle`` and ``quickstart`` (:func:`run_command`). What it turns into one line:

- :class:`UserError` anywhere in the exception's chain (the package's ``DataError``, ``SettingsError``,
  ``CheckpointError`` are such errors; MONAI's config parser and transforms wrap them, the boundary finds them);
- a full disk or a quota (``ENOSPC``, ``EDQUOT``), a file or folder that may not be written (``EACCES``,
  ``EPERM``, ``EROFS``) and a path through a file (``ENOTDIR``), naming the file;
- Ctrl-C (``KeyboardInterrupt``).

Anything else is a bug: its traceback is shown as usual. ``MONAI_MEDSPIKE_TRACEBACK=1`` shows the traceback of
every failure, for debugging.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "TRACEBACK_ENV",
    "UserError",
    "install_bundle_boundary",
    "run_command",
    "stray_arguments",
    "user_message",
]

TRACEBACK_ENV = "MONAI_MEDSPIKE_TRACEBACK"
"""Set it to 1 to see the traceback of a failure the boundary would print in one line."""

STATUS = 2
"""The exit status of a failure the user can fix (and of an interrupted run)."""

_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class UserError(Exception):
    """A failure the user can fix; its message names the file, key or value and says what to do."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and its explicit causes (``raise ... from``, as MONAI's wrappers raise): a bug raised while handling
    a user error is not taken for it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__


# a user error re-raised from a data loader worker: its text ends with the worker's "...DataError: <message>"
_WORKER = re.compile(r"^(?:[\w.]+\.)?(?:DataError|SettingsError|CheckpointError|UserError): (.+)$", re.M)


def user_message(error: BaseException) -> str | None:
    """The one line for ``error`` if the user can fix its cause (see the module), else None (a bug)."""
    chain = list(_chain(error))
    for e in chain:
        if isinstance(e, UserError):
            return str(e)
    for e in chain:
        if "DataLoader worker" in str(e) and _WORKER.search(str(e)):
            return _WORKER.findall(str(e))[-1]
    for e in chain:
        if isinstance(e, KeyboardInterrupt):
            return "interrupted (Ctrl-C)."
        if isinstance(e, OSError) and e.errno in (*_FULL, *_DENIED, errno.ENOTDIR):
            where = f"{e.filename or 'a file'}: {e.strerror}"
            if e.errno == errno.ENOTDIR:
                return f"{where}: a part of this path is a file, not a folder. Choose another (e.g. --output_root)."
            if e.errno in _FULL:
                return f"{where}: the disk is full. Free space (or choose another --output_root) and run again."
            return f"{where}: this path may not be used; give one you may read and write (e.g. --output_root)."
    return None


def _report(error: BaseException) -> bool:
    """Print ``error: <one line>`` for a failure the user can fix; False for a bug (nothing printed)."""
    message = user_message(error)
    if message is None:
        return False
    if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
        traceback.print_exception(error)
    sys.stdout.flush()
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return True


def run_command(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a command's ``main``; a failure the user can cause ends the process with one line and status 2."""
    try:
        return main(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as error:
        if not _report(error):
            raise
        raise SystemExit(STATUS) from None


def stray_arguments(argv: Sequence[str]) -> str | None:
    """The problem of a ``python -m monai.bundle`` command line with a value that belongs to no ``--key``
    (``--image_size 32 32``: fire would take the second 32 as a positional argument), or None."""
    expecting = None  # the --key whose value comes next
    last: tuple[str, str] | None = None  # the last --key and its value
    for arg in argv[1:]:
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            expecting, last = (None, (key, value)) if eq else (key, (key, "true"))
        elif expecting is not None:
            expecting, last = None, (expecting, arg)
        elif last is not None:  # not the command or its positional arguments, which come before any --key
            key, given = last
            return (
                f"the value {arg!r} follows {key} {given} but belongs to no --key: each --key takes one value. Give "
                f'a list as one quoted argument, e.g. {key} "[{given}, {arg}]".'
            )
    return None


def _excepthook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    if not _report(error):
        sys.__excepthook__(kind, error, tb)
        return
    # the exit status of an uncaught exception is always 1; finish the process as Python would, with status 2
    import atexit
    import logging
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while finishing changes nothing
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
    except Exception:
        pass
    sys.stdout.flush()
    os._exit(STATUS)


def install_bundle_boundary(argv: Sequence[str] | None = None) -> None:
    """Install the boundary in a ``python -m monai.bundle`` process (called when a bundle config imports the
    package); a command line with a stray value stops here, before any config is read further."""
    argv = list(sys.argv if argv is None else argv)
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
    problem = stray_arguments(argv)
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        raise SystemExit(STATUS)

"""Files named on the command line: what is wrong with one, in a few words, found before use.

An input (a persona, a conversation request, a WAV) must be a regular file: a
FIFO would block the read forever and a device (``/dev/zero``) never ends. An
output (``--audio-out``, ``--transcript``) must not be a directory, and its
directory must exist or be creatable; it is checked before the conversation
runs, not when its result is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def kind_problem(mode: int) -> str | None:
    """``None`` for a regular file (``st_mode``), else what the path is instead."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def read_problem(exc: OSError) -> str:
    """Why a file could not be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "cannot read it: permission denied"
    return f"cannot read it: {exc.strerror or exc}"


def input_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (``None``: it can be tried)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError as exc:
        return read_problem(exc)
    problem = kind_problem(mode)
    if problem is None and not os.access(path, os.R_OK):
        return "cannot read it: permission denied"
    return problem


def nearest_existing(path: Path) -> Path:
    """The closest existing parent of ``path`` (which does not exist): where it would be created."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def output_problem(path: str | Path) -> str | None:
    """Why a file cannot be written at ``path``, judged without writing (``None``: it can;
    missing directories are created). A FIFO or ``/dev/null`` is a fine output."""
    path = Path(path)
    try:
        if path.exists():
            if path.is_dir():
                return "is a directory, not a file"
            if not os.access(path, os.W_OK):
                return "is not writable"
            return None
        return creation_problem(path)
    except OSError as exc:
        return f"cannot be written: {exc.strerror or exc}"
    return None


def creation_problem(path: Path) -> str | None:
    """Why ``path`` (which does not exist) cannot be created with its missing parents."""
    ancestor = nearest_existing(path)
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is not writable"
    return None

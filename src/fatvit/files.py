"""Writing files safely: every file a run writes goes through :func:`atomic_write`.

The data goes to ``NAME.tmp`` beside the target, is flushed and fsynced, then
renamed over the target (and the folder fsynced): a crash or a full disk
leaves the previous file intact and no ``.tmp`` behind, and the failure is
one :class:`~fatvit.errors.FatvitError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

from .errors import FatvitError

__all__ = ["OutputExistsError", "atomic_write", "check_output_dir", "check_output_file", "prepare_output_dir"]


class OutputExistsError(FatvitError):
    """A file a verb would write exists, and replacing it was not asked for."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = Path(path)
        #: what the caller called the file (``check_output_file``'s ``option``)
        self.label = label
        super().__init__(f"{label} {self.path} exists; call again with overwrite=True to replace it")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file to write ``path`` through; it replaces ``path`` only if the block succeeds. A
    missing folder of ``path`` is made first.

    Raises:
        FatvitError: the file cannot be written (full disk, read-only place, ...).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise FatvitError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as a folder to be: an error now, before any work, if it is a file or lies under one.

    Raises:
        FatvitError: ``path`` is a file or lies under a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FatvitError(f"output {path} is a file, not a folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise FatvitError(f"output {path} lies under {parent}, which is a file")
    return path


def check_output_file(path: str | os.PathLike, option: str, overwrite: bool) -> Path:
    """``path`` as a file a verb will write (given as ``option``): an error now, before any work, if it cannot be.

    A missing folder is fine: :func:`atomic_write` makes it when the file is written (after the work, so a
    failed run leaves none).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is off.
        FatvitError: ``path`` is a folder, or its folder lies under a file.
    """
    path = Path(path)
    if path.is_dir():
        raise FatvitError(f"{option} {path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise OutputExistsError(path, option)
    check_output_dir(path.parent)
    return path


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents), or say in one line why it cannot be.

    Raises:
        FatvitError: ``path`` is a file, lies under a file, or cannot be created or written.
    """
    path = check_output_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FatvitError(f"cannot create the output folder {path}: {err.strerror or err}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FatvitError(f"cannot write to the output folder {path}: permission denied")
    return path

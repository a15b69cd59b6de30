"""Atomic file writes: a temp file beside the target, then one rename.

Every writer in sepkit that replaces a file goes through :func:`atomic_write`
(or, for a file a writer may split into parts, :func:`atomic_split_write`),
so that an interrupted or failed write never leaves a half-written target, and
the finished file looks as if ``open(path, "w")`` had written it: the mode of
the file it replaces, else the usual ``0o666 & ~umask`` (``mkstemp`` alone
would leave 0600), and through a symbolic link onto the link's target, as
MNE's ``raw.save(..., overwrite=True)`` does.
"""

from __future__ import annotations

import mmap
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_split_write", "atomic_write", "default_file_mode"]


def default_file_mode() -> int:
    """Permissions ``open()`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _target(path) -> tuple[Path, Path, int]:
    """(file to replace, its folder, the mode it gets) for a write to ``path``.

    A symbolic link is followed; the mode is the replaced file's, else
    :func:`default_file_mode`. A missing folder is an error (nothing is created).
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The folder {str(folder)!r} of {str(path)!r} does not exist. Create it first, "
            "or pass a path in an existing folder."
        )
    mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else default_file_mode()
    return target, folder, mode


@contextmanager
def atomic_write(path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success rename it over ``path``.

    Parameters
    ----------
    path : str or Path
        The file to write. A symbolic link is followed: its target is replaced
        and the link kept.
    suffix : str
        Ending of the temp name, for writers that choose the format by it
        (MNE's FIF writer wants ``_raw.fif``).

    Yields
    ------
    tmp : Path
        Write the complete file here. If the block raises, the temp file is
        removed and ``path`` is left as it was.

    Raises
    ------
    FileNotFoundError
        When the folder of ``path`` does not exist (nothing is created).
    """
    target, folder, mode = _target(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_split_write(path, part_name: Callable[[int], str]) -> Iterator[Path]:
    """Yield ``path``'s own name in a hidden folder beside it; on success move its parts into place.

    For a writer that splits a large file into parts named after it, the first
    naming the next (MNE's FIF writer beyond 2 GB: ``x_raw.fif``,
    ``x_raw-1.fif``, ...): the parts must carry their final names when
    written, so :func:`atomic_write`'s temp name would leave them under
    names of its own. Every file written in the folder is moved into
    ``path``'s folder, the other parts first and ``path`` last, so that
    ``path`` appears only once its parts are in place; parts of the file it
    replaces that this one does not replace are then removed. A part counts as
    the replaced file's only where the part before it names it (MNE's parts
    name the next), so a file that merely looks like a part (``x-1.fif``
    beside a new or unsplit ``x.fif``) is never touched.

    Parameters
    ----------
    path : str or Path
        The first part. A symbolic link is followed, as by :func:`atomic_write`.
    part_name : callable
        ``part_name(k)``: the name of part ``k`` (1, 2, ...) of ``path``.

    Yields
    ------
    tmp : Path
        Write here (its name is ``path``'s). If the block raises, the hidden
        folder is removed and nothing beside ``path`` has changed.
    """
    target, folder, mode = _target(path)
    replaced = _split_chain(target, folder, part_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=folder))
    try:
        yield staging / target.name
        parts = sorted(p for p in staging.iterdir() if p.name != target.name)
        for part in [*parts, staging / target.name]:
            os.chmod(part, mode)
            os.replace(part, folder / (target.name if part.name == target.name else part.name))
        for stale in replaced[len(parts) :]:
            stale.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _split_chain(target: Path, folder: Path, part_name: Callable[[int], str]) -> list[Path]:
    """The parts 1, 2, ... of the file at ``target`` now: each named by the one before it."""
    chain, previous = [], target
    while True:
        part = folder / part_name(len(chain) + 1)
        if not (part.is_file() and _names(previous, part.name)):
            return chain
        chain.append(part)
        previous = part


def _names(path: Path, name: str) -> bool:
    """Whether the file at ``path`` holds the bytes of ``name`` (a FIF part names the next)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    # Memory-mapped: a part can be 2 GB, and the reference sits near its end.
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return view.find(name.encode()) >= 0

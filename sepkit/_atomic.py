"""Atomic file writes: a temp file beside the target, then one rename.

Every writer in sepkit that replaces a file goes through :func:`atomic_write`,
so that an interrupted or failed write never leaves a half-written target, and
the finished file looks as if ``open(path, "w")`` had written it: the mode of
the file it replaces, else the usual ``0o666 & ~umask`` (``mkstemp`` alone
would leave 0600), and through a symbolic link onto the link's target, as
MNE's ``raw.save(..., overwrite=True)`` does.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "default_file_mode"]


def default_file_mode() -> int:
    """Permissions ``open()`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The folder {str(folder)!r} of {str(path)!r} does not exist. Create it first, "
            "or pass a path in an existing folder."
        )
    mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

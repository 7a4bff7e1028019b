"""Writing output files atomically: a file is whole or absent, never half-written.

A leaf module: it imports nothing of giantstep.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Whatever happens inside the block (a full disk, an exception, Ctrl-C), ``path`` keeps its
    old content (or stays absent) and the temporary file is removed. The temporary name keeps
    the suffix, so writers that choose a format by the file name (matplotlib) still do.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("whole")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('whole', ['out.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # on disk before the rename makes it visible
            os.fsync(written.fileno())
        # mkstemp makes the file private: keep the replaced file's permissions, or give the
        # ones a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)

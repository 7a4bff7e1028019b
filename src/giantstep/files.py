"""Writing output files atomically: a file is whole or absent, never half-written.

Only regular files are replaced: a path that is a FIFO, a device, a socket or a folder is
refused (OutputPathError), since the rename would put a regular file in its place. A symbolic
link is written through: the file it points at is replaced, the link is kept.

A leaf module: it imports nothing of giantstep.
"""

from __future__ import annotations

import os
import select
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot be written as a regular file: ``path`` (as given) and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link that does not resolve (a loop)"),
)


#: Longest path the system opens, in bytes (Linux's PATH_MAX): checked before any work.
PATH_LIMIT = 4096
#: Seconds an input file that is a FIFO is waited for: bash's ``<(...)`` writes to its pipe at
#: once; a named pipe nobody writes to blocked the command for ever.
PIPE_WAIT = 10.0


def kind_of(mode: int) -> str:
    """What a file of ``st_mode`` that is not a regular file is, for a message: ``"a FIFO
    (named pipe)"``, ...."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_input(path: str | Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the input file ``path`` (one more than ``limit`` says it
    is larger). A FIFO is read once something is written to it; TimeoutError if nothing is
    within ``PIPE_WAIT`` seconds. OSError as ``open`` raises it otherwise."""
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        with open(path, "rb") as f:
            return f.read(limit + 1)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening for reading waits for a writer
    try:
        if not select.select([fd], [], [], PIPE_WAIT)[0]:
            raise TimeoutError(f"a FIFO (named pipe) nothing was written to in {PIPE_WAIT:g} s")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[: limit + 1]
    finally:
        os.close(fd)


def make_folders(folder: str | Path) -> None:
    """``folder`` and every missing folder above it, like ``mkdir -p``, one level at a time:
    ``Path.mkdir(parents=True)`` recurses once per level, and a path 1000 folders deep ran past
    Python's recursion limit (RecursionError)."""
    missing, folder = [], Path(folder)
    while not folder.is_dir() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        level.mkdir(exist_ok=True)


def output_path(path: str | Path) -> Path:
    """The file to write for ``path``, checked before any work; nothing is created.

    ``path`` itself, or for a symbolic link the file it points at (written through, the link
    kept). Raises OutputPathError naming ``path`` if it (or its link's target) exists and is
    not a regular file — a folder, a FIFO, a device, a socket — or if the nearest existing
    folder above it is a file.
    """
    given = Path(path)
    if len(os.fsencode(os.path.abspath(given))) >= PATH_LIMIT:
        raise OutputPathError(given, f"a path of {PATH_LIMIT} bytes or more: the system refuses it")
    target = given
    try:
        if stat.S_ISLNK(os.lstat(given).st_mode):
            target = Path(os.path.realpath(given))
    except (FileNotFoundError, NotADirectoryError):
        pass
    try:
        mode = os.lstat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = kind_of(mode)
        shown = "" if target == given else f" (links to {target})"
        raise OutputPathError(given, f"is {kind}{shown}, not a regular file: not replaced")
    if target != given and not target.parent.is_dir():  # a link into a folder that is not there
        raise OutputPathError(given, f"links to {target}, whose folder does not exist")
    folder = given.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(given, f"{folder} is not a folder")
    return target


def _naming(err: OSError, tmp: Path | None, path: Path) -> OSError:
    """``err`` naming ``path`` where it named the temporary file ``tmp`` (with ``tmp`` None:
    any file, the error having come from making the folder or the temporary file)."""
    if err.errno is None or (tmp is not None and err.filename not in (str(tmp), tmp)):
        return err
    return type(err)(err.errno, err.strerror, str(path))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Whatever happens inside the block (a full disk, an exception, Ctrl-C), ``path`` keeps its
    old content (or stays absent) and the temporary file is removed. The temporary name keeps
    the suffix, so writers that choose a format by the file name (matplotlib) still do.
    ``path`` is checked first (:func:`output_path`): only a regular file is replaced, a
    symbolic link is written through, and errors name ``path``, never the temporary file.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("whole")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('whole', ['out.txt'])
    """
    given = Path(path)
    path = output_path(given)
    try:
        make_folders(given.parent)  # a new file's (a link's: output_path)
        # A short prefix: a name near the 255-byte limit would overflow it (File name too long).
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name[:64]}.", suffix=path.suffix[:16]
        )
    except OSError as err:
        raise _naming(err, None, given) from err
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
        output_path(given)  # still a regular file (or absent) just before the rename
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        named = _naming(err, tmp, given)
        if named is err:
            raise
        raise named from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)

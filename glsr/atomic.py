"""Atomic file writes (readers never see a half-written output) and exclusive writers (two glsr processes never
write one run folder or export target at once). Imports nothing from glsr."""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt


class LockedError(ValueError):
    """Another process holds the lock; the message names the locked thing, the holder and what to do."""


def _try_lock(fd: int) -> bool:
    """Non-blocking exclusive lock of an open file; ``False`` when another process holds it. The operating system
    releases it when the holder exits, even by ``kill -9``, so a lock is never stale."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeLockError(ValueError):
    """A lock file glsr would open is a symbolic link, a hard link or not a regular file: it never writes through
    one (a planted link would make it overwrite the file it points to)."""


def _open_lock(path: Path) -> int:
    """Open the lock file ``path``: created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never through a planted
    symbolic link), or, when it exists (a killed holder leaves it; the kernel has released its lock), opened with
    ``O_NOFOLLOW`` and accepted only as a regular file with one link (a hard link to another file is refused)."""
    for _ in range(3):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        except FileExistsError:
            pass
        except OSError as e:  # name the folder the user chose, not the lock file inside it
            raise OSError(e.errno, e.strerror or str(e), str(path.parent)) from None
        try:
            fd = os.open(path, os.O_RDWR | NOFOLLOW)
        except FileNotFoundError:
            continue  # its holder removed it meanwhile: create it
        except OSError as e:
            if os.path.islink(path):
                raise UnsafeLockError(f"lock file {path} is a symbolic link; glsr never opens a lock through a "
                                      "link (it would write into the file it points to): remove the link") from None
            raise OSError(e.errno, e.strerror or str(e), str(path.parent)) from None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return fd
        os.close(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
            continue  # removed by its releasing holder between our open and fstat
        what = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise UnsafeLockError(f"lock file {path} is {what}; glsr never writes into it: remove it")
    raise OSError(errno.EAGAIN, "the lock file keeps disappearing; run it again", str(path))


def _holder() -> str:
    """Who holds a lock: pid, host, start time and command line (written into the lock file)."""
    import time

    prog = sys.argv[0] if sys.argv else ""
    prog = "glsr" if prog.endswith(("__main__.py", "glsr")) else Path(prog).name
    command = " ".join([prog] + sys.argv[1:])[:300]
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}: {command}"


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, and removed on release) for the ``with`` block.

    A second holder gets :class:`LockedError`: ``"<what> is in use by another glsr process (pid N on HOST:
    COMMAND); <fix>"``. The lock file holds the holder's pid, host and command line.
    """
    path = Path(path)
    while True:
        fd = _open_lock(path)
        if not _try_lock(fd):
            try:
                holder = os.read(fd, 1000).decode("utf-8", "replace").strip() or "pid unknown"
            finally:
                os.close(fd)
            raise LockedError(f"{what} is in use by another glsr process ({holder}); {fix}")
        try:  # a releasing holder may have removed the file between our open and lock: lock the current file
            current = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, _holder().encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


@contextlib.contextmanager
def scratch_dir(parent: str | os.PathLike, prefix: str) -> Iterator[Path]:
    """A private scratch folder ``parent/<prefix>XXXX`` removed afterwards; it holds a lock for its lifetime so
    that :func:`remove_stale_scratch` can tell the folders of live processes from those a killed one left."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    # locked under another name first, then renamed: a `.lock` that exists is always held by a live owner or by
    # nobody, never caught between its creation and its locking by a concurrent remove_stale_scratch
    fd = _open_lock(d / ".lock.new")
    _try_lock(fd)
    os.replace(d / ".lock.new", d / ".lock")
    try:
        yield d
    finally:
        os.close(fd)
        import shutil

        shutil.rmtree(d, ignore_errors=True)


def remove_stale_scratch(parent: str | os.PathLike, prefix: str, legacy_age_s: float = 6 * 3600) -> int:
    """Remove ``parent/<prefix>*`` folders whose owner is gone (their lock is free; folders without a lock, from
    older glsr versions, once older than ``legacy_age_s``). Returns how many were removed."""
    import shutil
    import time

    import re

    removed = 0
    ours = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}")  # tempfile.mkdtemp's names: never a user's folder
    for d in Path(parent).glob(prefix + "*"):
        if not ours.fullmatch(d.name) or not d.is_dir() or d.is_symlink():
            continue
        lock = d / ".lock"
        if lock.is_file() and not lock.is_symlink():
            try:
                fd = os.open(lock, os.O_RDONLY | NOFOLLOW)
            except OSError:
                continue
            try:
                stale = _try_lock(fd)
            finally:
                os.close(fd)
        else:
            try:
                stale = time.time() - d.stat().st_mtime > legacy_age_s
            except OSError:
                continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed += not d.exists()
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, on error delete it.

    Parent folders are created. The file gets the usual permissions (``0666 & ~umask``), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # read-only file system, no permission, a file where the folder belongs: name the target
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename in (None, tmp):  # a full disk while writing the temporary file: name the target
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)

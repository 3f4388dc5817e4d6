"""One way to write an artefact: under a temporary name in its folder, renamed into place.

A reader never sees a half-written file under its final name: every file goes to
``.NAME.<random>.tmp`` beside it and ``os.replace`` moves it into place when it is whole (a
killed writer leaves only a hidden temporary file, which no guard takes for an artefact). A
folder written by several files is complete only when its marker ``.complete`` is written last
(:func:`mark_complete`); its writer holds :class:`FolderLock` on it, so a second writer fails at
once with a line naming the process that holds it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile

COMPLETE = ".complete"
LOCK = ".lock"


class ArtefactError(Exception):
    """An output folder that cannot be written, or is being written by another process."""


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, renamed)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text(path: str, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj, **dump_kwargs) -> str:
    return write_text(path, json.dumps(obj, **dump_kwargs))


def save_figure(fig, path: str, **savefig_kwargs) -> str:
    """``fig.savefig`` to ``path`` atomically (the format from ``path``'s extension)."""
    import io
    buf = io.BytesIO()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    return write_bytes(path, buf.getvalue())


def mark_complete(folder: str) -> None:
    """Write ``folder``'s completion marker: call it after its last file."""
    write_text(os.path.join(folder, COMPLETE), "")


def is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE))


def check_writable(folder: str, flag: str = "out") -> None:
    """Fail before any work when ``folder`` (or the nearest existing folder above it) cannot be
    written, or names a file where a folder is meant."""
    path = os.path.abspath(folder)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ArtefactError(f"--{flag}={folder} is a file, not a folder")
    probe = path
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ArtefactError(f"--{flag}={folder}: {probe} is not writable")


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``folder/.lock`` while a writer fills ``folder``.

    The lock file holds the writer's pid; it is released when the writer exits, however it
    exits (the kernel drops the lock with the process), so a stale file never blocks a rerun.
    """

    def __init__(self, folder: str):
        self.folder = folder
        self._fd = None

    def __enter__(self) -> "FolderLock":
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ArtefactError(f"{self.folder} is being written by another process "
                                    f"(pid {holder}); wait for it to finish, or choose another "
                                    "output folder") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

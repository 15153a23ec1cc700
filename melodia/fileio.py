"""Atomic file writes: nothing a user already has is ever half-overwritten.

Every output melodia writes goes through :func:`atomic_write` (or the helpers on top of it):
the data goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed
over the target, which is atomic on POSIX and Windows. A kill at any moment leaves either the
old file or the new one, never a torn one. Whole folders (a model directory, a checkpoint) are
built beside their target and swapped in by renames (:func:`make_temp_dir`, :func:`replace_dir`,
:func:`recover_dir`).

A write the system refuses (a full disk, a read-only disk, a folder where the file should
go) is one :class:`~melodia.errors.MelodiaError` line naming the file (:func:`cannot_write`),
and the file that was there before is left as it was.

Example:
    >>> write_json("out/report.json", {"skipped": []})
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import BadInputError, MelodiaError, OutputExistsError

#: errors of the disk, not of the program: a write that meets one becomes a one-line
#: :class:`~melodia.errors.MelodiaError` naming the file (the CLI exits 2)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def cache_dir() -> Path:
    """melodia's cache folder: ``$MELODIA_CACHE``, else ``$XDG_CACHE_HOME/melodia``, else
    ``~/.cache/melodia`` (music21 exports, the precision probe's answers). Not created here.

    Example: ``cache_dir() / "music21-export"``
    """
    base = os.environ.get("MELODIA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "melodia")
    return Path(base)


def check_out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that ``path`` can be the folder a command writes into, before any work starts.

    It may exist as a writable folder, or be missing with its nearest existing parent a
    writable folder (it is made when the first file is written). A file in its place, or a
    folder without write permission, is a :class:`~melodia.errors.BadInputError` naming the
    path, so a command fails in one line instead of with a traceback after minutes of work.

    Example:
        >>> check_out_dir("out/pieces")
        PosixPath('out/pieces')
    """
    out = Path(path)
    probe = out
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    here = "" if probe == out else f" (in {out})"
    if probe.exists() and not probe.is_dir():
        problem = "is a file, not a folder" if probe.is_file() else "is not a folder"
        raise BadInputError(f"{what} {probe}: {problem}{here}; give a folder to write into")
    if probe.is_symlink() and not probe.exists():
        raise BadInputError(f"{what} {probe}: a broken link{here}; give a folder to write into")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadInputError(f"{what} {probe}: no permission to write there{here}")
    return out


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", force: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    Example:
        >>> with atomic_write("a.bin") as f:
        ...     f.write(b"data")
    """
    path = Path(path)
    if not force and path.exists():
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise cannot_write(path, e, existed) from None
    in_body = False
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            in_body = True
            yield f
            in_body = False
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; give what a plain open() would
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # the disk refused the data, or the target cannot be replaced: one line, the old file kept
        if isinstance(e, OSError) and (not in_body or e.errno in DISK_ERRNOS):
            raise cannot_write(path, e, existed) from None
        raise


def cannot_write(path: str | os.PathLike, e: OSError, existed: bool | None = None) -> MelodiaError:
    """The one-line error for a write the system refused (a full disk, a folder in the way).

    ``existed``: whether ``path`` was there before (then it is said to be kept as it was).

    Example:
        >>> cannot_write("out/a.mid", OSError(28, "No space left on device"), True)
        MelodiaError('out/a.mid: cannot write (No space left on device); the old file is kept')
    """
    kept = "" if existed is None else "; the old file is kept" if existed else "; nothing was written"
    return MelodiaError(f"{path}: cannot write ({e.strerror or e}){kept}")


def _mode_for(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o777  # keep an existing file's permissions
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes(path: str | os.PathLike, data: bytes, force: bool = True) -> None:
    """Atomically write ``data`` to ``path``. Example: ``write_bytes("x.mid", b"MThd...")``."""
    with atomic_write(path, "wb", force=force) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, force: bool = True) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``. Example: ``write_text("a.md", "# hi")``."""
    with atomic_write(path, "w", force=force) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, force: bool = True, indent: int | None = 1) -> None:
    """Atomically write ``obj`` as JSON. Example: ``write_json("a.json", {"a": 1})``."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", force=force)


def write_jsonl(path: str | os.PathLike, rows: list[dict], force: bool = True) -> None:
    """Atomically write one JSON object per line. Example: ``write_jsonl("m.jsonl", [{"a": 1}])``."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), force=force)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file into a list of dicts. Example: ``rows = read_jsonl("manifest.jsonl")``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------ whole folders
def _share_like_umask(root: Path) -> None:
    """mkdtemp/mkstemp make private (0700/0600) entries; give them the modes a plain mkdir/open would."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not possible on every platform; best effort
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_temp_dir(final: str | os.PathLike) -> Path:
    """An empty hidden folder beside ``final`` to build it in. Example: ``tmp = make_temp_dir("out/model")``."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        raise cannot_write(final, e) from None


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Swap a fully written folder ``tmp`` in as ``final`` with renames.

    The old ``final`` is first renamed to ``.<name>.old``, then ``tmp`` becomes ``final``, then
    the old one is deleted. A kill at any moment leaves a complete folder at ``final`` or at
    ``.<name>.old`` (:func:`recover_dir` puts it back), never a half-written one.

    Example:
        >>> replace_dir(make_temp_dir("out/ckpt"), "out/ckpt")
    """
    tmp, final = Path(tmp), Path(final)
    _share_like_umask(tmp)
    _fsync_tree(tmp)
    old = final.parent / f".{final.name}.old"
    if old.exists() and final.exists():
        shutil.rmtree(old)  # a leftover from an earlier interrupted swap; final is newer
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: str | os.PathLike) -> Path | None:
    """After a kill: put back the complete folder :func:`replace_dir` left, drop half-built ones.

    Returns ``final`` if a complete folder is there afterwards, else None.
    Example: ``recover_dir("runs/a/checkpoint")``.
    """
    final = Path(final)
    old = final.parent / f".{final.name}.old"
    if not final.exists() and old.exists():
        os.replace(old, final)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if final.parent.exists():
        for tmp in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
    return final if final.exists() else None

"""Atomic file writes: nothing a user already has is ever half-overwritten.

Every output melodia writes goes through :func:`atomic_write` (or the helpers on top of it):
the data goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed
over the target, which is atomic on POSIX and Windows. A kill at any moment leaves either the
old file or the new one, never a torn one.

Example:
    >>> write_json("out/report.json", {"skipped": []})
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import OutputExistsError


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; give what a plain open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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

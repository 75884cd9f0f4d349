"""Atomic output helpers: an interrupted run never leaves a file that looks valid.

Everything samdeploy writes goes through :func:`atomic_path` (write to a temporary sibling, fsync,
``os.replace``) so readers only ever see complete files. Final files get the mode a plain
``open(path, "w")`` would give them under the current umask (not ``mkstemp``'s 0600).

:func:`verify_sha256_cached` checks files against expected SHA-256 digests, remembering files it
has already hashed by ``(path, size, mtime_ns, ctime_ns, inode)`` in-process and in a small
``.samdeploy-verified.json`` next to them, so that re-opening a large model does not rehash it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

VERIFIED_CACHE_NAME = ".samdeploy-verified.json"
# An export writes into <out>/.samdeploy-export-<pid>-*/ first; the runtime treats one as "unfinished".
EXPORT_STAGING_PREFIX = ".samdeploy-export-"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def default_file_mode() -> int:
    """Mode of a new file made by ``open(path, "w")`` under the current umask (0644 under 022)."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """Mode of a new directory made by ``os.mkdir`` under the current umask (0755 under 022)."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success it is renamed onto ``final``.

    On any exception the temporary file is removed and ``final`` is left untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, default_file_mode())  # mkstemp made it 0600
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# ---- cached hash verification (no torch: the runtime uses it) -----------------------------------
_VERIFIED: dict[tuple, str] = {}  # (abs path, size, mtime_ns, ctime_ns, ino) -> sha256 seen


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _read_cache(cache_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {"files": {}}
    except (OSError, ValueError):
        return {"files": {}}


def verify_sha256_cached(base_dir: str | os.PathLike, entries: Iterable[tuple[str, int | None, str]]) -> list[str]:
    """Problems (missing / wrong size / wrong SHA-256) of ``(relative path, size, sha256)`` entries
    under ``base_dir``; an empty list means every file matches.

    A file whose ``(path, size, mtime_ns, ctime_ns, inode)`` was hashed before (in this process, or
    recorded in ``<base_dir>/.samdeploy-verified.json``) is not hashed again. The cache file is
    best effort: a read-only directory just means rehashing in each new process."""
    base_dir = Path(base_dir)
    cache_file = base_dir / VERIFIED_CACHE_NAME
    disk: dict[str, Any] | None = None
    dirty = False
    problems: list[str] = []
    for rel, size, expected in entries:
        p = base_dir / rel
        try:
            key = _stat_key(p)
        except FileNotFoundError:
            problems.append(f"{rel} is missing")
            continue
        if size is not None and key[1] != size:
            problems.append(f"{rel} has {key[1]} bytes, the manifest says {size}")
            continue
        actual = _VERIFIED.get(key)
        if actual is None:
            if disk is None:
                disk = _read_cache(cache_file)
            rec = disk["files"].get(rel)
            if isinstance(rec, dict) and rec.get("key") == list(key[1:]) and isinstance(rec.get("sha256"), str):
                actual = rec["sha256"]
            else:
                actual = sha256_file(p)
                disk["files"][rel] = {"key": list(key[1:]), "sha256": actual}
                dirty = True
            _VERIFIED[key] = actual
        if actual != expected:
            problems.append(f"{rel} differs from the manifest (its SHA-256 does not match: modified or damaged after export)")
    if dirty and disk is not None:
        with contextlib.suppress(OSError):
            write_json_atomic(cache_file, disk)
    return problems

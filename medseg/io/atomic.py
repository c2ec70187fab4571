"""Atomic file writes: write to a temporary file in the target folder, fsync, then rename.

A reader never sees a half-written file: either the old file (or nothing) is at the path, or the complete
new one. On any exception inside the block the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Compression suffixes that belong to the format name before them (``.nii.gz``, ``.tar.gz``).
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def full_suffix(path: str | os.PathLike) -> str:
    """The file-type suffix of ``path``, keeping a compression suffix with the one before it.

    Args:
        path: a file path.

    Returns:
        For example ``".nii.gz"`` for ``"case.t1.nii.gz"``, ``".json"`` for ``"a.json"``, ``""`` for ``"README"``.
    """
    suffixes = Path(path).suffixes
    if not suffixes:
        return ""
    if suffixes[-1].lower() in _COMPRESSION_SUFFIXES and len(suffixes) >= 2:
        return "".join(suffixes[-2:])
    return suffixes[-1]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp_path(target: Path) -> Path:
    suffix = full_suffix(target)
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp{suffix}"
        try:
            # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide the permissions,
            # so the final file gets the same permissions a plain open() would give it.
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"could not create a temporary file next to {target}")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file lives in the same folder (so the final ``os.replace`` is a rename on one file system),
    is hidden (leading dot) and ends with the same suffix as ``path`` (e.g. ``.nii.gz``), so libraries that
    choose a format from the name write the right one. It exists (empty) when the block starts. Missing
    parent folders are created.

    Args:
        path: the final file path.

    Yields:
        The temporary path to write to.

    Raises:
        Whatever the block raises; the temporary file is then removed and ``path`` is left as it was.

    Example:
        >>> with atomic_write("out/mask.nii.gz") as tmp:  # doctest: +SKIP
        ...     nibabel.save(image, tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_path(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the final file path.
        data: the complete file content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded, newlines as given.

    Args:
        path: the final file path.
        text: the complete file content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))

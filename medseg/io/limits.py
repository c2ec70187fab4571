"""Refuse oversized or truncated volumes before any voxel memory is allocated.

A header can declare any size (a 348-byte NIfTI file can claim 32767^3 voxels). These checks compare the
declared size with a configurable voxel cap and with what the file can physically hold, so a bad file
costs a header read, never a huge allocation.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

from medseg.errors import InputError

DEFAULT_MAX_VOXELS: int = 2**31
"""Default cap on the number of voxels (all dimensions, channels included) a loaded volume may declare."""

# Deflate cannot compress better than about 1032:1, so a gzip file of n bytes holds at most about
# 1032 * n bytes once decompressed; the slack covers headers and tiny files.
_DEFLATE_MAX_RATIO = 1032
_GZIP_SLACK_BYTES = 1 << 16
_STREAM_CHUNK = 1 << 20


def check_voxel_count(shape: tuple[int, ...], max_voxels: int, path: Path) -> int:
    """Refuse a declared shape with more voxels than ``max_voxels``.

    Args:
        shape: the declared shape, every dimension.
        max_voxels: the cap.
        path: the file, for the message.

    Returns:
        The number of voxels.

    Raises:
        InputError: when the count exceeds the cap.
    """
    count = math.prod(int(n) for n in shape)
    if count > max_voxels:
        raise InputError(
            f"{path}: header declares shape {tuple(int(n) for n in shape)} = {count} voxels, more than the "
            f"limit of {max_voxels} (max_voxels); refusing to allocate it (raise max_voxels if the file is genuine)"
        )
    return count


def check_plain_file_holds(path: Path, needed_bytes: int) -> None:
    """Refuse an uncompressed file smaller than its header says it must be.

    Args:
        path: the file.
        needed_bytes: data offset plus voxel bytes declared by the header.

    Raises:
        InputError: when the file is shorter.
    """
    size = path.stat().st_size
    if size < needed_bytes:
        raise InputError(
            f"{path}: truncated or corrupt: the header declares {needed_bytes} bytes (offset + voxels) "
            f"but the file has only {size} bytes"
        )


def gzip_isize(path: Path) -> int | None:
    """The uncompressed size modulo 2**32 stored in a gzip file's last 4 bytes (``None`` if too short).

    For a file made of several gzip members it is the last member's size, so it is only a hint.
    """
    size = path.stat().st_size
    if size < 18:  # smallest possible gzip member: 10-byte header, empty deflate block, 8-byte trailer
        return None
    with open(path, "rb") as handle:
        handle.seek(size - 4)
        return struct.unpack("<I", handle.read(4))[0]


def gzip_stream_length(path: Path, stop_after: int) -> int:
    """Decompress ``path`` in chunks and count bytes, stopping once ``stop_after`` are seen (bounded memory).

    Raises:
        InputError: when the gzip stream is corrupt or ends early (its end-of-stream marker is missing).
    """
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total < stop_after:
                chunk = stream.read(min(_STREAM_CHUNK, stop_after - total))
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip data ({exc})") from exc
    return total


def check_gzip_holds(path: Path, needed_bytes: int) -> None:
    """Refuse a gzip file that cannot decompress to the ``needed_bytes`` its header declares.

    First a bound that costs nothing (deflate's maximum ratio); then the gzip size trailer; only when the
    trailer disagrees (a truncated file, or several gzip members) is the file decompressed and counted,
    in chunks, without keeping the data.

    Args:
        path: the ``.nii.gz`` file.
        needed_bytes: data offset plus voxel bytes declared by the header.

    Raises:
        InputError: when the file cannot hold that much data.
    """
    compressed = path.stat().st_size
    most = compressed * _DEFLATE_MAX_RATIO + _GZIP_SLACK_BYTES
    if needed_bytes > most:
        raise InputError(
            f"{path}: truncated or corrupt: the header declares {needed_bytes} bytes of data but a gzip file of "
            f"{compressed} bytes can hold at most about {most}"
        )
    if gzip_isize(path) == needed_bytes % 2**32:
        return
    found = gzip_stream_length(path, needed_bytes)
    if found < needed_bytes:
        raise InputError(
            f"{path}: truncated or corrupt: the header declares {needed_bytes} bytes (offset + voxels) but the "
            f"gzip data holds only {found} bytes"
        )


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"

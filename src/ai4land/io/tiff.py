"""Is a (Geo)TIFF whole? Its directories say where every image block lies; a truncated
file (a short download) has blocks past its end even when its header is intact.

Reading a window decodes only the blocks under it, so a region inside the intact part
of a truncated file would pass unnoticed. :func:`require_complete` reads the offsets
and byte counts of every directory (full image, overviews, masks) and compares them
with the file size: a few kilobytes read, nothing decoded, whatever the raster's size
(a 36000 x 18000 map in 256-pixel tiles lists ~10 000 blocks). Blocks inside the file
but damaged are found where they are decoded (the caller reads what it uses).
Works on plain files and on members of a zip archive (``/vsizip/ARCHIVE/MEMBER``).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ai4land.errors import InputDataError

# Strip and tile offsets / byte counts (TIFF 6.0 tags 273, 279, 324, 325).
_OFFSETS = {273: 279, 324: 325}
_SIZES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
_MAX_DIRECTORIES = 256


@contextmanager
def _open_bytes(path: str) -> Iterator[tuple[BinaryIO, int]]:
    """The file (or zip member) as a seekable binary stream, and its size in bytes."""
    if path.startswith("/vsizip/"):
        inner = path[len("/vsizip/"):]
        cut = inner.lower().find(".zip/")
        if cut < 0:
            raise ValueError(f"{path}: not a /vsizip/ARCHIVE.zip/MEMBER path")
        archive, member = inner[: cut + 4], inner[cut + 5 :]
        with zipfile.ZipFile(archive) as zf, zf.open(member) as fh:
            yield fh, zf.getinfo(member).file_size
    else:
        with open(path, "rb") as fh:
            yield fh, Path(path).stat().st_size


def _read(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise EOFError
    return data


def blocks_end(fh: BinaryIO) -> int | None:
    """The byte just past the last image block any directory of the TIFF lists (None:
    not a TIFF). EOFError if the directories themselves run past the end.

    The offset and byte-count arrays are read in file order after the directories, so
    a zip member (whose stream rewinds and inflates again for a backward seek) is read
    through about once per directory."""
    head = fh.read(16)
    if head[:2] not in (b"II", b"MM"):
        return None
    order = "<" if head[:2] == b"II" else ">"
    (magic,) = struct.unpack(order + "H", head[2:4])
    if magic == 42:
        big, offset = False, struct.unpack(order + "I", head[4:8])[0]
    elif magic == 43:
        big, offset = True, struct.unpack(order + "Q", head[8:16])[0]
    else:
        return None
    count_fmt, entry_fmt, entry_size, inline = (("Q", "HHQ8s", 20, 8) if big
                                                else ("H", "HHI4s", 12, 4))
    pointer_fmt = order + ("Q" if big else "I")
    count_size = struct.calcsize(count_fmt)
    arrays: list[dict[int, list[int]]] = []  # per directory: tag -> values
    pending = []  # (file offset, struct format, directory, tag) of arrays stored apart
    for _ in range(_MAX_DIRECTORIES):
        if offset == 0:
            break
        (n,) = struct.unpack(order + count_fmt, _read(fh, offset, count_size))
        table = _read(fh, offset + count_size, n * entry_size + struct.calcsize(pointer_fmt))
        found: dict[int, list[int]] = {}
        for i in range(n):
            tag, kind, count, value = struct.unpack_from(order + entry_fmt, table, i * entry_size)
            if tag not in (*_OFFSETS, *_OFFSETS.values()) or kind not in _SIZES:
                continue
            fmt = order + f"{count}{_SIZES[kind]}"
            if struct.calcsize(fmt) <= inline:
                found[tag] = list(struct.unpack(fmt, value[: struct.calcsize(fmt)]))
            else:
                pending.append((struct.unpack(pointer_fmt, value)[0], fmt, len(arrays), tag))
        arrays.append(found)
        (offset,) = struct.unpack_from(pointer_fmt, table, n * entry_size)
    for where, fmt, directory, tag in sorted(pending):
        arrays[directory][tag] = list(struct.unpack(fmt, _read(fh, where, struct.calcsize(fmt))))
    end = 0
    for found in arrays:
        for offsets_tag, counts_tag in _OFFSETS.items():
            for start, length in zip(found.get(offsets_tag, []), found.get(counts_tag, []),
                                     strict=False):
                if length:
                    end = max(end, start + length)
    return end


def require_complete(path: str, *, what: str = "raster") -> None:
    """InputDataError (one line) if the TIFF at ``path`` lists blocks past its end.

    Files that are not TIFFs pass (other formats are checked where they are decoded).
    """
    try:
        with _open_bytes(path) as (fh, size):
            try:
                end = blocks_end(fh)
            except EOFError:
                raise InputDataError(
                    f"{path}: {what} is truncated: its TIFF directories run past the end of "
                    f"its {size} bytes; delete it and download it again"
                ) from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InputDataError(f"{path}: cannot be read as a {what} ({exc}); "
                             "delete it and download it again") from None
    if end is not None and end > size:
        raise InputDataError(
            f"{path}: {what} is truncated: its TIFF directory lists data up to byte {end}, "
            f"the file holds {size} bytes; delete it and download it again"
        )

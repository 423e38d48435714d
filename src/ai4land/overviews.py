"""Mode overviews of a class map, built while its rows stream in.

GDAL's COG driver computes the overviews of a layer when it converts it, after the
model has finished; for a class map its MODE resampling was about a third of the
conversion time. :class:`ModeOverviews` computes the same values (GDAL's rules: level
k from level k - 1, ``n // 2**k`` pixels a side, each overview pixel the most frequent
valid value of its source window, the first value to reach the highest count on ties,
nodata where the window holds none), row block by row block as the rows are written,
so the conversion only copies them (``OVERVIEWS=FORCE_USE_EXISTING``); the COG bytes
are GDAL's own (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

RowSink = Callable[[int, np.ndarray], None]  # (first row, rows) of one overview level


def overview_shapes(shape: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """The (height, width) of each of ``count`` overview levels, as the COG driver
    sizes them: the full size halved k times, rounded down."""
    return [(shape[0] >> k, shape[1] >> k) for k in range(1, count + 1)]


def source_windows(n_source: int, n_target: int) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) of the source pixels under each of ``n_target`` overview pixels along
    one axis, by GDAL's rule for a ratio that need not be whole."""
    ratio = n_source / n_target
    start = np.empty(n_target, dtype=np.int64)
    stop = np.empty(n_target, dtype=np.int64)
    for i in range(n_target):
        first = int(i * ratio + 1e-8)
        last = int(math.ceil((i + 1) * ratio - 1e-8))
        start[i], stop[i] = max(first, 0), min(max(last, first + 1), n_source)
    return start, stop


@numba.njit(cache=True, nogil=True)
def _mode_rows(source, row_start, row_stop, col_start, col_stop, nodata,
               out):  # pragma: no cover - compiled
    """``out[i, j]``: the mode of ``source[row_start[i]:row_stop[i], col_start[j]:col_stop[j]]``
    without ``nodata``, scanning rows then columns (the first value to reach the highest
    count wins); ``nodata`` where every pixel is nodata."""
    counts = np.zeros(256, dtype=np.int64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            best, best_count = -1, 0
            for y in range(row_start[i], row_stop[i]):
                for x in range(col_start[j], col_stop[j]):
                    value = source[y, x]
                    if value != nodata:
                        counts[value] += 1
                        if counts[value] > best_count:
                            best, best_count = value, counts[value]
            for y in range(row_start[i], row_stop[i]):
                for x in range(col_start[j], col_stop[j]):
                    counts[source[y, x]] = 0
            out[i, j] = nodata if best < 0 else best


class _Level:
    """One overview level: its source rows held until every window over them is done."""

    def __init__(self, source_shape: tuple[int, int], shape: tuple[int, int]):
        self.shape = shape
        self.row_start, self.row_stop = source_windows(source_shape[0], shape[0])
        self.col_start, self.col_stop = source_windows(source_shape[1], shape[1])
        self.held = np.empty((0, source_shape[1]), dtype=np.uint8)
        self.held_top = 0  # source row of held[0]
        self.next_row = 0  # next overview row to compute

    def add(self, rows: np.ndarray, nodata: int) -> tuple[int, np.ndarray]:
        """Take the next source rows; return the overview rows now complete (first row,
        rows), possibly none."""
        self.held = np.concatenate([self.held, rows]) if len(self.held) else rows
        available = self.held_top + len(self.held)
        first, last = self.next_row, self.next_row
        while last < self.shape[0] and self.row_stop[last] <= available:
            last += 1
        out = np.empty((last - first, self.shape[1]), dtype=np.uint8)
        if last > first:
            _mode_rows(self.held, self.row_start[first:last] - self.held_top,
                       self.row_stop[first:last] - self.held_top, self.col_start,
                       self.col_stop, np.uint8(nodata), out)
            self.next_row = last
        keep_from = (self.row_start[last] if last < self.shape[0] else available)
        self.held = self.held[keep_from - self.held_top:]
        self.held_top = keep_from
        return first, out


class ModeOverviews:
    """GDAL's MODE overviews of a uint8 layer whose full-width rows arrive top to bottom
    (:meth:`add`); each level's rows go to ``sinks[k]`` as soon as they are final.
    ``complete`` tells whether every row arrived in order (else the overviews are not
    usable and GDAL must compute them)."""

    def __init__(self, shape: tuple[int, int], *, nodata: int, sinks: list[RowSink]):
        shapes = overview_shapes(shape, len(sinks))
        self.shape, self.nodata, self.sinks = shape, int(nodata), sinks
        self.levels = [_Level(source, target)
                       for source, target in zip([shape, *shapes[:-1]], shapes, strict=True)]
        self.next_row = 0
        self.in_order = True

    def add(self, row: int, rows: np.ndarray) -> None:
        if row != self.next_row:
            self.in_order = False
        if not self.in_order:
            return
        self.next_row = row + len(rows)
        for level, sink in zip(self.levels, self.sinks, strict=True):
            first, rows = level.add(np.ascontiguousarray(rows, dtype=np.uint8), self.nodata)
            if not len(rows):
                return
            sink(first, rows)

    @property
    def complete(self) -> bool:
        return self.in_order and self.next_row == self.shape[0]

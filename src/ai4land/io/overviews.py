"""COG overviews built while a layer's rows stream in.

GDAL's COG driver computes the overviews of a layer when it converts it, after the
model has finished; that was about a third of the conversion time. A
:class:`StreamedOverviews` computes the same values as GDAL's MODE (class maps) or
AVERAGE (quantised layers) resampling, row block by row block as the rows are written,
so the conversion only copies them (``OVERVIEWS=FORCE_USE_EXISTING``); the COG bytes
are GDAL's own (tested). GDAL's rules, followed here: level k is computed from level
k - 1 and is ``n // 2**k`` pixels a side; an overview pixel covers the source pixels
of its (possibly fractional) window; nodata pixels are left out, and a window of
nodata only gives nodata. MODE takes the most frequent value (on ties the first value,
scanning rows then columns, to reach the highest count); AVERAGE weights the partly
covered edge pixels of a window by their covered fraction, rounds half up, and moves a
result equal to nodata to the next value.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

RowSink = Callable[[int, np.ndarray], None]  # (first row, rows) of one overview level
RESAMPLINGS = ("MODE", "AVERAGE")


def overview_shapes(shape: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """The (height, width) of each of ``count`` overview levels, as the COG driver
    sizes them: the full size halved k times, rounded down, at least 1."""
    return [(max(shape[0] >> k, 1), max(shape[1] >> k, 1)) for k in range(1, count + 1)]


def source_windows(n_source: int, n_target: int) -> tuple[np.ndarray, ...]:
    """Along one axis, per overview pixel: the [start, stop) of its source pixels and
    the weights of the first and last of them (the fraction of each the window covers)."""
    ratio = n_source / n_target
    start = np.empty(n_target, dtype=np.int64)
    stop = np.empty(n_target, dtype=np.int64)
    first_weight = np.empty(n_target)
    last_weight = np.empty(n_target)
    for i in range(n_target):
        low, high = i * ratio, (i + 1) * ratio
        first, last = max(int(low + 1e-8), 0), int(math.ceil(high - 1e-8))
        last = min(max(last, first + 1), n_source)
        start[i], stop[i] = first, last
        first_weight[i] = 1.0 if last == first + 1 else 1.0 - (low - first)
        last_weight[i] = 1.0 - (last - high)
    return start, stop, first_weight, last_weight


@numba.njit(cache=True, nogil=True, inline="always")
def _mode4(a, b, c, d, nodata):  # pragma: no cover - compiled
    """MODE of four pixels in scan order, as :func:`_mode_rows` counts them (the first
    value to reach the highest count wins; nodata left out, all nodata gives nodata)."""
    best, best_count = nodata, 0
    if a != nodata:
        best, best_count = a, 1
    if b != nodata:
        n = 1 + (b == a)
        if n > best_count:
            best, best_count = b, n
    if c != nodata:
        n = 1 + (c == a) + (c == b)
        if n > best_count:
            best, best_count = c, n
    if d != nodata:
        n = 1 + (d == a) + (d == b) + (d == c)
        if n > best_count:
            best = d
    return best


@numba.njit(cache=True, nogil=True)
def _mode_rows(source, rows, cols, nodata, out):  # pragma: no cover - compiled
    """MODE: ``out[i, j]`` from ``source[rows[0][i]:rows[1][i], cols[0][j]:cols[1][j]]``."""
    counts = np.zeros(256, dtype=np.int64)
    row_start, row_stop = rows[0], rows[1]
    col_start, col_stop = cols[0], cols[1]
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            y0, x0 = row_start[i], col_start[j]
            if row_stop[i] - y0 == 2 and col_stop[j] - x0 == 2:  # most windows: 2 x 2
                out[i, j] = _mode4(source[y0, x0], source[y0, x0 + 1], source[y0 + 1, x0],
                                   source[y0 + 1, x0 + 1], nodata)
                continue
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


@numba.njit(cache=True, nogil=True)
def _average_rows(source, rows, row_weights, cols, col_weights, nodata,
                  out):  # pragma: no cover - compiled
    """AVERAGE: the weighted mean of each window's valid pixels, summed in GDAL's order
    (left, middle, right pixel of a row; rows top to bottom), rounded half up."""
    replacement = nodata - 1 if nodata == 255 else nodata + 1
    row_start, row_stop = rows[0], rows[1]
    col_start, col_stop = cols[0], cols[1]
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            left, right = col_start[j], col_stop[j] - 1
            total, weight, count = 0.0, 0.0, 0
            for y in range(row_start[i], row_stop[i]):
                line, line_weight = 0.0, 0.0
                value = source[y, left]
                if value != nodata:
                    count += 1
                    line_weight = col_weights[0][j]
                    line = np.float64(value) * col_weights[0][j]
                if left < right:
                    for x in range(left + 1, right):
                        value = source[y, x]
                        if value != nodata:
                            count += 1
                            line_weight += 1.0
                            line += np.float64(value)
                    value = source[y, right]
                    if value != nodata:
                        count += 1
                        line_weight += col_weights[1][j]
                        line += np.float64(value) * col_weights[1][j]
                if y == row_start[i]:
                    row_weight = row_weights[0][i]
                elif y + 1 == row_stop[i]:
                    row_weight = row_weights[1][i]
                else:
                    row_weight = 1.0
                total += line * row_weight
                weight += line_weight * row_weight
            if count == 0:
                out[i, j] = nodata
            else:
                value = np.uint8(int(total / weight + 0.5))
                out[i, j] = replacement if value == nodata else value


class _Level:
    """One overview level: its source rows held until every window over them is done."""

    def __init__(self, source_shape: tuple[int, int], shape: tuple[int, int]):
        self.shape = shape
        self.rows = source_windows(source_shape[0], shape[0])
        self.cols = source_windows(source_shape[1], shape[1])
        self.held = np.empty((0, source_shape[1]), dtype=np.uint8)
        self.held_top = 0  # source row of held[0]
        self.next_row = 0  # next overview row to compute

    def add(self, rows: np.ndarray, resampling: str, nodata: int) -> tuple[int, np.ndarray]:
        """Take the next source rows; return the overview rows now complete (first row,
        rows), possibly none."""
        self.held = np.concatenate([self.held, rows]) if len(self.held) else rows
        available = self.held_top + len(self.held)
        start, stop, first_weight, last_weight = self.rows
        first = last = self.next_row
        while last < self.shape[0] and stop[last] <= available:
            last += 1
        out = np.empty((last - first, self.shape[1]), dtype=np.uint8)
        if last > first:
            rows_here = (start[first:last] - self.held_top, stop[first:last] - self.held_top)
            cols = (self.cols[0], self.cols[1])
            if resampling == "MODE":
                _mode_rows(self.held, rows_here, cols, np.uint8(nodata), out)
            else:
                _average_rows(self.held, rows_here,
                              (first_weight[first:last], last_weight[first:last]), cols,
                              (self.cols[2], self.cols[3]), np.uint8(nodata), out)
            self.next_row = last
        keep_from = start[last] if last < self.shape[0] else available
        self.held = self.held[keep_from - self.held_top:]
        self.held_top = keep_from
        return first, out


class StreamedOverviews:
    """GDAL's ``resampling`` (MODE or AVERAGE) overviews of a uint8 layer whose
    full-width rows arrive top to bottom (:meth:`add`); each level's rows go to
    ``sinks[k]`` as soon as they are final. ``complete`` tells whether every row arrived
    in order (else the overviews are not usable and GDAL must compute them)."""

    def __init__(self, shape: tuple[int, int], *, resampling: str, nodata: int,
                 sinks: list[RowSink]):
        if resampling not in RESAMPLINGS:
            raise ValueError(f"resampling {resampling!r} is not one of {RESAMPLINGS}")
        shapes = overview_shapes(shape, len(sinks))
        self.shape, self.resampling, self.nodata, self.sinks = shape, resampling, int(nodata), sinks
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
            first, rows = level.add(np.ascontiguousarray(rows, dtype=np.uint8), self.resampling,
                                    self.nodata)
            if not len(rows):
                return
            sink(first, rows)

    @property
    def complete(self) -> bool:
        return self.in_order and self.next_row == self.shape[0]

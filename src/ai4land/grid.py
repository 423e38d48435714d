"""Regular lat/lon grids: the one funnel for transforms, coordinates and nesting.

A grid is north-up: row 0 is the northernmost row, ``lat`` decreases with the row
index, ``lon`` increases with the column index. Pixel centres sit half a pixel inside
the bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

from ai4land.errors import GridError

# Grids are compared to a small fraction of a pixel, never exactly: file coordinates
# carry float32 rounding.
_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Grid:
    """A north-up regular grid in a geographic or projected CRS."""

    west: float
    north: float
    res: float
    width: int
    height: int
    crs: str = "EPSG:4326"

    @property
    def east(self) -> float:
        return self.west + self.width * self.res

    @property
    def south(self) -> float:
        return self.north - self.height * self.res

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north)."""
        return (self.west, self.south, self.east, self.north)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.west, 0.0, -self.res, self.north)

    @property
    def lat(self) -> np.ndarray:
        return self.north - (np.arange(self.height) + 0.5) * self.res

    @property
    def lon(self) -> np.ndarray:
        return self.west + (np.arange(self.width) + 0.5) * self.res

    def to_dict(self) -> dict:
        return {
            "west": self.west,
            "north": self.north,
            "res": self.res,
            "width": self.width,
            "height": self.height,
            "crs": self.crs,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Grid:
        return cls(
            west=float(data["west"]),
            north=float(data["north"]),
            res=float(data["res"]),
            width=int(data["width"]),
            height=int(data["height"]),
            crs=str(data.get("crs", "EPSG:4326")),
        )

    @classmethod
    def from_transform(cls, transform: Affine, *, width: int, height: int, crs: str) -> Grid:
        if abs(transform.b) > 0 or abs(transform.d) > 0:
            raise GridError(f"rotated grids are not supported (transform {tuple(transform)[:6]})")
        if not math.isclose(transform.a, -transform.e, rel_tol=1e-6):
            raise GridError(
                f"pixels must be square, got {transform.a} x {-transform.e}; resample first"
            )
        if transform.e > 0:
            raise GridError("grid is south-up; flip it to north-up before use")
        return cls(
            west=float(transform.c),
            north=float(transform.f),
            res=float(transform.a),
            width=int(width),
            height=int(height),
            crs=crs,
        )

    @classmethod
    def from_coords(cls, *, lat: np.ndarray, lon: np.ndarray, crs: str = "EPSG:4326") -> Grid:
        """Grid from pixel-centre coordinates; ``lat`` may run either way."""
        lat = np.asarray(lat, dtype="float64")
        lon = np.asarray(lon, dtype="float64")
        if lat.size < 2 or lon.size < 2:
            raise GridError("a grid needs at least 2 coordinates along each axis")
        res_lon = float(np.median(np.diff(lon)))
        res_lat = float(np.median(np.abs(np.diff(lat))))
        if not math.isclose(res_lon, res_lat, rel_tol=1e-4):
            raise GridError(f"pixels must be square, got {res_lon} x {res_lat}")
        if not np.allclose(np.diff(lon), res_lon, atol=res_lon * 1e-3):
            raise GridError("longitude is not regularly spaced")
        return cls(
            west=float(lon.min() - res_lon / 2),
            north=float(lat.max() + res_lat / 2),
            res=res_lon,
            width=int(lon.size),
            height=int(lat.size),
            crs=crs,
        )

    def nest_factor(self, coarse: Grid) -> int:
        """How many of our pixels span one ``coarse`` pixel; raises if grids do not nest."""
        ratio = coarse.res / self.res
        factor = round(ratio)
        if factor < 1 or abs(ratio - factor) > _TOLERANCE * factor:
            raise GridError(
                f"fine resolution {self.res} does not divide coarse resolution {coarse.res}"
            )
        col_offset = (self.west - coarse.west) / self.res
        row_offset = (coarse.north - self.north) / self.res
        for name, offset in (("west", col_offset), ("north", row_offset)):
            if abs(offset - round(offset / factor) * factor) > _TOLERANCE * factor:
                raise GridError(
                    f"fine grid {name} edge is not on a coarse cell edge "
                    f"(offset {offset:.4f} fine pixels, cell size {factor})"
                )
        return factor

    def subset(self, bbox: tuple[float, float, float, float]) -> tuple[Grid, tuple[int, int]]:
        """Sub-grid covering ``bbox`` (west, south, east, north), snapped outward to pixels.

        Returns the grid and the (row, col) offset of its first pixel in ``self``.
        """
        west, south, east, north = bbox
        col0 = math.floor((west - self.west) / self.res + _TOLERANCE)
        col1 = math.ceil((east - self.west) / self.res - _TOLERANCE)
        row0 = math.floor((self.north - north) / self.res + _TOLERANCE)
        row1 = math.ceil((self.north - south) / self.res - _TOLERANCE)
        if col0 < 0 or row0 < 0 or col1 > self.width or row1 > self.height:
            raise GridError(
                f"region {bbox} reaches outside the data extent {self.bounds}; shrink region.bbox"
            )
        if col1 <= col0 or row1 <= row0:
            raise GridError(f"region {bbox} is empty")
        sub = Grid(
            west=self.west + col0 * self.res,
            north=self.north - row0 * self.res,
            res=self.res,
            width=col1 - col0,
            height=row1 - row0,
            crs=self.crs,
        )
        return sub, (row0, col0)

    def coarsened(self, factor: int) -> Grid:
        if self.width % factor or self.height % factor:
            raise GridError(f"grid {self.shape} is not a whole number of {factor}-pixel cells")
        return Grid(
            west=self.west,
            north=self.north,
            res=self.res * factor,
            width=self.width // factor,
            height=self.height // factor,
            crs=self.crs,
        )

    def same_as(self, other: Grid) -> bool:
        tol = _TOLERANCE * self.res
        return (
            self.shape == other.shape
            and self.crs == other.crs
            and abs(self.res - other.res) < tol
            and abs(self.west - other.west) < tol
            and abs(self.north - other.north) < tol
        )

    def require_same(self, other: Grid, *, what: str) -> None:
        if not self.same_as(other):
            raise GridError(f"{what} is on grid {other.to_dict()}, expected {self.to_dict()}")


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels on a grid: first row and column, then size."""

    row: int
    col: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return (slice(self.row, self.row + self.height), slice(self.col, self.col + self.width))

    def coarse_slices(self, factor: int) -> tuple[slice, slice]:
        """Slices of the coarse cells touched by this window."""
        return (
            slice(self.row // factor, -(-(self.row + self.height) // factor)),
            slice(self.col // factor, -(-(self.col + self.width) // factor)),
        )

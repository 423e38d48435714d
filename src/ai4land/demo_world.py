"""The synthetic demo world: every raw input of the real run, small, learnable, seeded.

``write_demo_world(config)`` writes the same files (names, formats and quirks) as the
real downloads, for the region and years in ``config.demo``:

- LUH2-style ``states.nc`` (historical), one future file per scenario and
  ``staticData_quarterdeg.nc``: netCDF4, lat descending, time "years since ...",
  fill value 1e20 in all-ocean cells declared only under the misspelled attribute
  ``_Fillvalue``;
- HILDA+-style yearly GeoTIFFs (uint8 codes, EPSG:4326, nodata 99, DEFLATE, tiled)
  inside the zip archive, one per observed year;
- static rasters on other grids: an ETOPO-like NetCDF (30 arc-seconds, lat ascending)
  and a SoilGrids-like clay GeoTIFF in Interrupted Goode Homolosine at 1000 m.

How the world works (everything vectorised, one random stream per purpose):

- Terrain is a multi-scale smooth random field plus a ramp rising away from one corner;
  the sea (code 0) fills the low corner (~13 % of the area). A few static lakes (77).
  Clay is partly anti-correlated with elevation.
- Classes follow terrain and soil: sparse (66) at high elevation, grass/shrub (55) at
  upper-mid elevation and in dry places, forest (44) elsewhere as natural cover;
  cropland (22) on flat, low land with good clay, pasture (33) on gentle hills, urban
  (11) around a few seed towns on flat land near the coast.
- Each year a few percent of the land changes, always next to existing patches
  (neighbourhood-driven, with spatially clumped random draws): towns grow outward
  (irreversibly), cropland expands into forest/pasture/grass in "expansion" regions and
  is abandoned to grass in "abandonment" regions, forest is cleared for pasture along
  fronts, and grass regrows to forest where forest is the natural cover.
- The coarse fractions of every simulated year are the exact aggregation of the fine
  maps over each coarse cell's non-ocean pixels (the LUH2 group -> class mapping of
  docs/design.md, with seeded per-cell splits inside each group); ``icwtr`` is the lake
  fraction. Scenario files hold the same aggregated values up to the last observed year
  and then diverge with scenario-specific trends.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.warp import transform as warp_transform
from scipy import ndimage
from scipy.special import ndtr
from tqdm.auto import tqdm

from ai4land.config import LUH2_FRACTIONS, Config, stage_config
from ai4land.errors import ConfigError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path

OCEAN, URBAN, CROP, PASTURE, FOREST, GRASS, SPARSE, WATER, NODATA = (
    0,
    11,
    22,
    33,
    44,
    55,
    66,
    77,
    99,
)
LAND_CODES = (URBAN, CROP, PASTURE, FOREST, GRASS, SPARSE, WATER)
FILL = 1e20
IGH = "+proj=igh +lon_0=0 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
EARTH_RADIUS_KM = 6371.0072
SEA_SHARE = 0.13

CROP_VARIABLES = ["c3ann", "c4ann", "c3per", "c4per", "c3nfx"]
CROP_ALPHA = np.array([6.0, 1.5, 1.2, 0.3, 1.0])  # Dirichlet weights: C3 annuals dominate
STATIC_MARGIN_DEG = 0.1  # static rasters reach this far beyond the bbox
FIELD_MARGIN_DEG = 0.3  # terrain is simulated this far beyond the bbox
ETOPO_RES = 1.0 / 120.0
CLAY_RES_M = 1000.0

# Yearly land flows between coarse groups after the last observed year, per scenario
# family, as (from, to, rate): the share of the source group that moves each year
# ("urban" grows in proportion to itself and takes cropland). Flows conserve land, so
# the fractions keep summing to 1 - icwtr.
SCENARIO_FLOWS = {
    "sustainable": [  # ssp1: slow urban growth, cropland decline, reforestation
        ("urban", "urban", 0.010), ("crop", "forest", 0.007), ("crop", "natural", 0.003),
        ("pasture", "forest", 0.008), ("natural", "forest", 0.004),
    ],
    "middle": [  # ssp2-like: moderate growth, little net change
        ("urban", "urban", 0.015), ("forest", "crop", 0.001), ("crop", "forest", 0.001),
        ("pasture", "natural", 0.002),
    ],
    "intensive": [  # ssp3/ssp5: urban growth, cropland/pasture expansion, deforestation
        ("urban", "urban", 0.025), ("forest", "crop", 0.006), ("forest", "pasture", 0.004),
        ("natural", "crop", 0.004), ("natural", "pasture", 0.003),
    ],
}

_LONG_NAMES = {
    "primf": "forested primary land",
    "primn": "non-forested primary land",
    "secdf": "potentially forested secondary land",
    "secdn": "potentially non-forested secondary land",
    "urban": "urban land",
    "c3ann": "C3 annual crops",
    "c4ann": "C4 annual crops",
    "c3per": "C3 perennial crops",
    "c4per": "C4 perennial crops",
    "c3nfx": "C3 nitrogen-fixing crops",
    "pastr": "managed pasture",
    "range": "rangeland",
    "secma": "secondary mean age",
    "secmb": "secondary mean biomass density",
}


_UNITS = {"secma": "years", "secmb": "kg C m-2", "carea": "km2"}


# --- small helpers ------------------------------------------------------------------


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent, stable random stream per purpose (order of use does not matter)."""
    return np.random.default_rng([seed % 2**63, zlib.crc32(purpose.encode())])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (spectral, padded against wrap-around), mean 0, std 1."""
    pad = int(min(3 * sigma_px, 2 * max(shape))) + 1
    height, width = shape[0] + 2 * pad, shape[1] + 2 * pad
    spectrum = np.fft.rfft2(rng.standard_normal((height, width)))
    ky = np.fft.fftfreq(height)[:, None]
    kx = np.fft.rfftfreq(width)[None, :]
    spectrum *= np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (kx**2 + ky**2))
    field = np.fft.irfft2(spectrum, s=(height, width))[pad : pad + shape[0], pad : pad + shape[1]]
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _multiscale(rng, shape, scales_px, weights) -> np.ndarray:
    total = sum(w * _smooth_noise(rng, shape, s) for s, w in zip(scales_px, weights, strict=True))
    return (total - total.mean()) / total.std()


def _rank01(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Percentile rank in [0, 1] of ``values`` among the ``mask`` pixels (0 elsewhere)."""
    out = np.zeros(values.shape, dtype="float64")
    picked = values[mask]
    if picked.size:
        order = np.argsort(picked, kind="stable")
        ranks = np.empty(picked.size, dtype="float64")
        ranks[order] = np.arange(picked.size) / max(picked.size - 1, 1)
        out[mask] = ranks
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _block_sum(mask: np.ndarray, factor: int) -> np.ndarray:
    h, w = mask.shape
    return mask.reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3), dtype="int64")


# --- grids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grids:
    fine: Grid
    coarse: Grid
    factor: int
    field: Grid  # the fine grid plus a margin, where terrain is simulated
    margin: int  # fine pixels of margin on each side


def _grids(config: Config) -> _Grids:
    demo = config.demo
    west, south, east, north = demo.bbox
    if not (west < east and south < north):
        raise ConfigError(f"demo.bbox must be [west, south, east, north], got {list(demo.bbox)}")
    factor = round(demo.coarse_res / demo.fine_res)
    if factor < 1 or abs(demo.coarse_res / demo.fine_res - factor) > 1e-6:
        raise ConfigError(
            f"demo.coarse_res {demo.coarse_res} must be a whole multiple of demo.fine_res "
            f"{demo.fine_res}"
        )
    cells = []
    for extent in (east - west, north - south):
        n = round(extent / demo.coarse_res)
        if n < 1 or abs(extent / demo.coarse_res - n) > 1e-6:
            raise ConfigError(
                f"demo.bbox {list(demo.bbox)} must span whole coarse cells of "
                f"{demo.coarse_res} degrees"
            )
        cells.append(n)
    fine = Grid(west=west, north=north, res=demo.fine_res, width=cells[0] * factor,
                height=cells[1] * factor)
    margin = math.ceil(FIELD_MARGIN_DEG / demo.fine_res - 1e-9)
    field = Grid(west=west - margin * demo.fine_res, north=north + margin * demo.fine_res,
                 res=demo.fine_res, width=fine.width + 2 * margin, height=fine.height + 2 * margin)
    return _Grids(
        fine=fine, coarse=fine.coarsened(factor), factor=factor, field=field, margin=margin
    )


def _sample(
    field: np.ndarray, grid: Grid, lon: np.ndarray, lat: np.ndarray, *, order: int
) -> np.ndarray:
    """Values of a field on ``grid`` at lon/lat points (bilinear or nearest, edge-clamped)."""
    rows = (grid.north - lat) / grid.res - 0.5
    cols = (lon - grid.west) / grid.res - 0.5
    return ndimage.map_coordinates(field, [rows.ravel(), cols.ravel()], order=order,
                                   mode="mirror").reshape(np.shape(lon))


# --- the world -----------------------------------------------------------------------


@dataclass
class _Terrain:
    elevation: np.ndarray  # field grid, metres (negative = sea)
    ocean: np.ndarray  # field grid, bool
    clay: np.ndarray  # field grid, g/kg


def _terrain(seed: int, grids: _Grids) -> _Terrain:
    field = grids.field
    res = field.res
    shape = field.shape
    rng = _rng(seed, "terrain")
    corner = int(rng.integers(4))  # which corner holds the sea
    lat = field.lat[:, None]
    lon = field.lon[None, :]
    west, south, east, north = grids.fine.bounds
    corner_lon = west if corner in (0, 3) else east
    corner_lat = south if corner in (0, 1) else north
    ramp = np.hypot((lon - corner_lon) / (east - west), (lat - corner_lat) / (north - south))
    ramp = ramp / math.sqrt(2.0)
    scales = [s / res for s in (1.2, 0.5, 0.2, 0.07, 0.025)]
    noise = _multiscale(rng, shape, scales, [1.0, 0.6, 0.35, 0.2, 0.1])
    # The dip guarantees open sea (whole coarse cells of it) in the corner.
    raw = 1.6 * ramp + 0.55 * noise - 1.5 * np.exp(-((ramp / 0.12) ** 2))
    m = grids.margin
    inner = raw[m : m + grids.fine.height, m : m + grids.fine.width]

    def open_sea(level: float) -> np.ndarray:
        labels, _ = ndimage.label(raw < level)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        return np.isin(labels, edge[edge > 0])

    # Sea level such that the sea connected to the edges covers ~13 % of the bbox.
    low, high = float(np.quantile(inner, 0.01)), float(np.quantile(inner, 0.7))
    for _ in range(30):
        sea_level = 0.5 * (low + high)
        share = open_sea(sea_level)[m : m + grids.fine.height, m : m + grids.fine.width].mean()
        low, high = (sea_level, high) if share < SEA_SHARE else (low, sea_level)
    sea_level = high
    ocean = open_sea(sea_level)
    top = float(np.quantile(inner, 0.999))
    height = ((raw - sea_level) / (top - sea_level)).clip(0.0, 1.0) ** 1.3 * 2600.0 + 1.0
    depth = -(5.0 + (sea_level - raw) / max(sea_level - float(raw.min()), 1e-9) * 2000.0)
    elevation = np.where(ocean, depth, height)
    clay_noise = _multiscale(rng, shape, [0.3 / res, 0.05 / res], [1.0, 0.4])
    clay = (300.0 - 120.0 * height / 2600.0 + 70.0 * clay_noise).clip(50.0, 600.0)
    return _Terrain(elevation=elevation, ocean=ocean, clay=clay)


@dataclass
class _Landscape:
    """Static drivers of the land-use dynamics on the fine grid."""

    ocean: np.ndarray
    lake: np.ndarray
    land: np.ndarray  # neither ocean nor lake
    pnv: np.ndarray  # potential natural vegetation: 44, 55 or 66
    crop_suit: np.ndarray  # ranks in [0, 1] over land
    pasture_suit: np.ndarray
    urban_suit: np.ndarray
    expand: np.ndarray  # [0, 1] strength of the expansion regime
    abandon: np.ndarray  # [0, 1] strength of the abandonment regime


def _lakes(rng: np.random.Generator, candidates: np.ndarray, n_lakes: int,
           tiny: np.ndarray) -> np.ndarray:
    """Up to ``n_lakes`` ragged round blobs centred on candidate pixels."""
    shape = candidates.shape
    lake = np.zeros(shape, dtype=bool)
    flat_idx = np.flatnonzero(candidates)
    if flat_idx.size:
        rows_i, cols_i = np.indices(shape, dtype="float64")
        for index in rng.choice(flat_idx, size=min(n_lakes, flat_idx.size), replace=False):
            r0, c0 = divmod(int(index), shape[1])
            radius = rng.uniform(3.0, 9.0)
            dist = np.hypot(rows_i - r0, cols_i - c0) / radius
            lake |= (dist + 0.35 * tiny) < 1.0
    return lake


def _towns(rng: np.random.Generator, weights: np.ndarray, *, n_towns: int, n_villages: int,
           res: float, tiny: np.ndarray) -> np.ndarray:
    """Towns, then villages, at pixels drawn by ``weights``: ragged discs (the first one
    the largest)."""
    shape = weights.shape
    town_idx = rng.choice(weights.size, size=n_towns + n_villages, replace=False,
                          p=(weights / weights.sum()).ravel())
    urban = np.zeros(shape, dtype=bool)
    rows_i, cols_i = np.indices(shape, dtype="float64")
    for k, index in enumerate(town_idx):
        r0, c0 = divmod(int(index), shape[1])
        radius = (rng.uniform(6.0, 14.0) if k < n_towns else rng.uniform(1.2, 2.5)) * 0.01 / res
        if k == 0:
            radius = 18.0 * 0.01 / res
        window = (slice(max(0, int(r0 - 2 * radius) - 2), int(r0 + 2 * radius) + 3),
                  slice(max(0, int(c0 - 2 * radius) - 2), int(c0 + 2 * radius) + 3))
        dist = np.hypot(rows_i[window] - r0, cols_i[window] - c0) / max(radius, 0.5)
        urban[window] |= (dist + 0.3 * tiny[window]) < 1.0
    return urban


def _landscape(seed: int, grids: _Grids, terrain: _Terrain) -> tuple[_Landscape, np.ndarray]:
    m = grids.margin
    fine = grids.fine
    crop = (slice(m, m + fine.height), slice(m, m + fine.width))
    elev = terrain.elevation[crop]
    ocean = terrain.ocean[crop]
    clay = terrain.clay[crop]
    res = fine.res
    shape = fine.shape
    rng = _rng(seed, "landscape")

    metres = res * 111_320.0
    gy, gx = np.gradient(terrain.elevation, metres)
    gx = gx / np.cos(np.deg2rad(grids.field.lat))[:, None]
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))[crop]
    not_ocean = ~ocean
    slope_rank = _rank01(slope, not_ocean)
    dry = _smooth_noise(rng, shape, 0.6 / res)
    small = _smooth_noise(rng, shape, 0.04 / res)
    tiny = _smooth_noise(rng, shape, 0.015 / res)

    # Lakes: a few blobs in flat, mid-elevation land away from the sea.
    coast_px = ndimage.distance_transform_edt(not_ocean)
    candidates = not_ocean & (coast_px > 12) & (elev > 80) & (elev < 1500) & (slope_rank < 0.5)
    n_lakes = max(2, round(5 * (fine.width * fine.height * res * res) / 36.0))
    lake = _lakes(rng, candidates, n_lakes, tiny) & not_ocean
    land = not_ocean & ~lake

    # Potential natural vegetation.
    n1 = _smooth_noise(rng, shape, 0.1 / res)
    pnv = np.full(shape, FOREST, dtype="uint8")
    dry_rank = _rank01(dry, land)
    pnv[((elev > 1650 + 120 * n1) | ((dry_rank > 0.88) & (elev < 1000)))] = GRASS
    pnv[elev > 2050 + 120 * n1] = SPARSE

    crop_raw = ((1.0 - elev / 900.0).clip(0.0) * (1.0 - slope_rank) ** 1.5
                * (clay / 400.0).clip(0.2, 1.0) ** 0.5 * (1.0 - 0.3 * dry_rank)
                + 0.12 * small + 0.04 * tiny)
    crop_suit = _rank01(crop_raw, land)
    pasture_raw = (np.exp(-(((elev - 700.0) / 450.0) ** 2)) * (1.0 - abs(slope_rank - 0.45))
                   + 0.15 * small + 0.05 * tiny)
    pasture_suit = _rank01(pasture_raw, land)
    near_coast = np.exp(-coast_px * res * 111.32 / 60.0)
    urban_raw = (1.0 - elev / 500.0).clip(0.0) * (1.0 - slope_rank) * (
        0.3 + near_coast
    ) + 0.05 * small
    urban_suit = _rank01(urban_raw, land)

    regime = _smooth_noise(rng, shape, 0.8 / res)
    expand = ((regime + 0.2) / 1.0).clip(0.0, 1.0)
    abandon = ((-regime + 0.2) / 1.0).clip(0.0, 1.0)

    # The first map: natural cover, then pasture, cropland, towns.
    state = pnv.copy()
    usable = land & (pnv != SPARSE)
    state[usable & (pasture_suit > 0.80)] = PASTURE
    state[usable & (crop_suit > 0.68 - 0.12 * expand + 0.08 * abandon)] = CROP
    n_towns = max(2, round(7 * (fine.width * fine.height * res * res) / 36.0))
    n_villages = 6 * n_towns
    weights = np.where(land, urban_suit, 0.0) ** 4
    urban = _towns(rng, weights, n_towns=n_towns, n_villages=n_villages, res=res, tiny=tiny)
    state[urban & land] = URBAN
    state[lake] = WATER
    state[ocean] = OCEAN
    scape = _Landscape(ocean=ocean, lake=lake, land=land, pnv=pnv, crop_suit=crop_suit,
                       pasture_suit=pasture_suit, urban_suit=urban_suit, expand=expand,
                       abandon=abandon)
    return scape, state


def _clumped_uniform(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform(0, 1) draws that are correlated over a few pixels, so changes come in patches."""
    z = ndimage.gaussian_filter(rng.standard_normal(shape, dtype="float32"), 1.5)
    z *= np.float32(1.0 / z.std())
    return ndtr(z)


# Base rates of the yearly processes (scaled by time profiles in ``_step``); tuned so that
# about 1-1.5 % of the land changes per year, nearly all of it next to existing patches.
RATES = {"urban": 0.05, "crop_expand": 0.35, "crop_abandon": 0.5, "deforest": 0.3,
         "pasture_abandon": 0.35, "regrowth": 0.35, "rotation": 0.15}


def _step(state: np.ndarray, year: int, scape: _Landscape, rng: np.random.Generator) -> np.ndarray:
    """One year of land-use change; returns the new map."""
    shape = state.shape
    nb = {code: ndimage.uniform_filter((state == code).astype("float32"), size=7, mode="nearest")
          for code in (URBAN, CROP, PASTURE, FOREST)}
    new = state.copy()
    # Rates over time: expansion early, abandonment later, towns grow faster after 1970.
    a_urban = RATES["urban"] * (0.5 + _sigmoid((year - 1975) / 8.0))
    a_crop_expand = RATES["crop_expand"] * (0.25 + 1.0 - _sigmoid((year - 1988) / 6.0))
    a_crop_abandon = RATES["crop_abandon"] * (0.25 + _sigmoid((year - 1975) / 8.0))
    a_deforest = RATES["deforest"] * (0.2 + 1.0 - _sigmoid((year - 1995) / 6.0))
    a_pasture_abandon = RATES["pasture_abandon"] * (0.25 + _sigmoid((year - 1985) / 8.0))
    a_regrowth = RATES["regrowth"]

    # Natural succession: grass regrows to forest next to forest where forest is natural.
    regrow = (state == GRASS) & (scape.pnv == FOREST)
    p = a_regrowth * nb[FOREST] ** 1.5
    new[regrow & (_clumped_uniform(rng, shape) < p)] = FOREST

    # Abandonment (edges of cropland / pasture first, poor land first).
    u = _clumped_uniform(rng, shape)
    p = a_crop_abandon * scape.abandon * (1.2 - nb[CROP]) * (1.3 - scape.crop_suit)
    new[(state == CROP) & (u < p)] = GRASS
    p = a_pasture_abandon * scape.abandon * (1.2 - nb[PASTURE]) * (1.3 - scape.pasture_suit)
    new[(state == PASTURE) & (u < p)] = GRASS

    # Deforestation fronts for pasture.
    p = a_deforest * scape.expand * nb[PASTURE] * (0.3 + 0.7 * scape.pasture_suit)
    new[(state == FOREST) & (_clumped_uniform(rng, shape) < p)] = PASTURE

    # Cropland expansion next to cropland, onto suitable land.
    p = a_crop_expand * scape.expand * nb[CROP] * (0.2 + 0.8 * scape.crop_suit)
    source = (state == FOREST) | (state == PASTURE) | (state == GRASS)
    new[source & (_clumped_uniform(rng, shape) < p)] = CROP

    # Rotation at the edges between cropland and pasture, towards the better-suited use.
    u = _clumped_uniform(rng, shape)
    edge = nb[CROP] * nb[PASTURE] * 4.0
    p = RATES["rotation"] * edge * (scape.pasture_suit - scape.crop_suit + 0.2).clip(0.0)
    new[(state == CROP) & (new == CROP) & (u < p)] = PASTURE
    p = RATES["rotation"] * edge * (scape.crop_suit - scape.pasture_suit + 0.2).clip(0.0)
    new[(state == PASTURE) & (new == PASTURE) & (u < p)] = CROP

    # Towns grow outward, irreversibly.
    p = a_urban * nb[URBAN] * (0.2 + scape.urban_suit)
    source = scape.land & (state != URBAN) & (state != SPARSE)
    new[source & (_clumped_uniform(rng, shape) < p)] = URBAN
    return new


# --- aggregation to coarse fractions -------------------------------------------------

# Groups of the coarse sequence: urban, cropland, pasture, forest, natural non-forest,
# the sparse part of the latter (used for the primn split), water.
_G_URBAN, _G_CROP, _G_PASTURE, _G_FOREST, _G_NATURAL, _G_SPARSE, _G_WATER = range(7)
_GROUP_CODES = [(URBAN,), (CROP,), (PASTURE,), (FOREST,), (GRASS, SPARSE), (SPARSE,), (WATER,)]


def _aggregate(state: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Group fractions (7, ny, nx) over non-ocean pixels and the non-ocean pixel count."""
    land_count = _block_sum(state != OCEAN, factor)
    counts = {code: _block_sum(state == code, factor) for code in LAND_CODES}
    denom = np.maximum(land_count, 1).astype("float64")
    groups = np.stack([sum(counts[c] for c in codes) / denom for codes in _GROUP_CODES])
    return groups, land_count


def _scenario_family(name: str) -> str:
    lowered = name.lower()
    if any(tag in lowered for tag in ("119", "126", "ssp1")):
        return "sustainable"
    if any(tag in lowered for tag in ("370", "460", "534", "585", "ssp3", "ssp5")):
        return "intensive"
    return "middle"


def _extend(groups: np.ndarray, n_years: int, family: str, modulation: np.ndarray) -> np.ndarray:
    """Continue the last group fractions for ``n_years`` under a scenario: (n, 7, ny, nx).

    ``modulation`` (n_flows, ny, nx) scales each flow per cell, so trends differ in space.
    """
    index = {"urban": _G_URBAN, "crop": _G_CROP, "pasture": _G_PASTURE, "forest": _G_FOREST,
             "natural": _G_NATURAL}
    current = groups.copy()
    sparse = groups[_G_SPARSE]  # bare/sparse land stays natural
    available = 1.0 - groups[_G_WATER]
    out = np.empty((n_years, *groups.shape))
    for i in range(n_years):
        start = current.copy()
        movable = {
            name: start[g] - (sparse if g == _G_NATURAL else 0.0) for name, g in index.items()
        }
        for k, (source, target, rate) in enumerate(SCENARIO_FLOWS[family]):
            if source == target == "urban":  # urban growth, taken from cropland
                flow = np.minimum(rate * modulation[k] * start[_G_URBAN], 0.2 * movable["crop"])
                source = "crop"
            else:
                flow = rate * modulation[k] * movable[source]
            flow = np.minimum(
                flow, current[index[source]] - (sparse if source == "natural" else 0.0)
            )
            flow = flow.clip(0.0)
            current[index[source]] -= flow
            current[index[target]] += flow
        managed = [_G_URBAN, _G_CROP, _G_PASTURE, _G_FOREST, _G_NATURAL]
        for g in managed:
            current[g] = current[g].clip(0.0, 1.0)
        total = sum(current[g] for g in managed)
        for g in managed:  # guard against rounding drift: sums stay 1 - icwtr
            current[g] *= np.where(total > 0, available / np.maximum(total, 1e-12), 0.0)
        current[_G_SPARSE] = np.minimum(sparse, current[_G_NATURAL])
        out[i] = current
    return out


@dataclass(frozen=True)
class _Splits:
    """Seeded per-cell shares that split the group fractions into LUH2 variables."""

    crop: np.ndarray  # (5, ny, nx), sums to 1
    range_share: np.ndarray
    primf0: np.ndarray
    primn0: np.ndarray
    age0: np.ndarray


def _splits(seed: int, grids: _Grids, terrain: _Terrain) -> _Splits:
    rng = _rng(seed, "splits")
    ny, nx = grids.coarse.shape
    gamma = rng.gamma(CROP_ALPHA[:, None, None], size=(5, ny, nx))
    crop = gamma / gamma.sum(axis=0)
    m, f = grids.margin, grids.factor
    elev = terrain.elevation[m : m + grids.fine.height, m : m + grids.fine.width]
    elev_cell = elev.reshape(ny, f, nx, f).mean(axis=(1, 3)).clip(0.0)
    range_share = (0.15 + 0.6 * elev_cell / 2600.0 + 0.1 * rng.standard_normal((ny, nx))).clip(
        0.02, 0.95
    )
    primf0 = rng.uniform(0.15, 0.6, size=(ny, nx))
    primn0 = rng.uniform(0.3, 0.8, size=(ny, nx))
    age0 = rng.uniform(10.0, 40.0, size=(ny, nx))
    return _Splits(crop=crop, range_share=range_share, primf0=primf0, primn0=primn0, age0=age0)


def _luh_variables(groups: np.ndarray, years: list[int], splits: _Splits,
                   ocean_cells: np.ndarray) -> dict[str, np.ndarray]:
    """Group sequence (T, 7, ny, nx) -> LUH2 variables (T, ny, nx) float32, fill on ocean cells."""
    t0 = years[0]
    out: dict[str, np.ndarray] = {"urban": groups[:, _G_URBAN]}
    for k, name in enumerate(CROP_VARIABLES):
        out[name] = groups[:, _G_CROP] * splits.crop[k]
    out["pastr"] = groups[:, _G_PASTURE] * (1.0 - splits.range_share)
    out["range"] = groups[:, _G_PASTURE] * splits.range_share
    # Primary land only shrinks: a declining share of the group, never above last year.
    for prim, secd, group, share0, decay in (
        ("primf", "secdf", _G_FOREST, splits.primf0, 0.012),
        ("primn", "secdn", _G_NATURAL, splits.primn0, 0.006),
    ):
        total = groups[:, group]
        primary = np.empty_like(total)
        for i, year in enumerate(years):
            wanted = total[i] * share0 * math.exp(-decay * (year - t0))
            primary[i] = wanted if i == 0 else np.minimum(wanted, primary[i - 1])
        out[prim] = primary
        out[secd] = total - primary
    years_arr = np.asarray(years, dtype="float64")[:, None, None]
    age = np.minimum(splits.age0 + 0.4 * (years_arr - t0), 120.0)
    forest_share = groups[:, _G_FOREST] / np.maximum(
        groups[:, _G_FOREST] + groups[:, _G_NATURAL], 1e-9
    )
    out["secma"] = age
    out["secmb"] = 1.0 + 9.0 * forest_share * (0.6 + 0.4 * age / 120.0)
    result = {}
    for name, values in out.items():
        values = np.where(ocean_cells, FILL, np.asarray(values, dtype="float64"))
        result[name] = values.astype("float32")
    return result


# --- writers --------------------------------------------------------------------------


def _coord_var(ds, name: str, values: np.ndarray, axis: str) -> None:
    var = ds.createVariable(name, "f8", (name,))
    var[:] = values
    if axis == "Y":
        var.setncatts({"standard_name": "latitude", "long_name": "latitude",
                       "units": "degrees_north", "axis": "Y"})
    else:
        var.setncatts({"standard_name": "longitude", "long_name": "longitude",
                       "units": "degrees_east", "axis": "X"})


def _write_luh_netcdf(path: Path, grid: Grid, *, years: list[int] | None, time_origin: int | None,
                      variables: dict[str, np.ndarray], title: str) -> None:
    """A LUH2-style file: lat descending, `_Fillvalue` attribute, no real _FillValue."""
    with atomic_path(path) as tmp:
        ds = netCDF4.Dataset(tmp, "w", format="NETCDF4")
        try:
            ds.setncatts({"title": title, "source": "ai4land synthetic demo world",
                          "comment": "fill value 1e20 declared under _Fillvalue, as in LUH2"})
            dims: tuple[str, ...] = ("lat", "lon")
            if years is not None:
                ds.createDimension("time", len(years))
                dims = ("time", "lat", "lon")
            ds.createDimension("lat", grid.height)
            ds.createDimension("lon", grid.width)
            if years is not None:
                time = ds.createVariable("time", "f8", ("time",))
                time[:] = np.asarray(years, dtype="float64") - time_origin
                time.setncatts({"standard_name": "time", "long_name": "time", "axis": "T",
                                "units": f"years since {time_origin}-01-01",
                                "calendar": "365_day"})
            _coord_var(ds, "lat", grid.lat, "Y")
            _coord_var(ds, "lon", grid.lon, "X")
            chunks = (
                (1, grid.height, grid.width) if years is not None else (grid.height, grid.width)
            )
            for name, values in variables.items():
                var = ds.createVariable(name, "f4", dims, zlib=True, complevel=4, shuffle=True,
                                        chunksizes=chunks, fill_value=False)
                var.set_auto_maskandscale(False)
                var[:] = values
                var.setncatts({"long_name": _LONG_NAMES.get(name, name),
                               "units": _UNITS.get(name, "1"),
                               "_Fillvalue": np.float32(FILL)})
        finally:
            ds.close()


def _write_etopo(path: Path, variable: str, values_fn, grids: _Grids, *, long_name: str,
                 units: str) -> None:
    """An ETOPO-like NetCDF: 30 arc-second global-aligned grid, lat ascending, CF attrs."""
    west, south, east, north = grids.fine.bounds
    i0 = math.floor((south - STATIC_MARGIN_DEG + 90.0) / ETOPO_RES)
    i1 = math.ceil((north + STATIC_MARGIN_DEG + 90.0) / ETOPO_RES)
    j0 = math.floor((west - STATIC_MARGIN_DEG + 180.0) / ETOPO_RES)
    j1 = math.ceil((east + STATIC_MARGIN_DEG + 180.0) / ETOPO_RES)
    lat = -90.0 + (np.arange(i0, i1) + 0.5) * ETOPO_RES
    lon = -180.0 + (np.arange(j0, j1) + 0.5) * ETOPO_RES
    lon2, lat2 = np.meshgrid(lon, lat)
    values = values_fn(lon2, lat2).astype("float32")
    wkt = CRS.from_epsg(4326).to_wkt()
    with atomic_path(path) as tmp:
        ds = netCDF4.Dataset(tmp, "w", format="NETCDF4")
        try:
            ds.setncatts({"title": "ai4land synthetic demo world: ETOPO-like surface elevation",
                          "Conventions": "CF-1.8", "source": "ai4land synthetic demo world"})
            ds.createDimension("lat", lat.size)
            ds.createDimension("lon", lon.size)
            _coord_var(ds, "lat", lat, "Y")
            _coord_var(ds, "lon", lon, "X")
            crs = ds.createVariable("crs", "i4")
            crs.setncatts({"grid_mapping_name": "latitude_longitude", "long_name": "CRS definition",
                           "longitude_of_prime_meridian": 0.0, "semi_major_axis": 6378137.0,
                           "inverse_flattening": 298.257223563, "epsg_code": "EPSG:4326",
                           "crs_wkt": wkt, "spatial_ref": wkt})
            var = ds.createVariable(
                variable,
                "f4",
                ("lat", "lon"),
                zlib=True,
                complevel=4,
                shuffle=True,
                chunksizes=(min(lat.size, 512), min(lon.size, 512)),
                fill_value=np.float32(-99999.0),
            )
            var[:] = values
            var.setncatts({"long_name": long_name, "units": units, "grid_mapping": "crs"})
        finally:
            ds.close()


def _geotiff_bytes(array: np.ndarray, *, crs, transform, nodata, colormap=None) -> bytes:
    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
               "dtype": array.dtype.name, "crs": crs, "transform": transform, "nodata": nodata,
               "compress": "deflate", "zlevel": 6, "tiled": True, "blockxsize": 256,
               "blockysize": 256}
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            # the colour table goes first: GTiff cannot change photometry after pixels
            if colormap:
                dst.write_colormap(1, colormap)
            dst.write(array, 1)
        return memfile.read()


def _write_igh_tiff(
    path: Path, values_fn, grids: _Grids, ocean_fn, *, dtype: str = "int16"
) -> None:
    """A SoilGrids-like GeoTIFF: Interrupted Goode Homolosine, 1000 m, nodata over the sea."""
    west, south, east, north = grids.fine.bounds
    edge = np.linspace(0.0, 1.0, 201)
    w, s = west - STATIC_MARGIN_DEG, south - STATIC_MARGIN_DEG
    e, n = east + STATIC_MARGIN_DEG, north + STATIC_MARGIN_DEG
    along_x, along_y = w + (e - w) * edge, s + (n - s) * edge
    lons = np.concatenate([along_x, np.full_like(edge, e), along_x[::-1], np.full_like(edge, w)])
    lats = np.concatenate([np.full_like(edge, s), along_y, np.full_like(edge, n), along_y[::-1]])
    xs, ys = warp_transform("EPSG:4326", IGH, lons.tolist(), lats.tolist())
    x0 = math.floor(min(xs) / CLAY_RES_M) * CLAY_RES_M
    x1 = math.ceil(max(xs) / CLAY_RES_M) * CLAY_RES_M
    y0 = math.floor(min(ys) / CLAY_RES_M) * CLAY_RES_M
    y1 = math.ceil(max(ys) / CLAY_RES_M) * CLAY_RES_M
    width, height = round((x1 - x0) / CLAY_RES_M), round((y1 - y0) / CLAY_RES_M)
    cx = x0 + (np.arange(width) + 0.5) * CLAY_RES_M
    cy = y1 - (np.arange(height) + 0.5) * CLAY_RES_M
    gx, gy = np.meshgrid(cx, cy)
    plon, plat = warp_transform(IGH, "EPSG:4326", gx.ravel().tolist(), gy.ravel().tolist())
    plon = np.asarray(plon).reshape(gx.shape)
    plat = np.asarray(plat).reshape(gx.shape)
    nodata = -32768
    values = np.rint(values_fn(plon, plat)).astype(dtype)
    values[ocean_fn(plon, plat) | ~np.isfinite(plon) | ~np.isfinite(plat)] = nodata
    data = _geotiff_bytes(values, crs=CRS.from_string(IGH),
                          transform=Affine(CLAY_RES_M, 0.0, x0, 0.0, -CLAY_RES_M, y1),
                          nodata=nodata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


HILDA_COLORS = {
    OCEAN: (0, 0, 80, 255), URBAN: (230, 0, 0, 255), CROP: (255, 220, 100, 255),
    PASTURE: (160, 210, 90, 255), FOREST: (20, 110, 40, 255), GRASS: (190, 170, 110, 255),
    SPARSE: (200, 200, 200, 255), WATER: (60, 120, 230, 255), NODATA: (0, 0, 0, 0),
}


# --- the entry point ------------------------------------------------------------------


def _check_config(config: Config) -> None:
    coarse = config.datasets.coarse
    unknown = sorted(set(coarse.variables) - set(LUH2_FRACTIONS))
    if unknown:
        raise ConfigError(
            f"datasets.coarse.variables {unknown}: the demo world writes LUH2 variables only"
        )
    if coarse.water_variable not in (None, "icwtr"):
        raise ConfigError(
            f"datasets.coarse.water_variable {coarse.water_variable!r}: the demo world "
            "writes 'icwtr'"
        )
    if "{year}" not in config.datasets.fine.pattern:
        raise ConfigError(
            f"datasets.fine.pattern {config.datasets.fine.pattern!r} must contain {{year}}"
        )
    h0, h1 = config.demo.historical_years
    f0, _ = config.datasets.fine.years
    u0, u1 = config.demo.future_years
    if h0 > h1 or u0 > u1:
        raise ConfigError("demo.historical_years and demo.future_years must be [first, last]")
    if u0 < min(h0, f0):
        raise ConfigError(f"demo.future_years must not start before {min(h0, f0)}, got {u0}")


def _simulate(seed: int, grids, terrain, sim_years: list[int], observed: set[int], bar):
    """The fine maps of every simulated year: (coarse group fractions per year, the
    observed years' GeoTIFF bytes, the land pixels per coarse cell, the landscape)."""
    scape, state = _landscape(seed, grids, terrain)
    dynamics = _rng(seed, "dynamics")
    group_seq = []
    tiffs: dict[int, bytes] = {}
    land_count = None
    for i, year in enumerate(sim_years):
        if i > 0:
            state = _step(state, year, scape, dynamics)
        groups, land_count = _aggregate(state, grids.factor)
        group_seq.append(groups)
        if year in observed:
            tiffs[year] = _geotiff_bytes(state, crs=CRS.from_epsg(4326),
                                         transform=grids.fine.transform, nodata=NODATA,
                                         colormap=HILDA_COLORS)
        bar.update(1)
    return np.stack(group_seq), tiffs, land_count, scape


def _write_fine_maps(fine, tiffs: dict[int, bytes], written: list[Path], bar) -> None:
    """The observed maps: one zip archive (HILDA+'s) or one GeoTIFF per year."""
    archive = Path(fine.archive) if fine.archive else None
    if archive is not None:
        with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w") as zf:
            for year in sorted(tiffs):
                info = zipfile.ZipInfo(fine.pattern.format(year=year), date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, tiffs[year])
        written.append(archive)
    else:
        for year in sorted(tiffs):
            path = Path(fine.pattern.format(year=year))
            with atomic_path(path) as tmp:
                tmp.write_bytes(tiffs[year])
            written.append(path)
    bar.update(1)


def _write_scenario(name: str, path: Path, *, seed: int, grids, groups_all, splits, ocean_cells,
                    first: int, last: int, future: tuple[int, int], names: list[str]) -> None:
    """One scenario: the simulated (observed) sequence, then the scenario's trend."""
    u0, u1 = future
    extra = max(0, u1 - last)
    family = _scenario_family(name)
    mod_rng = _rng(seed, f"scenario:{name}")
    modulation = np.stack([
        (1.0 + 0.5 * _smooth_noise(mod_rng, grids.coarse.shape, 2.0)).clip(0.2, 1.8)
        for _ in SCENARIO_FLOWS[family]
    ])
    tail = _extend(groups_all[-1], extra, family, modulation) if extra else groups_all[:0]
    seq = np.concatenate([groups_all, tail])
    seq_years = list(range(first, last + extra + 1))
    variables = _luh_variables(seq, seq_years, splits, ocean_cells)
    idx = [seq_years.index(y) for y in range(u0, u1 + 1)]
    _write_luh_netcdf(path, grids.coarse, years=list(range(u0, u1 + 1)), time_origin=u0,
                      variables={n: variables[n][idx] for n in names},
                      title=f"ai4land demo world: LUH2-style future states, {name} ({family})")


def _write_luh_static(path: Path, *, grids, scape, groups_all, land_count, ocean_cells) -> None:
    """LUH2's static data: water/ice fraction, cell area, natural forest fraction."""
    natural_forest = (scape.pnv == FOREST) & scape.land
    forest_nat = _block_sum(natural_forest, grids.factor) / np.maximum(land_count, 1)
    lat_n = grids.coarse.lat + grids.coarse.res / 2
    lat_s = grids.coarse.lat - grids.coarse.res / 2
    carea = (EARTH_RADIUS_KM**2 * math.radians(grids.coarse.res)
             * (np.sin(np.radians(lat_n)) - np.sin(np.radians(lat_s))))
    carea = np.repeat(carea[:, None], grids.coarse.width, axis=1)
    static_vars = {
        "icwtr": np.where(ocean_cells, FILL, groups_all[0, _G_WATER]).astype("float32"),
        "carea": carea.astype("float32"),
        "fstnf": np.where(ocean_cells, FILL, forest_nat).astype("float32"),
    }
    _write_luh_netcdf(path, grids.coarse, years=None, time_origin=None, variables=static_vars,
                      title="ai4land demo world: LUH2-style static data")


def _write_static_layer(layer, *, seed: int, grids, terrain) -> Path:
    """One static raster on its own grid: NetCDF (ETOPO-like) or an IGH GeoTIFF."""
    field = grids.field
    path = Path(layer.path)
    name = layer.name.lower()
    if name.startswith(("elev", "topo", "dem", "height")):
        source, long_name, units = terrain.elevation, "surface elevation", "m"
    elif name.startswith("clay"):
        source, long_name, units = terrain.clay, "clay content 0-5 cm", "g/kg"
    else:
        extra_rng = _rng(seed, f"static:{layer.name}")
        source = 100.0 + 50.0 * _smooth_noise(extra_rng, field.shape, 0.2 / field.res)
        long_name, units = layer.name, "1"

    def values_fn(lon, lat, source=source):
        return _sample(source, field, lon, lat, order=1)

    if path.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        _write_etopo(path, layer.variable or "z", values_fn, grids, long_name=long_name,
                     units=units)
    else:
        def ocean_fn(lon, lat):
            return _sample(terrain.ocean.astype("uint8"), field, lon, lat, order=0) > 0

        _write_igh_tiff(path, values_fn, grids, ocean_fn)
    return path


def write_demo_world(config: Config, *, progress: bool = True) -> list[Path]:
    """Write the synthetic raw inputs described by ``config``; return the paths written.

    Deterministic given ``config.seed`` and ``config.demo``: rerunning writes the same
    bytes.
    """
    config = stage_config(config, "demo_world")  # reads only its slice
    _check_config(config)
    seed = config.seed
    grids = _grids(config)
    datasets = config.datasets
    f0, f1 = datasets.fine.years
    h0, h1 = config.demo.historical_years
    first, last = min(h0, f0), max(h1, f1)
    sim_years = list(range(first, last + 1))
    scenarios = dict(datasets.coarse.scenarios)
    n_files = 2 + len(scenarios) + bool(datasets.coarse.static) + len(datasets.static)
    bar = tqdm(total=len(sim_years) + n_files, desc="demo world", unit="step",
               disable=None if progress else True)
    written: list[Path] = []

    def done(path: Path) -> None:
        written.append(path)
        bar.update(1)

    try:
        terrain = _terrain(seed, grids)
        groups_all, tiffs, land_count, scape = _simulate(seed, grids, terrain, sim_years,
                                                         set(range(f0, f1 + 1)), bar)
        ocean_cells = land_count == 0
        splits = _splits(seed, grids, terrain)
        _write_fine_maps(datasets.fine, tiffs, written, bar)

        # Historical coarse states.
        hist_idx = [sim_years.index(y) for y in range(h0, h1 + 1)]
        full_vars = _luh_variables(groups_all, sim_years, splits, ocean_cells)
        hist_vars = {name: values[hist_idx] for name, values in full_vars.items()}
        names = [*LUH2_FRACTIONS, "secma", "secmb"]
        path = Path(datasets.coarse.historical)
        _write_luh_netcdf(path, grids.coarse, years=list(range(h0, h1 + 1)), time_origin=850,
                          variables={n: hist_vars[n] for n in names},
                          title="ai4land demo world: LUH2-style historical land-use states")
        done(path)

        for name, file in scenarios.items():
            _write_scenario(name, Path(file), seed=seed, grids=grids, groups_all=groups_all,
                            splits=splits, ocean_cells=ocean_cells, first=first, last=last,
                            future=tuple(config.demo.future_years), names=names)
            done(Path(file))
        if datasets.coarse.static:
            path = Path(datasets.coarse.static)
            _write_luh_static(path, grids=grids, scape=scape, groups_all=groups_all,
                              land_count=land_count, ocean_cells=ocean_cells)
            done(path)
        for layer in datasets.static:
            done(_write_static_layer(layer, seed=seed, grids=grids, terrain=terrain))
    finally:
        bar.close()
    return written

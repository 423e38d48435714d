"""How values are stored: class codes' no-data, colours, and uint8 quantisation.

Shared by the writers (:mod:`ai4land.io.cog`, :mod:`ai4land.io.zarr_store`), the
finalising layers and the figures, so it sits low in the import graph.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

NODATA = 99


QUANT_NODATA = 255


QUANT_SCALE = 254  # stored value = round(x * 254), x in [0, 1]


# HILDA+ legend colours (RGB), close to the colours used in the HILDA+ figures.
DEFAULT_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (166, 206, 227),  # ocean
    11: (227, 26, 28),  # urban
    22: (255, 215, 0),  # cropland
    33: (178, 223, 138),  # pasture/rangeland
    44: (34, 139, 34),  # forest
    55: (191, 129, 45),  # unmanaged grass/shrubland
    66: (217, 217, 217),  # sparse/no vegetation
    77: (31, 120, 180),  # water
    99: (0, 0, 0),  # no data
}


def class_colour(code: int, colours: Mapping[int, tuple] | None = None) -> tuple[int, int, int]:
    """The (r, g, b) of a class code (a code without a colour gets the grey of its value)."""
    rgb = (DEFAULT_COLOURS if colours is None else colours).get(code, (code, code, code))
    return tuple(int(v) for v in rgb[:3])


def class_hex(code: int) -> str:
    """The class colour as ``RRGGBB`` hex digits (STAC colour hints, README, viewer)."""
    return "{:02X}{:02X}{:02X}".format(*class_colour(code))


def colour_table(legend: Mapping[int, str], colours: Mapping[int, tuple] | None = None) -> dict:
    """One RGBA entry per legend code (unknown codes get a grey derived from the code)."""
    table = {}
    for code in sorted(legend):
        table[int(code)] = (*class_colour(code, colours), 0 if code == NODATA else 255)
    return table


def legend_tags(legend: Mapping[int, str]) -> dict[str, str]:
    """Class names as GDAL metadata: one ``CLASS_<code>`` item each plus a JSON legend."""
    tags = {f"CLASS_{int(code)}": name for code, name in sorted(legend.items())}
    tags["CLASS_LEGEND"] = json.dumps({str(c): n for c, n in sorted(legend.items())})
    return tags


def quantise(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 0..254 (value / 254); NaN → 255 (nodata)."""
    values = np.asarray(values, dtype="float32")
    out = np.full(values.shape, QUANT_NODATA, dtype="uint8")
    ok = np.isfinite(values)
    out[ok] = np.rint(np.clip(values[ok], 0.0, 1.0) * QUANT_SCALE).astype("uint8")
    return out


def dequantise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    out = values.astype("float32") / QUANT_SCALE
    out[values == QUANT_NODATA] = np.nan
    return out

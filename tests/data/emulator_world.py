"""A tiny world for the emulator's tests: a cube, a config and a (random) model directory.

``write_world(root)`` writes under ``root``::

    cube/     a tiny cube (64 x 64 pixels of 0.01 degree, 8 x 8 coarse cells), observed
              maps 1960-1965, coarse ``historical`` 1956-1965 and ``ssp126`` 1964-1970
    model/    a small random U-Net with its card (the card carries the config)

and returns the config. ``write_luh_file(cube_root, scenario, path)`` writes that
cube's coarse scenario as a LUH2-format NetCDF (fill value 1e20 under ``_Fillvalue``,
time in "years since", latitude running south to north, no water fraction).
Everything is a pure function of the arguments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tiny_cube import rewrite_coarse_years, write_tiny_cube

from ai4land.config import parse_config
from ai4land.io.cube import Cube
from ai4land.models import ModelCard, UNet, save_model
from ai4land.samples.features import input_channel_names

OBSERVED = range(1960, 1966)
SIZE, FACTOR = 64, 8


def world_config(root: Path, *, cube: str | Path | None = None, **predict):
    data = {
        "run_name": "emulator",
        "paths": {"raw": str(root / "raw"), "cube": str(cube or root / "cube"),
                  "results": str(root / "results")},
        "datasets": {
            "coarse": {"historical": "unused.nc", "scenarios": {"ssp126": "unused2.nc"}},
            "fine": {"pattern": "unused_{year}.tif", "years": [OBSERVED[0], OBSERVED[-1]]},
        },
        "years": {"train": [1960, 1963], "test": [1964, 1965], "backward": [1958, 1959],
                  "forward": [1966, 1967]},
        "scenarios": ["ssp126"],
        "predict": {"tile_size": 32, "overlap": 8, "batch_size": 4, "device": "cpu", **predict},
    }
    return parse_config(data, source="emulator world")


def write_world(root: Path, *, seed: int = 0):
    root = Path(root)
    write_tiny_cube(root / "cube", size=SIZE, factor=FACTOR, years=OBSERVED,
                    scenarios=("historical", "ssp126"), seed=seed)
    rewrite_coarse_years(root / "cube", "historical", list(range(1956, 1966)))
    rewrite_coarse_years(root / "cube", "ssp126", list(range(1964, 1971)))
    config = world_config(root)
    write_model(root / "model", config)
    return config


def write_model(directory: Path, config, *, card_config: dict | None = None,
                dropped_inputs: list[str] = ()) -> Path:
    """A random small U-Net for ``config``'s cube; its card carries ``card_config``
    (default: ``config`` itself) and ``dropped_inputs``."""
    cube = Cube.from_config(config)
    names = input_channel_names(cube, list(config.classes.predicted))
    torch.manual_seed(0)
    model = UNet(len(names), len(config.classes.predicted), base_channels=4, depth=2)
    card = ModelCard(input_channels=names, classes=list(config.classes.predicted),
                     architecture=model.config, tile_size=32,
                     dropped_inputs=list(dropped_inputs),
                     config=config.model_dump(mode="json") if card_config is None
                     else card_config)
    save_model(directory, model, card)
    return directory


def write_luh_file(cube_root: Path, scenario: str, path: Path, *, first_year: int = 1950) -> Path:
    """The cube's coarse ``scenario`` as a LUH2-format NetCDF (without the water fraction)."""
    ds = xr.open_zarr(Path(cube_root) / "coarse" / f"{scenario}.zarr", chunks=None).load()
    ds = ds.drop_vars("icwtr").isel(lat=slice(None, None, -1))  # south to north
    years = ds["year"].values
    ds = ds.rename(year="time").assign_coords(time=("time", (years - first_year).astype("float64")))
    ds["time"].attrs = {"units": f"years since {first_year}-01-01 0:0:0", "calendar": "noleap"}
    encoding = {}
    for name in ds.data_vars:
        values = ds[name].values
        ds[name] = (ds[name].dims, np.where(np.isnan(values), 1e20, values).astype("float32"),
                    {"_Fillvalue": 1e20, "units": "1"})
        encoding[name] = {"_FillValue": None}
    for name in ("time", "lat", "lon"):
        encoding[name] = {"_FillValue": None}
    ds.to_netcdf(path, encoding=encoding)
    return path

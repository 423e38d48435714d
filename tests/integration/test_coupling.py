"""The coupling demonstration (docs/coupling.md): an SSP chain on the demo world, emulated
from the raw LUH-format scenario file and aggregated to a 2 degree grid, as an
Earth-system model would take it.

At 2 degrees the maps agree with the delta-method target (the observed anchor map plus
the scenario's change) to whole-pixel rounding, so their change between years is the
scenario's change; they differ from raw LUH by no more than the anchor offset (the
observed map's own departure from LUH at the anchor year: HILDA+/LUH2 definitions on
real data, ~0 on the demo world, whose LUH is aggregated from its maps). What the fine
maps add: the split of natural non-forest into grass/shrubland and sparse vegetation,
PFT fractions, and per-cell heterogeneity (class entropy, number of classes), none of
which the coarse data hold.

A random U-Net is enough here: harmonisation, not the network, fixes the coarse
fractions (the quality of the maps is the evaluation's business).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from data.demo_cube import demo_workspace

from ai4land.emulator.core import CoarseScenario, Emulator
from ai4land.grid import Window
from ai4land.io.cube import upsample_cells
from ai4land.predict.harmonize import delta_target, luh_group_fractions, map_group_fractions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from emulator_world import write_model  # noqa: E402

BBOX = (4.0, 42.0, 8.0, 46.0)  # 4 x 4 degrees: 2 x 2 cells of 2 degrees, 16 x 16 LUH cells
YEARS = (2020, 2022)
TOLERANCE = 0.005  # whole-pixel rounding in 625-pixel cells, summed over 64 of them


def _pixel_area(emulator) -> np.ndarray:
    grid = emulator.cube.fine_grid
    edges = np.radians(grid.north - np.arange(grid.height + 1) * grid.res)
    return (np.sin(edges[:-1]) - np.sin(edges[1:]))[:, None] * math.radians(grid.res)


def _to_2deg(values: np.ndarray, weight: np.ndarray, cells: int) -> np.ndarray:
    """(G, hc, wc) per LUH cell → (G, 2, 2) weighted means over blocks of ``cells``."""
    g, hc, wc = values.shape
    num = (values * weight).reshape(g, hc // cells, cells, wc // cells, cells).sum(axis=(2, 4))
    den = weight.reshape(hc // cells, cells, wc // cells, cells).sum(axis=(1, 3))
    return num / den


@pytest.mark.slow
def test_chain_aggregated_to_2deg_agrees_with_the_scenario(tmp_path):
    config = demo_workspace(tmp_path, bbox=BBOX)
    write_model(tmp_path / "results" / "model", config)
    emulator = Emulator.from_model(tmp_path / "results" / "model")
    scenario = config.datasets.coarse.scenarios["ssp126"]  # the raw LUH2-format file
    maps = emulator.predict(scenario, years=YEARS)
    fractions = emulator.aggregate(maps, {"res": 2.0, "bbox": list(BBOX)})
    assert fractions.sizes["lat"] == fractions.sizes["lon"] == 2
    reports = json.loads(maps.attrs["reports"])
    assert all(r["pixels"]["kept"] == 0 for r in reports)  # every land pixel is modelled

    # the delta-method target and raw LUH per LUH cell, area-weighted to 2 degrees
    groups, factor, cube = emulator.groups, emulator.cube.factor, emulator.cube
    whole = Window(0, 0, *cube.fine_grid.shape)
    region, _ = emulator.region(BBOX)
    source = CoarseScenario(scenario, config=config, coarse_grid=cube.coarse_grid)
    water = region.cube_water()
    anchor_cells = source.cells(2019, region.coarse_grid, water=water)
    anchor_map = cube.target_window(2019, whole)
    land = cube.land_mask_window(whole)
    names = cube.coarse_channel_names
    group_of_class = {c: g for g, codes in enumerate(groups.classes) for c in codes}
    cells_per_2deg = round(2.0 / cube.coarse_grid.res)
    area = _pixel_area(emulator)
    summary = {}
    for year in range(YEARS[0], YEARS[1] + 1):
        cells = source.cells(year, region.coarse_grid, water=water)
        no_data = upsample_cells(np.isnan(cells[:-1]).all(axis=0), factor=factor, window=whole)
        valid = land & ~no_data & (anchor_map != config.classes.nodata)
        luh = luh_group_fractions(cells, names, groups)
        target = delta_target(map_group_fractions(anchor_map, groups, factor=factor,
                                                  valid=valid)[0],
                              luh, luh_group_fractions(anchor_cells, names, groups))
        valid_area = (area * valid).reshape(luh.shape[1], factor, luh.shape[2], factor).sum(
            axis=(1, 3))
        target_2deg = _to_2deg(target, valid_area, cells_per_2deg)
        luh_2deg = _to_2deg(luh, valid_area, cells_per_2deg)
        # the maps' group fractions at 2 degrees, from the aggregated class fractions
        at = fractions.sel(time=fractions["year"] == year).isel(time=0)
        class_vars = {c: config.aggregate.class_names[c] for c in emulator.classes}
        land_total = sum(at[n] for n in class_vars.values()).values
        mapped = np.zeros_like(target_2deg)
        for code, name in class_vars.items():
            mapped[group_of_class[code]] += at[name].values / land_total
        summary[year] = {"target": np.abs(mapped - target_2deg).max(),
                         "luh": np.abs(mapped - luh_2deg).max(),
                         "offset": np.abs(target_2deg - luh_2deg).max(), "mapped": mapped,
                         "luh_2deg": luh_2deg}
        # against raw LUH, the maps differ by the anchor offset (the observed map's own
        # departure from LUH at the anchor year) and whole-pixel rounding, nothing more
        assert summary[year]["luh"] <= summary[year]["offset"] + TOLERANCE
        assert summary[year]["target"] < TOLERANCE, (year, summary[year]["target"])

    # the maps' change over the chain is the scenario's change, at 2 degrees
    first, last = summary[YEARS[0]], summary[YEARS[1]]
    change_maps = last["mapped"] - first["mapped"]
    change_luh = last["luh_2deg"] - first["luh_2deg"]
    assert np.abs(change_maps - change_luh).max() < 2 * TOLERANCE
    assert np.abs(change_luh).max() > 2 * TOLERANCE  # the scenario does change
    print(json.dumps({year: {k: round(float(v), 5) for k, v in row.items()
                             if k in ("target", "luh", "offset")}
                      for year, row in summary.items()}))
    print("change", json.dumps({"max_scenario_change": round(float(np.abs(change_luh).max()), 5),
                                "max_change_difference": round(float(
                                    np.abs(change_maps - change_luh).max()), 5)}))

    # what the fine maps add at 2 degrees
    year0 = fractions.isel(time=0)
    assert (year0["n_classes"].values >= 4).all()
    assert (year0["class_entropy"].values > 0).all()
    natural = year0["grass_shrub"] + year0["sparse"]  # LUH2 holds only their sum (primn + secdn)
    assert (natural.values > 0).all()
    pft = sum(year0[f"pft_{p}"] for p in config.aggregate.pfts)
    classes = sum(year0[n] for n in config.aggregate.class_names.values())
    np.testing.assert_allclose(pft.values, classes.values, atol=1e-5)

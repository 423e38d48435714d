"""viewer: the publish tree's web viewer in headless Chromium, and what it adds to the tree.

A product on the demo world's grid (600 x 600 pixels at 0.01°, 25-pixel coarse cells):
one historical map and four ssp126 years, class maps of patches that change a little
each year and smooth probability / entropy fields with noise (made by the tests'
``publish_products``), published by ``ai4land publish``. Then:

- ``viewer_first_map``: time from navigation start to the first map layer loaded on the
  page (the viewer's ``window.ai4land.firstMapMs``), the tree served by
  ``python -m http.server`` on 127.0.0.1, Debian's Chromium headless through Selenium,
  browser cache off, median of 7 page loads; reference: the load event of a blank HTML
  page from the same server in the same browser (the floor of any page).
- ``viewer_bytes``: the bytes the pictures and the viewer add per (scenario, year): its
  three layer PNGs and quicklook, plus its share of the scenario's animation, change
  figure and cells.json, and of the trajectories figure and viewer index; reference: the
  (scenario, year)'s own three COGs. The fixed viewer code (Leaflet and ours) is a
  parameter. Also the time ``write_pictures`` adds to publish.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, write_result

sys.path.insert(0, str(ROOT / "tests" / "data"))
SIZE, FACTOR = 600, 25
FORWARD = (1966, 1969)
LOADS = 7


def patch_maps(rng, shape, scenario: str, year: int):
    """Patches of 30 pixels (classes 0, 22, 33, 44, 55), a few hundred of them
    changing class each year; probability: a smooth field plus noise."""
    from tiny_cube import _smooth_field

    local = np.random.default_rng(7)  # the same landscape for every year
    fields = np.stack([_smooth_field(local, shape[0], 30) for _ in range(5)])
    codes = np.array([0, 22, 33, 44, 55], dtype="uint8")[fields.argmax(axis=0)]
    years = year - 1959 if scenario == "historical" else year - 1965
    for _ in range(40 * years):
        r, c = local.integers(0, shape[0] - 6, size=2)
        codes[r:r + 6, c:c + 6] = 22
    prob = np.clip(0.4 + 0.5 * _smooth_field(local, shape[0], 20)
                   + rng.normal(0, 0.05, shape), 0, 1)
    return codes, prob


def publish_tree(tmp: Path) -> tuple[object, Path, float]:
    from publish_products import make_products

    from ai4land.grid import Grid
    from ai4land.publish import viewer
    from ai4land.publish.run import run_publish

    grid = Grid(west=4.0, north=48.0, res=0.01, width=SIZE, height=SIZE)
    config, results, store, model, metrics = make_products(
        tmp, grid=grid, forward=FORWARD, factor=FACTOR, maps=patch_maps)
    run_publish(config, maps_dir=results / "maps", store=store, model_dir=model,
                metrics_path=metrics, output_dir=results / "publish")
    tree = results / "publish"
    linked = [(s, y, tree / "maps" / s / f"ai4land_{s}_{y}.tif")
              for s in config.product_scenarios for y in config.scenario_years(s)]
    start = time.perf_counter()
    viewer.write_pictures(config, linked, tmp / "scratch", "timing")
    return config, tree, time.perf_counter() - start


def extra_bytes(config, tree: Path) -> dict:
    size = lambda path: path.stat().st_size  # noqa: E731
    maps = [(s, y) for s in config.product_scenarios for y in config.scenario_years(s)]
    data, looks = tree / "viewer" / "data", tree / "quicklooks"
    shared = size(looks / "class_area_trajectories.png") + size(data / "index.json")
    per_map, cogs, layers = [], [], []
    for scenario, year in maps:
        n = len(config.scenario_years(scenario))
        own = sum(size(data / scenario / f"{year}_{k}.png")
                  for k in ("lulc", "probability", "entropy"))
        layers.append(own)
        own += size(looks / scenario / f"ai4land_{scenario}_{year}.png")
        own += (size(looks / scenario / f"ai4land_{scenario}.gif")
                + size(looks / scenario / f"ai4land_{scenario}_change.png")
                + size(data / scenario / "cells.json")) / n
        per_map.append(own + shared / len(maps))
        cog = tree / "maps" / scenario / f"ai4land_{scenario}_{year}.tif"
        cogs.append(sum(size(cog.with_name(cog.stem + s + ".tif"))
                        for s in ("", "_probability", "_entropy")))
    code = sum(size(p) for p in (tree / "viewer").glob("*.*")) + sum(
        size(p) for p in (tree / "viewer" / "vendor").rglob("*") if p.is_file())
    return {"per_map": float(np.mean(per_map)), "cogs": float(np.mean(cogs)),
            "layers": float(np.mean(layers)), "code": code, "maps": len(maps)}


def page_loads(served: Path) -> tuple[list[float], list[float], str | None]:
    from browser import chrome, serve, wait_for

    (served / "blank.html").write_text(
        '<!DOCTYPE html><title>blank</title><link rel="icon" href="data:,"><p>blank</p>\n')
    server, url = serve(served)
    driver = chrome()
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        first, blank = [], []
        for _ in range(LOADS):
            driver.get(f"{url}/publish/viewer/")
            first.append(wait_for(driver, "return window.ai4land && window.ai4land.firstMapMs"))
            driver.get(f"{url}/blank.html")
            blank.append(wait_for(driver, "const t = performance.timing; return "
                                  "t.loadEventEnd > 0 && t.loadEventEnd - t.navigationStart"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        if errors:
            raise SystemExit(f"the viewer logged errors: {errors}")
        version = driver.capabilities.get("browserVersion")
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
    return first, blank, version


def main() -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        tmp = Path(tmp)
        config, tree, pictures_s = publish_tree(tmp)
        sizes = extra_bytes(config, tree)
        first, blank, version = page_loads(tree.parent)
    params = {
        "grid": f"{SIZE} x {SIZE} pixels, {FACTOR}-pixel coarse cells",
        "maps": sizes["maps"],
        "page_loads": LOADS,
        "first_map_ms_all": [round(v, 1) for v in first],
        "blank_page_ms_median": round(statistics.median(blank), 1),
        "chromium": version,
        "server": "python -m http.server, 127.0.0.1, browser cache off",
        "write_pictures_s": round(pictures_s, 2),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    write_result(
        "viewer_first_map", metric="ms from navigation start to the first map layer loaded",
        ours=statistics.median(first), reference=statistics.median(blank),
        reference_name="blank HTML page, same server and browser",
        target="< 1000 ms from a local static server (demo grid)",
        meets_target=statistics.median(first) < 1000, params=params)
    write_result(
        "viewer_bytes", metric="bytes the pictures and viewer add per (scenario, year)",
        ours=sizes["per_map"], reference=sizes["cogs"],
        reference_name="the (scenario, year)'s three COGs",
        target=None, meets_target=None,
        params={"grid": params["grid"], "maps": sizes["maps"],
                "viewer_layers_bytes_per_map": round(sizes["layers"]),
                "viewer_code_bytes_once": sizes["code"],
                "write_pictures_s": params["write_pictures_s"]})


if __name__ == "__main__":
    main()

"""The publish tree's pictures and web viewer: the files and numbers (fast), and the
viewer in a real headless browser (Debian's Chromium driven by Selenium)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from browser import chrome, serve, wait_for  # noqa: E402
from publish_products import make_products  # noqa: E402

from ai4land.grid import Grid  # noqa: E402
from ai4land.publish.run import run_publish  # noqa: E402
from ai4land.publish.viewer import CellGrid  # noqa: E402

# 3 x 4 coarse cells of 8 pixels, three forward years
GRID = Grid(west=4.0, north=48.0, res=0.01, width=32, height=24)
FORWARD = (1966, 1968)


@pytest.fixture
def published(tmp_path):
    config, results, store, model, metrics = make_products(tmp_path, grid=GRID,
                                                           forward=FORWARD)
    run_publish(config, maps_dir=results / "maps", store=store, model_dir=model,
                metrics_path=metrics, output_dir=results / "publish")
    return config, results / "publish"


def expected_cell(tree: Path, scenario: str, year: int, row: int, col: int, size: int,
                  classes: list[int]) -> tuple[list[str], int]:
    """The cell's class percentages (two decimals, half up) and pixel count, from the
    published class COG at full resolution."""
    cog = tree / "maps" / scenario / f"ai4land_{scenario}_{year}.tif"
    with rasterio.open(cog) as src:
        codes = src.read(1)[row * size:(row + 1) * size, col * size:(col + 1) * size]
    counts = [int(np.count_nonzero(codes == c)) for c in classes]
    n = sum(counts)
    return [f"{(c * 20000 + n) // (2 * n) / 100:.2f}" for c in counts], n


def test_viewer_files_and_cell_fractions(published):
    config, tree = published
    index = json.loads((tree / "viewer/data/index.json").read_text())
    assert [s["name"] for s in index["scenarios"]] == ["historical", "ssp126"]
    ssp = index["scenarios"][1]
    assert ssp["years"] == [1966, 1967, 1968] and ssp["anchor_year"] == 1965
    assert index["bounds"] == [4.0, 47.76, 4.32, 48.0]
    assert index["cells"] == {"size": 8, "rows": 3, "cols": 4, "degrees": 0.08, "step": 1}
    classes = [c["code"] for c in index["classes"]]
    assert 99 not in classes and 22 in classes
    cells = json.loads((tree / "viewer/data/ssp126/cells.json").read_text())
    k = len(classes)
    for y, year in enumerate(ssp["years"]):
        for cell in range(12):
            row, col = divmod(cell, 4)
            want, n = expected_cell(tree, "ssp126", year, row, col, 8, classes)
            got = [f"{v / 100:.2f}" for v in cells["bp"][y][cell * k:(cell + 1) * k]]
            assert got == want and cells["pixels"][y][cell] == n
        for layer in ("lulc", "probability", "entropy"):
            image = Image.open(tree / f"viewer/data/ssp126/{year}_{layer}.png")
            assert image.mode == "P" and image.size == (32, 24)
        with rasterio.open(tree / f"maps/ssp126/ai4land_ssp126_{year}_entropy.tif") as src:
            stored = src.read(1)
        shown = np.asarray(Image.open(tree / f"viewer/data/ssp126/{year}_entropy.png"))
        assert np.array_equal(shown, np.floor(stored.astype(float) * 20 / 254 + 0.5))
    # the class layer holds the codes themselves (palette indices)
    with rasterio.open(tree / "maps/ssp126/ai4land_ssp126_1967.tif") as src:
        assert np.array_equal(np.asarray(Image.open(tree / "viewer/data/ssp126/1967_lulc.png")),
                              src.read(1))
    gif = Image.open(tree / "quicklooks/ssp126/ai4land_ssp126.gif")
    assert gif.n_frames == 3
    for name in ("quicklooks/ssp126/ai4land_ssp126_change.png",
                 "quicklooks/ssp126/ai4land_ssp126_1968.png",
                 "quicklooks/class_area_trajectories.png",
                 "viewer/index.html", "viewer/viewer.js",
                 "viewer/vendor/leaflet/leaflet.js", "viewer/vendor/leaflet/LICENSE"):
        assert (tree / name).stat().st_size > 0, name
    assert "https://" not in (tree / "viewer/index.html").read_text()  # no CDN


def test_cells_merge_coarse_cells_on_a_large_grid():
    grid = Grid(west=-180, north=90, res=0.01, width=36000, height=18000)
    cells = CellGrid.of(grid, 25)  # 1440 x 720 coarse cells
    # 23 x 23 coarse cells each; counted on every 5th pixel (648 M pixels > 64 M)
    assert (cells.size, cells.rows, cells.cols, cells.step) == (25 * 23, 32, 63, 5)
    assert CellGrid.of(Grid(west=0, north=6, res=0.01, width=600, height=600), 25) == \
        CellGrid(25, 24, 24, 1)


def test_cell_counts_of_a_large_map_read_the_overviews(tmp_path):
    from ai4land.io.cog import write_cog
    from ai4land.publish.viewer import cell_counts

    grid = Grid(west=0.0, north=1.0, res=0.01, width=64, height=48)
    codes = np.where(np.arange(64)[None, :] < 32, 22, 44).repeat(48, axis=0).astype("uint8")
    cog = tmp_path / "map.tif"
    write_cog(cog, codes, grid, legend={22: "cropland", 44: "forest", 99: "no data"})
    exact = cell_counts(cog, CellGrid(16, 3, 4, 1), [22, 44])
    estimated = cell_counts(cog, CellGrid(16, 3, 4, 2), [22, 44])
    assert exact.sum(axis=1).tolist() == [256] * 12 and estimated.sum(axis=1).tolist() == [64] * 12
    assert (exact[:, 0] > 0).tolist() == [True, True, False, False] * 3
    assert np.array_equal(estimated * 4, exact)  # whole blocks of one class


# --- the viewer in a browser ----------------------------------------------------------


@pytest.mark.slow
def test_viewer_in_a_headless_browser(published, tmp_path, keep_artefact):
    """Served by python -m http.server: no console errors, the slider changes the year
    and the image, a click shows the cell's numbers; the screenshot is kept under the
    test's tmp dir and copied to test-artefacts/viewer.png (listed at the end of the run)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    _, tree = published
    server, url = serve(tree)
    driver = chrome()
    try:
        driver.get(f"{url}/viewer/")
        loaded = "return document.body.dataset.loaded || ''"
        assert wait_for(driver, loaded).endswith("data/historical/1959_lulc.png")
        Select(driver.find_element(By.ID, "scenario")).select_by_value("ssp126")
        assert wait_for(driver, f"{loaded}.endsWith('1966_lulc.png')")
        assert driver.find_element(By.ID, "year-label").text == "1966"
        driver.find_element(By.ID, "year").send_keys(Keys.ARROW_RIGHT)
        assert wait_for(driver, f"{loaded}.endsWith('data/ssp126/1967_lulc.png')")
        assert driver.find_element(By.ID, "year-label").text == "1967"
        image = driver.find_element(By.CSS_SELECTOR, "img.leaflet-image-layer")
        assert image.get_attribute("src").endswith("1967_lulc.png")
        assert driver.execute_script("return arguments[0].naturalWidth", image) == 32

        # a click on the map: that cell's fractions by year are the product's
        ActionChains(driver).move_to_element_with_offset(
            driver.find_element(By.ID, "map"), 5, 5).click().perform()
        wait_for(driver, "return document.querySelector('#cell-table') !== null")
        panel = driver.find_element(By.ID, "cell")
        assert panel.find_elements(By.CSS_SELECTOR, "#cell-chart polyline")  # lines by year
        row, col = int(panel.get_attribute("data-row")), int(panel.get_attribute("data-col"))
        index = json.loads((tree / "viewer/data/index.json").read_text())
        classes = [c["code"] for c in index["classes"]]
        for year in (1966, 1967, 1968):
            line = driver.find_element(By.CSS_SELECTOR, f"#cell-table tr[data-year='{year}']")
            shown = [td.text for td in line.find_elements(By.CSS_SELECTOR, "td[data-class]")]
            want, n = expected_cell(tree, "ssp126", year, row, col, 8, classes)
            assert shown == want, (year, row, col)
            assert line.find_element(By.CSS_SELECTOR, "td.pixels").text == str(n)

        driver.find_element(By.CSS_SELECTOR, "input[value=entropy]").click()
        assert wait_for(driver, f"{loaded}.endsWith('1967_entropy.png')")
        assert "entropy" in driver.find_element(By.ID, "legend").text.lower()
        driver.save_screenshot(str(tmp_path / "viewer.png"))
        keep_artefact(tmp_path / "viewer.png")
        assert driver.execute_script("return window.ai4land.firstMapMs") > 0
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)


def test_a_report_without_its_anchor_year_is_refused(tmp_path):
    from ai4land.errors import OutputError

    config, results, store, model, metrics = make_products(tmp_path, grid=GRID,
                                                           forward=FORWARD)
    path = results / "maps/ssp126/ai4land_ssp126_1966.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "anchor_year": 1900}))
    with pytest.raises(OutputError, match="ai4land_ssp126_1966.json: anchor_year 1900 is not"):
        run_publish(config, maps_dir=results / "maps", store=store, model_dir=model,
                    metrics_path=metrics, output_dir=results / "publish")
    assert not (results / "publish").exists()

"""Mode overviews built while rows stream in give the COG that GDAL's own would."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from ai4land.grid import Grid
from ai4land.overviews import ModeOverviews, overview_shapes, source_windows
from ai4land.products import CogLayer, class_layer, overview_count

LEGEND = {0: "ocean", 11: "urban", 22: "cropland", 33: "pasture", 44: "forest",
          55: "grass", 66: "sparse", 77: "water", 99: "no data"}
CODES = np.array([11, 22, 33, 44, 55, 66, 77], dtype="uint8")


def _class_map(shape, seed=0):
    """Patches, salt-and-pepper (so windows tie), an ocean corner and a nodata strip."""
    h, w = shape
    rng = np.random.default_rng(seed)
    patches = rng.integers(0, len(CODES), size=(h // 8 + 1, w // 8 + 1))
    codes = CODES[np.kron(patches, np.ones((8, 8), dtype=int))[:h, :w]]
    noisy = rng.random(shape) < 0.3
    codes[noisy] = CODES[rng.integers(0, len(CODES), noisy.sum())]
    codes[: h // 5, : w // 3] = 0
    codes[h // 2 : h // 2 + 7, :] = 99
    return codes


def _cog(path, codes, blocks):
    """A class COG written in ``blocks`` (row ranges, in the given order)."""
    grid = Grid(west=0.0, north=50.0, res=0.01, width=codes.shape[1], height=codes.shape[0])
    with CogLayer(path, grid, workdir=path.parent, **class_layer(LEGEND, tags={"X": 1})) as cog:
        for start, stop in blocks:
            cog.write(start, codes[start:stop])
        cog.finish()
    return path.read_bytes()


@pytest.mark.parametrize("shape", [(600, 512), (301, 257), (130, 300)])
def test_streamed_mode_overviews_give_gdals_cog_bytes(tmp_path, shape):
    codes = _class_map(shape)
    h = shape[0]
    in_order = [(r, min(r + 96, h)) for r in range(0, h, 96)]
    ours = _cog(tmp_path / "ours.tif", codes, in_order)
    # rows out of order: the streamed overviews are dropped and GDAL computes them
    gdals = _cog(tmp_path / "gdal.tif", codes, in_order[1:] + in_order[:1])
    assert ours == gdals
    with rasterio.open(tmp_path / "ours.tif") as src:
        assert len(src.overviews(1)) == overview_count(shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdal.tif", "ours.tif"]


def test_blocks_of_any_height_give_the_same_levels():
    codes = _class_map((333, 250), seed=1)
    shapes = overview_shapes(codes.shape, 3)

    def levels(block_heights):
        got = [np.full(s, 255, dtype="uint8") for s in shapes]
        sinks = [lambda row, rows, out=out: out.__setitem__(slice(row, row + len(rows)), rows)
                 for out in got]
        pyramid = ModeOverviews(codes.shape, nodata=99, sinks=sinks)
        row = 0
        for height in block_heights:
            pyramid.add(row, codes[row : row + height])
            row += height
        assert pyramid.complete
        return got

    whole = levels([333])
    for blocks in ([1] * 333, [256, 77], [5, 100, 3, 225]):
        for a, b in zip(whole, levels(blocks), strict=True):
            np.testing.assert_array_equal(a, b)
    assert (whole[0] != 255).all()


def test_source_windows_cover_every_source_pixel():
    for n_source, n_target in ((600, 300), (301, 150), (7, 3), (5, 1)):
        start, stop = source_windows(n_source, n_target)
        assert start[0] == 0 and stop[-1] == n_source
        assert (stop > start).all() and (start[1:] <= stop[:-1]).all()

"""Overviews built while rows stream in give the COG that GDAL's own overviews would."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from ai4land.grid import Grid
from ai4land.io.cog import CogLayer, class_layer, overview_count, quantised_layer
from ai4land.io.overviews import StreamedOverviews, overview_shapes, source_windows

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


def _quantised(shape, nodata, seed=0):
    """Noise, a smooth ramp, nodata rows and scattered nodata pixels."""
    h, w = shape
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 256, size=shape).astype("uint8")
    ramp = min(40, h - h // 3)
    values[h // 3 : h // 3 + ramp] = np.add.outer(np.arange(ramp), np.arange(w)) % 250
    values[: h // 7] = nodata
    values[h // 2, ::3] = nodata
    return values


LAYERS = {
    "class map (mode)": (_class_map, class_layer(LEGEND, tags={"X": 1})),
    "probability (average)": (lambda shape: _quantised(shape, 255), quantised_layer("probability")),
    "average, nodata 0": (lambda shape: _quantised(shape, 0),
                          {"nodata": 0, "resampling": "AVERAGE", "tags": {},
                           "description": "test"}),
}


def _cog(path, values, spec, blocks, *, streamed):
    """A COG written in ``blocks`` (row ranges, in the given order)."""
    grid = Grid(west=0.0, north=50.0, res=0.01, width=values.shape[1], height=values.shape[0])
    with CogLayer(path, grid, workdir=path.parent, **spec) as cog:
        for start, stop in blocks:
            cog.write(start, values[start:stop])
        assert cog._overviews.complete is streamed
        cog.finish()
    return path.read_bytes()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("shape", [(600, 512), (301, 257), (130, 300), (3, 2000), (2, 300)])
def test_streamed_overviews_give_gdals_cog_bytes(tmp_path, shape, layer):
    make, spec = LAYERS[layer]
    values = make(shape)
    h = shape[0]
    step = min(96, max(h // 2, 1))  # at least two blocks, so they can come out of order
    in_order = [(r, min(r + step, h)) for r in range(0, h, step)]
    ours = _cog(tmp_path / "ours.tif", values, spec, in_order, streamed=True)
    # rows out of order: the streamed overviews are dropped and GDAL computes them
    gdals = _cog(tmp_path / "gdal.tif", values, spec, in_order[1:] + in_order[:1],
                 streamed=False)
    assert ours == gdals
    with rasterio.open(tmp_path / "ours.tif") as src:
        assert len(src.overviews(1)) == overview_count(shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gdal.tif", "ours.tif"]


@pytest.mark.parametrize("resampling", ["MODE", "AVERAGE"])
def test_blocks_of_any_height_give_the_same_levels(resampling):
    values = _class_map((333, 250), seed=1)
    shapes = overview_shapes(values.shape, 3)

    def levels(block_heights):
        got = [np.full(s, 1, dtype="uint8") for s in shapes]
        sinks = [lambda row, rows, out=out: out.__setitem__(slice(row, row + len(rows)), rows)
                 for out in got]
        pyramid = StreamedOverviews(values.shape, resampling=resampling, nodata=99, sinks=sinks)
        row = 0
        for height in block_heights:
            pyramid.add(row, values[row : row + height])
            row += height
        assert pyramid.complete
        return got

    whole = levels([333])
    for blocks in ([1] * 333, [256, 77], [5, 100, 3, 225]):
        for a, b in zip(whole, levels(blocks), strict=True):
            np.testing.assert_array_equal(a, b)


def test_source_windows_cover_every_source_pixel():
    for n_source, n_target in ((600, 300), (301, 150), (7, 3), (5, 1)):
        start, stop, first, last = source_windows(n_source, n_target)
        assert start[0] == 0 and stop[-1] == n_source
        assert (stop > start).all() and (start[1:] <= stop[:-1]).all()
        assert ((first > 0) & (first <= 1) & (last > 0) & (last <= 1)).all()


def test_unknown_resampling_is_refused():
    with pytest.raises(ValueError, match="resampling 'CUBIC'"):
        StreamedOverviews((10, 10), resampling="CUBIC", nodata=0, sinks=[])

import numpy as np
import pytest

from ai4land.errors import GridError
from ai4land.grid import Grid, Window


def test_coords_transform_roundtrip():
    grid = Grid(west=4.0, north=48.0, res=0.01, width=600, height=600)
    assert grid.bounds == pytest.approx((4.0, 42.0, 10.0, 48.0))
    assert grid.lat[0] == pytest.approx(47.995) and grid.lat[-1] == pytest.approx(42.005)
    again = Grid.from_coords(lat=grid.lat[::-1], lon=grid.lon)
    assert again.same_as(grid)
    assert Grid.from_transform(grid.transform, width=600, height=600, crs="EPSG:4326").same_as(grid)
    assert Grid.from_dict(grid.to_dict()) == grid


def test_nesting():
    fine = Grid(west=4.0, north=48.0, res=0.01, width=600, height=600)
    coarse = Grid(west=-180.0, north=90.0, res=0.25, width=1440, height=720)
    assert fine.nest_factor(coarse) == 25
    shifted = Grid(west=4.005, north=48.0, res=0.01, width=600, height=600)
    with pytest.raises(GridError, match="west edge is not on a coarse cell edge"):
        shifted.nest_factor(coarse)
    odd = Grid(west=4.0, north=48.0, res=0.03, width=200, height=200)
    with pytest.raises(GridError, match="does not divide"):
        odd.nest_factor(Grid(west=4.0, north=48.0, res=0.25, width=24, height=24))


def test_subset_and_coarsen():
    grid = Grid(west=0.0, north=10.0, res=0.5, width=20, height=20)
    sub, (row, col) = grid.subset((2.0, 4.0, 6.0, 8.0))
    assert (row, col) == (4, 4) and sub.shape == (8, 8)
    with pytest.raises(GridError, match="outside the data extent"):
        grid.subset((-1.0, 4.0, 6.0, 8.0))
    assert grid.coarsened(4).shape == (5, 5)
    with pytest.raises(GridError):
        grid.coarsened(3)


def test_window_coarse_slices():
    window = Window(row=30, col=10, height=40, width=20)
    rows, cols = window.coarse_slices(25)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (1, 3, 0, 2)
    assert np.zeros((100, 100))[window.slices].shape == (40, 20)

"""io.tiff: a truncated TIFF is told from a whole one by its directories alone."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import rasterio
from affine import Affine

from ai4land.errors import InputDataError
from ai4land.io.tiff import blocks_end, require_complete

LAYOUTS = {
    "stripped": {"driver": "GTiff"},
    "tiled_deflate": {"driver": "GTiff", "tiled": True, "blockxsize": 32, "blockysize": 32,
                      "compress": "deflate"},
    "bigtiff": {"driver": "GTiff", "BIGTIFF": "YES", "tiled": True, "blockxsize": 32,
                "blockysize": 32},
    "big_endian": {"driver": "GTiff", "ENDIANNESS": "BIG", "compress": "lzw"},
    "cog_with_overviews": {"driver": "COG", "blocksize": 32, "compress": "deflate",
                           "overview_resampling": "nearest"},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_truncated_tiff_found_in_every_layout(tmp_path, layout):
    values = np.random.default_rng(1).integers(0, 7, (150, 130)).astype("uint8") * 11
    path = tmp_path / f"{layout}.tif"
    with rasterio.open(path, "w", width=130, height=150, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=Affine(0.01, 0, 4, 0, -0.01, 44),
                       **LAYOUTS[layout]) as dst:
        dst.write(values, 1)
    data = path.read_bytes()
    with open(path, "rb") as fh:
        end = blocks_end(fh)
    assert len(data) - 8 < end <= len(data)  # the last block ends the file (COG: its trailer)
    require_complete(str(path))

    archive = tmp_path / "maps.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("whole.tif", data)
        zf.writestr("short.tif", data[: end - 1])
    require_complete(f"/vsizip/{archive}/whole.tif")
    for short in (str(tmp_path / "short.tif"), f"/vsizip/{archive}/short.tif"):
        (tmp_path / "short.tif").write_bytes(data[: end - 1])
        with pytest.raises(InputDataError, match=r"short\.tif: raster is truncated: its TIFF "
                                                 r"directory lists data up to byte \d+, the file "
                                                 rf"holds {end - 1} bytes"):
            require_complete(short)


def test_not_a_tiff_passes_and_a_cut_directory_is_named(tmp_path):
    other = tmp_path / "map.nc"
    other.write_bytes(b"CDF\x01" + bytes(100))
    require_complete(str(other))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(b"II*\x00" + (4096).to_bytes(4, "little") + bytes(8))
    with pytest.raises(InputDataError, match=r"cut\.tif: raster is truncated: its TIFF "
                                             r"directories run past the end of its 16 bytes"):
        require_complete(str(cut))

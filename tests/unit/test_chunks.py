"""Reading zarr v3 chunk files directly gives zarr's own values."""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from ai4land.errors import InputDataError
from ai4land.io.chunks import ChunkReader


def _array(path, data, chunks, *, fill_value=0, **kwargs):
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks,
                              dtype=data.dtype, fill_value=fill_value, **kwargs)
    array[...] = data
    return array


@pytest.mark.parametrize("compressors", [ZstdCodec(), None], ids=["zstd", "uncompressed"])
def test_windows_equal_zarr_reads_edges_and_unwritten_chunks(tmp_path, compressors):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 37)).astype("float32")
    data[:20, :15] = np.nan  # whole chunks of fill value: zarr writes no file for them
    array = _array(tmp_path / "a.zarr", data, (10, 7), fill_value=np.nan,
                   compressors=compressors)
    reader = ChunkReader.of(array)
    assert reader is not None
    keys = [(slice(None), slice(None)), (slice(3, 48), slice(5, 36)), (slice(0, 10), slice(0, 7)),
            (slice(49, 50), slice(30, 37)), (4, slice(2, 30)), (-1, -2), (slice(5, 5), slice(None))]
    for key in keys:
        np.testing.assert_array_equal(reader[key], array[key])
    # a key this reader does not handle goes to zarr
    np.testing.assert_array_equal(reader[slice(0, 50, 2), slice(None)], data[::2])


def test_three_dimensional_uint8_and_dot_separated_keys(tmp_path):
    data = np.random.default_rng(1).integers(0, 99, size=(3, 40, 33), dtype="uint8")
    array = _array(tmp_path / "b.zarr", data, (1, 16, 16), fill_value=7,
                   chunk_key_encoding={"name": "default", "separator": "."})
    reader = ChunkReader.of(array)
    assert reader is not None
    np.testing.assert_array_equal(reader[1, 5:39, 0:33], data[1, 5:39])
    np.testing.assert_array_equal(reader[2, :, :], data[2])


def test_other_layouts_are_left_to_zarr(tmp_path):
    data = np.zeros((8, 8), dtype="float32")
    blosc = _array(tmp_path / "c.zarr", data, (4, 4), compressors=BloscCodec())
    sharded = _array(tmp_path / "d.zarr", data, (2, 2), shards=(4, 4))
    big_endian = _array(tmp_path / "e.zarr", data, (4, 4),
                        serializer=BytesCodec(endian="big"))
    v2 = zarr.create_array(store=str(tmp_path / "f.zarr"), shape=(8, 8), chunks=(4, 4),
                           dtype="float32", zarr_format=2)
    for array in (blosc, sharded, big_endian, v2):
        assert ChunkReader.of(array) is None


def test_damaged_chunk_is_a_clear_error(tmp_path):
    array = _array(tmp_path / "g.zarr", np.ones((8, 8), dtype="float32"), (4, 4),
                   compressors=ZstdCodec())
    reader = ChunkReader.of(array)
    chunk = tmp_path / "g.zarr" / "c" / "0" / "1"
    chunk.write_bytes(numcodecs.Zstd().encode(b"\0" * 12))
    with pytest.raises(InputDataError, match=r"c/0/1: chunk holds 12 bytes, expected 64"):
        reader[0:4, 4:8]

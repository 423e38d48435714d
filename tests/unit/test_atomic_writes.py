"""Published pictures and viewer files are written atomically: a write that fails midway
leaves the previous file (or none) and no temporary beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai4land.io.atomic import write_atomic
from ai4land.publish import quicklook as ql


def test_write_atomic_writes_bytes_and_text_and_keeps_the_old_file_on_failure(tmp_path,
                                                                               monkeypatch):
    path = tmp_path / "sub" / "layer.png"
    assert write_atomic(path, b"\x89PNG") == path and path.read_bytes() == b"\x89PNG"
    write_atomic(path, "text")
    assert path.read_text() == "text"

    def half_written(self, data):
        with open(self, "wb") as f:
            f.write(data[:2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new bytes")
    assert path.read_bytes() == b"text"
    assert sorted(p.name for p in path.parent.iterdir()) == ["layer.png"]


def test_a_figure_that_fails_to_render_leaves_no_file(tmp_path, monkeypatch):
    import matplotlib.figure

    path = tmp_path / "quicklooks" / "map.png"
    codes = np.full((8, 8), 44, dtype="uint8")

    def half_written(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written)
    with pytest.raises(RuntimeError, match="renderer failed"):
        ql.map_figure(codes, (0.0, 0.0, 1.0, 1.0), {44: "forest"}, "t", path)
    assert not path.exists() and list(path.parent.iterdir()) == []
    monkeypatch.undo()
    ql.map_figure(codes, (0.0, 0.0, 1.0, 1.0), {44: "forest"}, "t", path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_an_animation_that_fails_leaves_no_file(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "ai4land_ssp126.gif"
    frames = [(2015, np.full((8, 8), 44, dtype="uint8")), (2016, np.full((8, 8), 22, "uint8"))]

    def half_written(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"GIF89a")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        ql.animation(frames, {22: "cropland", 44: "forest"}, "ssp126", path)
    assert list(tmp_path.iterdir()) == []

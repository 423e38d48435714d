"""Window planning, Gaussian blending and the batched inference loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ai4land.device import autocast_dtype
from ai4land.predict.inference import (
    coverage_count,
    gaussian_weights,
    plan_batches,
    plan_windows,
    predict_probabilities,
    tile_rows,
)


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((100, 130), 32, 8), ((64, 64), 32, 0), ((20, 50), 32, 8), ((33, 97), 16, 7), ((5, 5), 8, 2)],
)
def test_plan_covers_every_pixel_and_stays_in_bounds(shape, tile, overlap):
    windows = plan_windows(shape, tile_size=tile, overlap=overlap)
    assert coverage_count(windows, shape).min() >= 1
    height, width = shape
    sizes = {(w.height, w.width) for w in windows}
    assert sizes == {(min(tile, height), min(tile, width))}
    for w in windows:
        assert w.row >= 0 and w.col >= 0
        assert w.row + w.height <= height and w.col + w.width <= width
    # The last row/column of tiles is flush with the edges.
    assert max(w.row + w.height for w in windows) == height
    assert max(w.col + w.width for w in windows) == width
    # Neighbouring tiles overlap by at least `overlap` (exactly, except the flush one).
    rows = sorted({w.row for w in windows})
    for a, b in zip(rows, rows[1:], strict=False):
        assert a + min(tile, height) - b >= overlap
    assert len(windows) == len(set(windows))
    assert [w for row in tile_rows(windows) for w in row] == windows



@pytest.mark.parametrize("batch_size", [1, 3, 4, 16])
def test_batches_keep_order_and_never_span_two_rows_of_tiles(batch_size):
    windows = plan_windows((100, 130), tile_size=32, overlap=8)  # 4 rows of 6 tiles
    batches = plan_batches(windows, batch_size)
    assert [w for batch in batches for w in batch] == windows
    assert all(0 < len(batch) <= batch_size for batch in batches)
    assert all(len({w.row for w in batch}) == 1 for batch in batches)
    assert len(batches) == 4 * -(-6 // batch_size)

def test_gaussian_weights_peak_in_the_centre():
    w = gaussian_weights(32, 48)
    assert w.shape == (32, 48) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=1e-3) and w.min() > 0
    assert w[16, 24] > w[0, 0]
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)


class ConstantModel(nn.Module):
    """Logits that are the same everywhere (softmax = ``probs``) whatever the input."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor(probs)), requires_grad=False)
        self.conv = nn.Conv2d(3, 1, 1)  # exercises channels_last / autocast

    def forward(self, x):
        zero = self.conv(x)[:, :1] * 0
        return self.logits.view(1, -1, 1, 1) + zero.float()


class PositionModel(nn.Module):
    """Logits from the input (so each window sees different data)."""

    depth = 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _loader(image):
    return lambda w, out=None: image[(slice(None), *w.slices)]


def test_constant_model_blends_to_its_probabilities():
    probs = [0.1, 0.2, 0.3, 0.4]
    image = np.zeros((3, 50, 70), dtype="float32")
    windows = plan_windows((50, 70), tile_size=32, overlap=8)
    out = predict_probabilities(
        ConstantModel(probs), load_window=_loader(image), shape=(50, 70), windows=windows,
        batch_size=3, device="cpu", amp=False, progress=False,
    )
    assert out.shape == (50, 70, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.broadcast_to(probs, out.shape), atol=1e-6)


def test_inference_is_deterministic_and_normalised():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(3, 45, 61)).astype("float32")
    windows = plan_windows((45, 61), tile_size=24, overlap=6)
    model = PositionModel()
    kwargs = {"load_window": _loader(image), "shape": (45, 61), "windows": windows,
              "device": "cpu", "progress": False}
    a = predict_probabilities(model, batch_size=4, **kwargs)
    b = predict_probabilities(model, batch_size=4, **kwargs)
    np.testing.assert_array_equal(a, b)
    filled = []

    def fill(window, out=None):  # builds in the batch buffer, as the predict job does
        values = image[(slice(None), *window.slices)]
        if out is None:
            return values.copy()
        out[...] = values
        filled.append(window)
        return out

    c = predict_probabilities(model, batch_size=4, **{**kwargs, "load_window": fill})
    np.testing.assert_array_equal(a, c)
    assert len(filled) == len(windows) - 3  # all but the first window of each of 3 buffers
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    # fp32 without tiling: a single window over the whole image gives the plain softmax
    # in the interior (equal weights do not change a single prediction).
    single = predict_probabilities(model, load_window=_loader(image), shape=(45, 61),
                                   windows=plan_windows((45, 61), tile_size=64, overlap=0),
                                   device="cpu", amp=False, progress=False)
    with torch.no_grad():
        x = torch.nn.functional.pad(torch.from_numpy(image)[None], (0, 3, 0, 3), mode="reflect")
        ref = torch.softmax(model(x)[0, :, :45, :61], 0).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(single, ref, atol=1e-5)


def test_model_streams_give_the_same_blend_and_restore_threads():
    """Several single-threaded forward passes side by side (a CPU job with several
    cores): the same tiles added in the same order, so the same blend; torch's thread
    count is restored afterwards, and no model thread is left running."""
    import threading

    from ai4land.models import UNet

    rng = np.random.default_rng(2)
    image = rng.normal(size=(3, 70, 90)).astype("float32")
    windows = plan_windows((70, 90), tile_size=32, overlap=8)
    torch.manual_seed(0)
    model = UNet(3, 4, base_channels=4, depth=2)
    kwargs = {"load_window": _loader(image), "shape": (70, 90), "windows": windows,
              "device": "cpu", "progress": False, "batch_size": 4}
    threads = torch.get_num_threads()
    one = predict_probabilities(model, streams=1, **kwargs)
    two = predict_probabilities(model, streams=2, **kwargs)
    three = predict_probabilities(model, streams=3, **kwargs)
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(two, predict_probabilities(model, streams=2, **kwargs))
    np.testing.assert_allclose(two, one, atol=1e-5)
    np.testing.assert_allclose(three, one, atol=1e-5)
    assert not [t for t in threading.enumerate() if t.name.startswith("ai4land-")]


def test_autocast_choice():
    assert autocast_dtype(torch.device("cpu"), amp=False) is None
    assert autocast_dtype(torch.device("cpu"), amp=True) is torch.bfloat16


def test_fold_batchnorm_keeps_outputs_and_the_original_model():
    from ai4land.predict.inference import fold_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5),
                          nn.ReLU()).eval()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity) and isinstance(model[1], nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_streamed_bands_equal_the_whole_blend_and_stay_small():
    from ai4land.predict.inference import stream_probabilities

    rng = np.random.default_rng(3)
    image = rng.normal(size=(3, 100, 61)).astype("float32")
    windows = plan_windows((100, 61), tile_size=24, overlap=6)
    kwargs = {"load_window": _loader(image), "shape": (100, 61), "windows": windows,
              "device": "cpu", "progress": False, "batch_size": 5}
    whole = predict_probabilities(PositionModel(), **kwargs)
    bands = list(stream_probabilities(PositionModel(), **kwargs))
    assert [row for row, _ in bands] == [0, 18, 36, 54, 72, 76]  # tiles every 18 px, flush
    assert max(len(band) for _, band in bands) <= 28  # never more than one tile + tail
    np.testing.assert_array_equal(np.concatenate([b for _, b in bands]), whole)


@pytest.mark.parametrize("streams", [1, 2])
def test_skipped_windows_change_only_their_own_pixels(streams):
    from ai4land.predict.inference import stream_probabilities

    rng = np.random.default_rng(4)
    image = rng.normal(size=(3, 100, 61)).astype("float32")
    windows = plan_windows((100, 61), tile_size=24, overlap=6)  # 6 rows of 3 tiles
    rows = tile_rows(windows)
    # the first window, a whole row of tiles, a middle one and the last ones
    skip = {rows[0][0], *rows[2], rows[3][1], *rows[5]}
    loaded = []

    def load(window, out=None):
        loaded.append(window)
        return image[:, window.row : window.row + window.height,
                     window.col : window.col + window.width]

    kwargs = {"shape": (100, 61), "windows": windows, "device": "cpu", "progress": False,
              "batch_size": 4, "streams": streams}
    whole = predict_probabilities(PositionModel(), load_window=_loader(image), **kwargs)
    bands = list(stream_probabilities(PositionModel(), load_window=load, skip=skip, **kwargs))
    assert loaded == [w for w in windows if w not in skip]  # skipped windows are never read
    assert [row for row, _ in bands] == [0, 18, 36, 54, 72, 76]
    out = np.concatenate([band for _, band in bands])
    run_cover = coverage_count([w for w in windows if w not in skip], (100, 61))
    skip_cover = coverage_count(skip, (100, 61))
    untouched = skip_cover == 0
    np.testing.assert_array_equal(out[untouched], whole[untouched])
    assert (out[run_cover == 0] == 0).all()  # only skipped windows there: no probability
    both = (run_cover > 0) & ~untouched
    assert both.any() and (out[both].sum(axis=-1) < whole[both].sum(axis=-1)).all()
    with pytest.raises(ValueError, match="every window is skipped"):
        list(stream_probabilities(PositionModel(), load_window=load, skip=windows, **kwargs))


def test_tta_of_a_constant_model_has_no_spread():
    probs = [0.1, 0.2, 0.3, 0.4]
    image = np.zeros((3, 40, 40), dtype="float32")
    out = predict_probabilities(
        ConstantModel(probs), load_window=_loader(image), shape=(40, 40),
        windows=plan_windows((40, 40), tile_size=32, overlap=8), device="cpu", amp=False,
        progress=False, ensemble="tta", members=4,
    )
    assert out.shape == (40, 40, 6)
    np.testing.assert_allclose(out[..., :4], np.broadcast_to(probs, (40, 40, 4)), atol=1e-6)
    np.testing.assert_allclose(out[..., 4:], 0.0, atol=1e-6)  # std, disagreement


def test_tta_flips_outputs_back():
    """A model that is not flip-invariant: members disagree, but stay aligned to pixels."""
    rng = np.random.default_rng(4)
    image = rng.normal(size=(3, 32, 32)).astype("float32")
    kwargs = {"load_window": _loader(image), "shape": (32, 32), "device": "cpu",
              "amp": False, "progress": False,
              "windows": plan_windows((32, 32), tile_size=32, overlap=0)}
    model = PositionModel()
    plain = predict_probabilities(model, **kwargs)
    tta = predict_probabilities(model, ensemble="tta", members=2, **kwargs)
    with torch.no_grad():
        x = torch.from_numpy(image)[None]
        flipped = torch.softmax(model(torch.flip(x, (-1,))).flip(-1), 1)[0].permute(1, 2, 0)
    np.testing.assert_allclose(tta[..., :4], (plain + flipped.numpy()) / 2, atol=1e-5)
    assert tta[..., 4].max() > 0


def test_ensemble_settings_are_checked():
    image = np.zeros((3, 16, 16), dtype="float32")
    kwargs = {"load_window": _loader(image), "shape": (16, 16), "device": "cpu",
              "windows": plan_windows((16, 16), tile_size=16, overlap=0)}
    with pytest.raises(ValueError, match="tta has 2 to 4"):
        predict_probabilities(PositionModel(), ensemble="tta", members=5, **kwargs)
    with pytest.raises(ValueError, match="no dropout layers"):
        predict_probabilities(PositionModel(), ensemble="mc_dropout", members=2, **kwargs)


def test_weights_digest_ignores_the_file_but_not_the_values(tmp_path):
    from ai4land.predict.inference import weights_digest

    a, b = PositionModel(), PositionModel()
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.conv.bias[0] += 1e-6
    assert weights_digest(a) != weights_digest(b)

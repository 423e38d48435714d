"""inference_throughput: megapixels/s of blended sliding-window inference on the CPU.

Ours: :func:`ai4land.predict.inference.predict_probabilities` (folded batch norm, channels_last,
bf16 autocast where the CPU has native bf16, one single-threaded model stream per core
as a predict job runs it; one stream on all cores in ``one_stream_mpix_s``). Reference:
the same U-Net run plainly in
fp32 (NCHW, batch norm kept) over the same windows, blended the same way. Random
weights, inputs held in memory. ``ours`` is the production model (architecture and
predict settings of config/config.yaml) on a 1024 x 1024 region; the demo model
(config/demo.yaml: base 16, depth 3, tile 128) on 600 x 600 is in ``params.demo``.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.bench_predict_overhead import production_settings
from benchmarks.common import best_of, write_result

CHANNELS = 25  # 13 coarse + 2 static + 8 prior + known + direction (the demo cube)
DEMO = ({"base_channels": 16, "depth": 3},
        {"tile_size": 128, "overlap": 32, "batch_size": 8, "device": "cpu"}, (600, 600))


def reference(model, *, image, windows, batch_size: int) -> np.ndarray:
    from ai4land.predict.inference import BandAccumulator, _pad_to_multiple, gaussian_weights

    shape = image.shape[1:]
    # A tile as tall as the region: the band holds the whole region (no streaming).
    accumulator = BandAccumulator(shape, 7, (shape[0], windows[0].width))
    accumulator.tile_weight = gaussian_weights(windows[0].height, windows[0].width)
    size = batch_size
    with torch.inference_mode():
        for start in range(0, len(windows), size):
            group = windows[start:start + size]
            x = torch.from_numpy(np.stack([image[(slice(None), *w.slices)] for w in group]))
            x, h, w = _pad_to_multiple(x, 8)
            probs = torch.softmax(model(x)[..., :h, :w], dim=1).permute(0, 2, 3, 1).numpy()
            for window, tile in zip(group, probs, strict=True):
                accumulator.add(window, tile)
    return accumulator.pop(shape[0])


def throughput(architecture: dict, predict: dict, shape: tuple[int, int]) -> dict:
    """Mpix/s of ours and of the fp32 reference for one model and region."""
    from ai4land.device import autocast_dtype
    from ai4land.models import UNet
    from ai4land.predict.inference import plan_windows, predict_probabilities

    torch.manual_seed(0)
    model = UNet(CHANNELS, 7, **architecture).eval()
    image = np.random.default_rng(0).normal(size=(CHANNELS, *shape)).astype("float32")
    windows = plan_windows(shape, tile_size=predict["tile_size"], overlap=predict["overlap"])

    def load(window, out=None):
        return image[(slice(None), *window.slices)]

    def ours(streams: int = torch.get_num_threads()):
        return predict_probabilities(model, load_window=load, shape=shape, windows=windows,
                                     batch_size=predict["batch_size"], device="cpu",
                                     progress=False, streams=streams)

    def plain():
        return reference(model, image=image, windows=windows, batch_size=predict["batch_size"])

    agree = float((ours().argmax(-1) == plain().argmax(-1)).mean())
    mpix = shape[0] * shape[1] / 1e6
    return {"ours_mpix_s": round(mpix / best_of(ours), 3),
            "one_stream_mpix_s": round(mpix / best_of(lambda: ours(1)), 3),
            "streams": torch.get_num_threads(),
            "fp32_mpix_s": round(mpix / best_of(plain), 3),
            "shape": list(shape), **predict, **architecture, "windows": len(windows),
            "autocast": str(autocast_dtype(torch.device("cpu"))), "argmax_agreement": agree}


def main() -> None:
    torch.set_num_threads(2)
    production = throughput(*production_settings(), (1024, 1024))
    demo = throughput(*DEMO)
    write_result(
        "inference_throughput", metric="mpix_per_s", ours=production["ours_mpix_s"],
        reference=production["fp32_mpix_s"],
        reference_name="same U-Net, fp32 NCHW, batch norm unfolded",
        target=None, meets_target=None, higher_is_better=True,
        params={"channels": CHANNELS, "production": production, "demo": demo, "repeats": 3},
    )


if __name__ == "__main__":
    main()

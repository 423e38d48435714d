"""inference_throughput: megapixels/s of blended sliding-window inference on the CPU.

Ours: :func:`ai4land.inference.predict_probabilities` (folded batch norm, channels_last,
bf16 autocast where the CPU has native bf16). Reference: the same U-Net run plainly in
fp32 (NCHW, batch norm kept) over the same windows, blended the same way. Demo default
architecture (base 16, depth 3), random weights, demo predict settings, one
600 x 600 region with inputs held in memory.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.bench_predict_overhead import ARCHITECTURE, PREDICT
from benchmarks.common import best_of, write_result

SHAPE = (600, 600)
CHANNELS = 25  # 13 coarse + 2 static + 8 prior + known + direction (the demo cube)


def reference(model, *, image, windows) -> np.ndarray:
    from ai4land.inference import BandAccumulator, _pad_to_multiple, gaussian_weights

    # A tile as tall as the region: the band holds the whole region (no streaming).
    accumulator = BandAccumulator(SHAPE, 7, (SHAPE[0], windows[0].width))
    accumulator.tile_weight = gaussian_weights(windows[0].height, windows[0].width)
    size = PREDICT["batch_size"]
    with torch.inference_mode():
        for start in range(0, len(windows), size):
            group = windows[start:start + size]
            x = torch.from_numpy(np.stack([image[(slice(None), *w.slices)] for w in group]))
            x, h, w = _pad_to_multiple(x, 8)
            probs = torch.softmax(model(x)[..., :h, :w], dim=1).permute(0, 2, 3, 1).numpy()
            for window, tile in zip(group, probs, strict=True):
                accumulator.add(window, tile)
    return accumulator.pop(SHAPE[0])


def main() -> None:
    from ai4land.inference import autocast_dtype, plan_windows, predict_probabilities
    from ai4land.models import UNet

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = UNet(CHANNELS, 7, **ARCHITECTURE).eval()
    image = np.random.default_rng(0).normal(size=(CHANNELS, *SHAPE)).astype("float32")
    windows = plan_windows(SHAPE, tile_size=PREDICT["tile_size"], overlap=PREDICT["overlap"])

    def ours():
        return predict_probabilities(model, load_window=lambda w: image[(slice(None), *w.slices)],
                                     shape=SHAPE, windows=windows,
                                     batch_size=PREDICT["batch_size"], device="cpu",
                                     progress=False)

    agree = float((ours().argmax(-1) == reference(model, image=image, windows=windows)
                   .argmax(-1)).mean())
    mpix = SHAPE[0] * SHAPE[1] / 1e6
    ours_s = best_of(ours)
    ref_s = best_of(lambda: reference(model, image=image, windows=windows))
    dtype = autocast_dtype(torch.device("cpu"))
    write_result(
        "inference_throughput", metric="mpix_per_s", ours=mpix / ours_s,
        reference=mpix / ref_s, reference_name="same U-Net, fp32 NCHW, batch norm unfolded",
        target=None, meets_target=None, higher_is_better=True,
        params={"shape": list(SHAPE), "channels": CHANNELS, **PREDICT, **ARCHITECTURE,
                "windows": len(windows), "autocast": str(dtype), "argmax_agreement": agree,
                "repeats": 3},
    )


if __name__ == "__main__":
    main()

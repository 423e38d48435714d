"""Which torch device and precision a run uses: one rule for training, prediction,
evaluation and the emulator.

``resolve_device`` turns a ``device`` setting (``auto``, ``cpu``, ``cuda`` or
``cuda:N``) into a ``torch.device``; ``auto`` takes CUDA when there is one. A bare
``cuda`` means this process's GPU: ``local_rank`` (torchrun's ``LOCAL_RANK``) modulo the
GPUs of the node, so one process per GPU. ``autocast_dtype`` picks the mixed-precision
dtype: bf16 on a GPU that has it (else fp16), bf16 on a CPU only where it runs bf16
natively (emulated bf16 is slower than fp32).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ai4land.errors import ConfigError


def resolve_device(setting: str | torch.device = "auto", *, local_rank: int = 0,
                   key: str = "device") -> torch.device:
    """The device ``setting`` names (a ``torch.device`` is returned as given).

    ConfigError, naming the setting ``key`` (e.g. ``predict.device``), for CUDA where
    there is none or a name torch does not know.
    """
    if isinstance(setting, torch.device):
        return setting
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(setting)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key} {setting!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key} is {setting!r} but no CUDA device is available; "
                              "use 'auto' or 'cpu'")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX-512 BF16 or AMX).

    Asks oneDNN; a torch without that query falls back to the CPU flags. A torch built
    without oneDNN has no native bf16 kernels at all.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``: None (fp32), bf16 or fp16.

    ``amp=None``: automatic (bf16 on a CPU only where native); ``amp=True`` forces bf16
    on any CPU; ``amp=False``: fp32.
    """
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp is True or cpu_supports_bf16()):
        return torch.bfloat16
    return None

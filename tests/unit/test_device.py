"""One device rule for training, prediction, evaluation and the emulator (ai4land.device)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import ai4land.device as device_module
from ai4land.device import autocast_dtype, cpu_supports_bf16, resolve_device
from ai4land.errors import ConfigError
from ai4land.train.loop import resolve_precision


def _gpus(monkeypatch, count: int, *, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_auto_is_the_cpu_without_cuda_and_cuda_is_refused_in_one_line(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^predict.device is 'cuda' but no CUDA device is "
                                          r"available; use 'auto' or 'cpu'$"):
        resolve_device("cuda", key="predict.device")
    with pytest.raises(ConfigError, match="train.device 'tpu' is not a device"):
        resolve_device("tpu", key="train.device")


def test_bare_cuda_is_this_ranks_gpu(monkeypatch):
    _gpus(monkeypatch, 4)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("auto", local_rank=5) == torch.device("cuda", 1)  # 2 nodes' worth
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda", 3)  # named: as given
    given = torch.device("cpu")
    assert resolve_device(given) is given


def test_cpu_bf16_asks_onednn_then_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.ops, "mkldnn", SimpleNamespace(_is_mkldnn_bf16_supported=lambda: True)
    )
    assert cpu_supports_bf16() is True
    monkeypatch.setattr(torch.ops, "mkldnn", SimpleNamespace())  # a torch without the query

    def cpuinfo(flags):
        return lambda _: SimpleNamespace(read_text=lambda: f"flags\t: sse avx2 {flags}\n")

    monkeypatch.setattr(device_module, "Path", cpuinfo("amx_bf16 amx_tile"))
    assert cpu_supports_bf16() is True
    monkeypatch.setattr(device_module, "Path", cpuinfo("avx512f"))
    assert cpu_supports_bf16() is False


@pytest.mark.parametrize("native", [True, False])
def test_training_and_prediction_pick_the_same_cpu_precision(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: native)
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if native else None
    assert autocast_dtype(cpu) is expected
    precision = resolve_precision(cpu, amp=True)
    assert precision.autocast_dtype is expected
    assert precision.channels_last is native and not precision.grad_scaler
    assert resolve_precision(cpu, amp=False).autocast_dtype is None
    assert autocast_dtype(cpu, amp=False) is None
    assert autocast_dtype(cpu, amp=True) is torch.bfloat16  # forced (benchmarks)


def test_gpu_without_bf16_trains_fp16_with_a_grad_scaler(monkeypatch):
    _gpus(monkeypatch, 1, bf16=False)
    gpu = torch.device("cuda", 0)
    assert autocast_dtype(gpu) is torch.float16
    precision = resolve_precision(gpu, amp=True)
    assert precision.autocast_dtype is torch.float16 and precision.grad_scaler
    _gpus(monkeypatch, 1, bf16=True)
    assert resolve_precision(gpu, amp=True).describe() == "bfloat16 autocast + channels_last"

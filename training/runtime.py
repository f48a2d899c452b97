"""Process runtime for training: device, threads, the glibc allocator, seeds and mixed precision."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys

import numpy as np
import torch
from torch import nn

from training.batch import Batch


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def configure_threads() -> int:
    """Cap torch's intra-op threads at the CPUs this process may use (containers often allow fewer
    than the host has, and oversubscribed threads are slower than fewer)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)
    return torch.get_num_threads()


def tune_allocator() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the kernel.

    Every training step allocates and frees the same ~30 MB activation buffers (B·L × hidden);
    with glibc's defaults they are unmapped on free and page-faulted back in on the next step,
    about 10,000 faults per step at B=1024, L=100, costing 10-15% of CPU training throughput.
    Raises the mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB. Affects
    the whole process; a no-op (returning False) where libc is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),
            (m_trim_threshold, 1 << 30),
            (m_top_pad, 64 << 20),
        )
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The mixed-precision context for `precision` (TrainConfig.precision) on `device`.

    auto is bf16 autocast on CUDA and full fp32 on CPU; bf16 autocasts on either device (on CPU
    it is only faster with native bf16 instructions, e.g. AVX512-BF16 or AMX).
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: Batch, device: torch.device) -> Batch:
    """`batch` on `device` (the same dict on CPU), copied without blocking."""
    if device.type == "cpu":
        return batch
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def model_device(model: nn.Module) -> torch.device:
    """The device of `model`'s (first) parameters."""
    return next(model.parameters()).device

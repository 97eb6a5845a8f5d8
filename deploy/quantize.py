"""Symmetric int8 group quantization as llama2.c's v2 files use it: scale = max|w| / 127, q = round(w / scale)."""

import numpy as np


def quantize(values, group_size):
    """fp32 vector -> (int8 values, fp32 scale per group)."""
    groups = np.asarray(values, dtype=np.float32).reshape(-1, group_size)
    scales = np.abs(groups).max(axis=1) / np.float32(127.0)
    safe = np.where(scales == 0, np.float32(1.0), scales)
    q = np.round(groups / safe[:, None]).astype(np.int8)
    return q.ravel(), scales.astype(np.float32)


def dequantize(q, scales, group_size):
    groups = np.asarray(q, dtype=np.int8).reshape(-1, group_size).astype(np.float32)
    return (groups * np.asarray(scales, dtype=np.float32)[:, None]).ravel()

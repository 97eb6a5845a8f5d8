"""Ternary (BitNet b1.58) weights of v3 checkpoints: absmean quantization, 2-bit packing, and the matmul the ports run.

A weight matrix W (rows, cols) becomes trits t in {-1, 0, +1} and one fp32 scale per tensor: scale = mean |W|,
t = clip(round(W / scale), -1, 1), W ~ t * scale. Each row is packed 4 trits to a byte, trit k of the row in bits
2(k % 4) and 2(k % 4) + 1 of byte k / 4 (codes 00 = 0, 01 = +1, 10 = -1; 11 is invalid), the last byte of a row padded
with 00. The activation is quantized per token to int8 (absmax: scale = max |x| / 127, rounded half away from zero),
so a row is an integer sum of +/- activations and one float multiply. docs/ternary.md has the reasons.
"""

import numpy as np

F32 = np.float32
CODE_OF_TRIT = {0: 0b00, 1: 0b01, -1: 0b10}
_TRIT_OF_CODE = np.array([0, 1, -1, 0], np.int8)  # code 3 is refused before it is decoded


def row_bytes(cols):
    return (cols + 3) // 4


def quantize(weights):
    """fp32 matrix -> (int8 trits of the same shape, fp32 absmean scale)."""
    w = np.asarray(weights, F32)
    scale = F32(np.abs(w, dtype=F32).mean(dtype=np.float64))
    if scale == 0:
        return np.zeros(w.shape, np.int8), F32(0.0)
    return np.clip(np.rint(w / scale), -1, 1).astype(np.int8), scale


def pack(trits):
    """(rows, cols) trits -> (rows, row_bytes(cols)) uint8."""
    trits = np.asarray(trits, np.int8)
    rows, cols = trits.shape
    codes = np.zeros((rows, row_bytes(cols) * 4), np.uint8)
    codes[:, :cols] = np.where(trits > 0, 1, np.where(trits < 0, 2, 0))
    codes = codes.reshape(rows, -1, 4)
    return (codes[..., 0] | codes[..., 1] << 2 | codes[..., 2] << 4 | codes[..., 3] << 6).astype(np.uint8)


def invalid_codes(packed):
    """How many 2-bit codes of `packed` are 11 (no trit)."""
    b = np.asarray(packed, np.uint8)
    both = b & (b >> 1) & 0x55
    return int(np.unpackbits(both[..., None], axis=-1).sum())


def unpack(packed, cols):
    """(rows, row_bytes(cols)) uint8 -> (rows, cols) int8 trits; call invalid_codes first on untrusted bytes."""
    b = np.asarray(packed, np.uint8)
    codes = np.stack([(b >> shift) & 3 for shift in (0, 2, 4, 6)], axis=-1).reshape(b.shape[0], -1)
    return _TRIT_OF_CODE[codes[:, :cols]]


def dequantize_layers(trits, scales):
    """(layers, rows, cols) trits and one scale per layer -> fp32 weights."""
    return (trits.astype(F32) * np.asarray(scales, F32)[:, None, None]).astype(F32)


def quantize_activation(x):
    """Per-token absmax int8, as the template's quantize() with one group: (int64 values, fp32 scale)."""
    from deploy.reference import quantize_groups

    q, scales = quantize_groups(x, len(x))
    return q[0], scales[0]


def matvec(trits, scale, x):
    """The ports' ternary matmul: per row an integer sum of +/- int8 activations, then one float multiply by
    (weight scale * activation scale), both rounded to float32 as run.c rounds them."""
    xq, xs = quantize_activation(x)
    whole = trits.astype(np.int64) @ xq.astype(np.int64)
    return whole.astype(F32) * (F32(scale) * F32(xs))

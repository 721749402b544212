"""
quant.py - the weight formats of GGUF files: dequantization, and matrix products that read them as stored.

A GGUF file keeps each weight matrix in one of ggml's encodings. Plain ones store every weight as a float (F32,
F16, BF16). Quantized ones cut each row into blocks of 32 or 256 weights and store, per block, a few float16
scales plus a small integer per weight: w = scale * q (+ an offset, or minus a per-block minimum). Four or five
bits per weight instead of 32 make an 8B model fit in 5 GB, and, since decoding one token reads every weight
once, make it run about six times faster than F32: LLM inference is bound by memory bandwidth.

Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32) and the "K-quants" Q2_K, Q3_K, Q4_K,
Q5_K, Q6_K (super-blocks of 256 weights holding 8 or 16 sub-blocks, each with its own small integer scale). A
"Q4_K_M" file mixes several of these per tensor, so every matrix carries its own type.

How the file is organised: one section per type, each with
  1. a header comment: the block struct with the size of each field in bytes, the dequantization formula in
     one line, the bits per weight, and an assert that the block size agrees with gguf-py;
  2. `dequantize_<type>(blocks)`: the readable NumPy reference, a whole array of blocks at a time;
  3. its Numba twins, which work on one row (the raw bytes of one matrix row):
       `dot_<type>(w, x, xs)`  the dot product of the row with x, dequantizing on the fly (decode: one token)
       `row_<type>(w, out)`    the row dequantized into a float32 buffer (prompt: reused for every token)
then the parallel drivers that run those over all rows, and the public API:

    dequantize(data, qtype)    drop-in for gguf.quants.dequantize (uses the NumPy references)
    QMatrix(data, qtype, shape) a [rows, cols] weight kept in its GGUF encoding (memory-mapped as read)
    matmul(x, w)               x @ W.T for x [cols] or [n, cols], never dequantizing W as a whole (the float or
                               the int8 kernels, as the QMatrix says)
    round_x(x, qtype)          x as the int8 path sees it: rounded like llama.cpp's activations
    get_rows(w, ids)           the embedding lookup: dequantize just those rows
    set_threads(n)             how many threads the Numba kernels use
    quantize(data, qtype)      the way back, float32 -> F32, F16, BF16, Q8_0, Q4_0, Q4_K or Q6_K blocks; stands in
                               for gguf.quants.quantize, which has no K-quants (see "Quantizing" near the end)

Two ways to multiply, chosen per matrix (QMatrix(..., kernels=)):
  "float"  activations stay float32 and the products accumulate in float32: a float64 product to about 1e-6
           relative. The reference, which matches transformers.
  "int8"   llama.cpp's arithmetic: each activation vector is first rounded to 8-bit blocks, then multiplied
           with integer SIMD instructions (AVX2, written as LLVM IR; see "The int8 path" near the end). Several
           times faster, and equal to llama.cpp's own kernels, but the rounding moves the logits by 0.1 to 1.
The tests (tests/test_quant.py) check every reference against gguf-py, every float kernel against its reference,
and the int8 path against ggml's own kernels, on random blocks and on tensors quantized by llama.cpp itself.
"""
import struct

import gguf
import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

QT = gguf.GGMLQuantizationType
QK = 32     # weights per block of the simple types
QK_K = 256  # weights per super-block of the K-quants

# The type codes as plain ints: the Numba kernels branch on them (an IntEnum would be a different Numba type).
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = (int(QT[n]) for n in ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16 = (int(QT[n]) for n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "BF16"))

# ----------------------------------------------------------------------------------------------------------------
# Helpers shared by all types


def fields(blocks, *sizes):
    """Cut raw blocks [n_blocks, type_size] into their fields, given each field's width in bytes:
    fields(blocks, 2, 16) -> [d [n_blocks, 2], qs [n_blocks, 16]]."""
    assert sum(sizes) == blocks.shape[1], (sizes, blocks.shape)
    return np.split(blocks, np.cumsum(sizes)[:-1], axis=1)


def half(b):
    """fp16 field [n_blocks, 2] (bytes, little-endian) -> float32 [n_blocks, 1]."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def nibbles(qs):
    """[..., m] bytes -> [..., 2m]: the m low nibbles, then the m high nibbles (the order of the 32-weight types)."""
    return np.concatenate([qs & 15, qs >> 4], axis=-1)


# How the Numba twins are written, and why (measured on an AVX2 machine; each habit was worth 1.2x to 4x):
# - A dot product sums q * x over a (sub-)block first and multiplies by the block's scale once at the end: the
#   scale is hoisted out of the inner loop, which is left with a load, a convert and a multiply-add per weight.
# - Inner loops read slices taken per block (qs = w[...], xb = x[...]) with a fixed trip count: simple enough
#   for LLVM to turn into SIMD code. Anything heavier (an array view per block, say) goes outside them.
# - Numba does integer arithmetic in int64, and AVX2 has a SIMD int32 -> float conversion but none from int64.
#   So each small integer is narrowed with np.int32(...) before np.float32(...) (1.2-1.4x faster loops).
# - PAIRS: Q8_0, Q4_0 and Q4_1 take two blocks per step. A loop over one 32-weight block is too short to keep
#   the SIMD units busy; two independent blocks in one loop body ran twice as fast (Q5_0, Q5_1: no gain).
# - They accumulate in float32 with fastmath (free to reorder the sums): about 1e-7 relative error per block.


@njit(cache=True)
def fp16_to_f32(h):
    """IEEE half (its 16 bits as an int) -> float32. Numba has no float16 type, so build the float32 bits:
    same sign, exponent re-biased from 15 to 127, mantissa widened from 10 to 23 bits."""
    sign = (h & 0x8000) << 16
    em = h & 0x7FFF                  # exponent and mantissa
    if em >= 0x7C00:                 # exponent all ones: inf or nan, stays all ones
        return np.uint32(sign | 0x7F800000 | ((em & 0x3FF) << 13)).view(np.float32)
    if em >= 0x0400:                 # normal number: shift into place, add 127 - 15 = 112 to the exponent
        return np.uint32(sign | ((em << 13) + (112 << 23))).view(np.float32)
    v = np.float32(em) * np.float32(2.0 ** -24)  # zero or subnormal: mantissa * 2^-24, exact in float32
    return -v if sign else v


@njit(cache=True)
def fp16_at(w, i):
    """The fp16 stored little-endian at bytes w[i], w[i+1], as float32."""
    return fp16_to_f32(np.int64(w[i]) | (np.int64(w[i + 1]) << 8))


@njit(cache=True)
def u32_at(w, i):
    """The uint32 stored little-endian at bytes w[i..i+3], as an int."""
    return np.int64(w[i]) | (np.int64(w[i + 1]) << 8) | (np.int64(w[i + 2]) << 16) | (np.int64(w[i + 3]) << 24)


@njit(cache=True)
def scale_min_k4(s, j):
    """Q4_K / Q5_K: the 6-bit scale and 6-bit min of sub-block j (0..7), packed into 12 bytes s.
    Bytes 0-3 hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; bytes 8-11 hold the low 4 bits of
    scales 4-7 (low nibble) and mins 4-7 (high nibble), whose top 2 bits sit in the spare top bits of bytes 0-7."""
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
    return sc, m


# ----------------------------------------------------------------------------------------------------------------
# F32, F16, BF16: one float per weight (32, 16, 16 bits per weight)
#
#   F16 is IEEE half: 1 sign, 5 exponent, 10 mantissa bits. BF16 ("brain float") is the top half of an F32:
#   1 sign, 8 exponent, 7 mantissa bits, so w = float32 with bits (b << 16).
#   GGUFReader gives F32 as float32 [rows, cols], F16 as float16 [rows, cols], BF16 as raw uint8 [rows, 2*cols].

assert gguf.GGML_QUANT_SIZES[QT.F32] == (1, 4)
assert gguf.GGML_QUANT_SIZES[QT.F16] == (1, 2)
assert gguf.GGML_QUANT_SIZES[QT.BF16] == (1, 2)


def dequantize_f32(blocks):
    return blocks.view(np.float32)                                      # [n, 4] bytes -> [n, 1]


def dequantize_f16(blocks):
    return blocks.view(np.float16).astype(np.float32)                   # [n, 2] bytes -> [n, 1]


def dequantize_bf16(blocks):
    return (blocks.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # [n, 2] bytes -> [n, 1]


# The float types have no per-block offsets: their dot functions ignore xs. F16 goes through fp16_to_f32 one
# weight at a time, a branchy scalar path (about 3 GB/s per thread here); BF16 is a shift, and vectorises.


@njit(fastmath=True, cache=True)
def dot_f32(w, x, xs):
    wf = w.view(np.float32)                                             # [cols]
    acc = np.float32(0.0)
    for i in range(x.size):
        acc += wf[i] * x[i]
    return acc


@njit(fastmath=True, cache=True)
def row_f32(w, out):
    out[:] = w.view(np.float32)


@njit(fastmath=True, cache=True)
def dot_f16(w, x, xs):
    wh = w.view(np.uint16)                                              # [cols]
    acc = np.float32(0.0)
    for i in range(x.size):
        acc += fp16_to_f32(np.int64(wh[i])) * x[i]
    return acc


@njit(fastmath=True, cache=True)
def row_f16(w, out):
    wh = w.view(np.uint16)
    for i in range(out.size):
        out[i] = fp16_to_f32(np.int64(wh[i]))


@njit(fastmath=True, cache=True)
def dot_bf16(w, x, xs):
    wh = w.view(np.uint16)                                              # [cols]
    acc = np.float32(0.0)
    for i in range(x.size):
        acc += np.uint32(np.uint32(wh[i]) << 16).view(np.float32) * x[i]
    return acc


@njit(fastmath=True, cache=True)
def row_bf16(w, out):
    wh = w.view(np.uint16)
    for i in range(out.size):
        out[i] = np.uint32(np.uint32(wh[i]) << 16).view(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Q8_0: 32 weights in 34 bytes = 8.5 bits per weight
#
#   struct block_q8_0 {     bytes
#       fp16  d;            2      scale
#       int8  qs[32];       32     one signed byte per weight
#   };
#   w[i] = d * qs[i]

assert gguf.GGML_QUANT_SIZES[QT.Q8_0] == (QK, 2 + 32)


def dequantize_q8_0(blocks):
    d, qs = fields(blocks, 2, 32)
    return half(d) * qs.view(np.int8).astype(np.float32)               # [n, 1] * [n, 32] -> [n, 32]


@njit(fastmath=True, cache=True)
def dot_q8_0(w, x, xs):
    wi = w.view(np.int8)  # once per row: a view per block would cost more than the block's arithmetic
    nb = x.size // QK
    acc = np.float32(0.0)
    for a in range(0, nb, 2):  # two blocks per step (see PAIRS above); b = a again at an odd end, then unused
        b = min(a + 1, nb - 1)
        qa = wi[34 * a + 2:34 * a + 34]                                 # [32]
        qb = wi[34 * b + 2:34 * b + 34]                                 # [32]
        xa = x[QK * a:QK * a + QK]                                      # [32]
        xb = x[QK * b:QK * b + QK]                                      # [32]
        sa = np.float32(0.0)
        sb = np.float32(0.0)
        for l in range(QK):
            sa += np.float32(qa[l]) * xa[l]
            sb += np.float32(qb[l]) * xb[l]
        acc += fp16_at(w, 34 * a) * sa  # the scale is applied once per block, not per weight
        if b != a:
            acc += fp16_at(w, 34 * b) * sb
    return acc


@njit(fastmath=True, cache=True)
def row_q8_0(w, out):
    wi = w.view(np.int8)
    for b in range(out.size // QK):
        q = wi[34 * b + 2:34 * b + 34]
        d = fp16_at(w, 34 * b)
        for l in range(QK):
            out[QK * b + l] = d * np.float32(q[l])


# ----------------------------------------------------------------------------------------------------------------
# Q4_0: 32 weights in 18 bytes = 4.5 bits per weight
#
#   struct block_q4_0 {     bytes
#       fp16  d;            2      scale
#       uint8 qs[16];       16     nibbles: low nibble of qs[l] is weight l, high nibble weight l+16
#   };
#   w[i] = d * (q[i] - 8)             q in 0..15

assert gguf.GGML_QUANT_SIZES[QT.Q4_0] == (QK, 2 + 16)


def dequantize_q4_0(blocks):
    d, qs = fields(blocks, 2, 16)
    q = nibbles(qs).astype(np.float32)                                  # [n, 16] -> [n, 32]
    return half(d) * (q - 8)                                            # [n, 32]


@njit(fastmath=True, cache=True)
def dot_q4_0(w, x, xs):
    nb = x.size // QK
    acc = np.float32(0.0)
    for a in range(0, nb, 2):  # two blocks per step, as in dot_q8_0
        b = min(a + 1, nb - 1)
        qa = w[18 * a + 2:18 * a + 18]                                  # [16]
        qb = w[18 * b + 2:18 * b + 18]                                  # [16]
        xa = x[QK * a:QK * a + QK]                                      # [32]
        xb = x[QK * b:QK * b + QK]                                      # [32]
        sa = np.float32(0.0)
        sb = np.float32(0.0)
        for l in range(16):
            sa += np.float32(np.int32(qa[l] & 15) - 8) * xa[l] + np.float32(np.int32(qa[l] >> 4) - 8) * xa[l + 16]
            sb += np.float32(np.int32(qb[l] & 15) - 8) * xb[l] + np.float32(np.int32(qb[l] >> 4) - 8) * xb[l + 16]
        acc += fp16_at(w, 18 * a) * sa
        if b != a:
            acc += fp16_at(w, 18 * b) * sb
    return acc


@njit(fastmath=True, cache=True)
def row_q4_0(w, out):
    for b in range(out.size // QK):
        qs = w[18 * b + 2:18 * b + 18]
        d = fp16_at(w, 18 * b)
        for l in range(16):
            out[QK * b + l] = d * np.float32(np.int32(qs[l] & 15) - 8)
            out[QK * b + l + 16] = d * np.float32(np.int32(qs[l] >> 4) - 8)


# ----------------------------------------------------------------------------------------------------------------
# Q4_1: 32 weights in 20 bytes = 5 bits per weight
#
#   struct block_q4_1 {     bytes
#       fp16  d;            2      scale
#       fp16  m;            2      minimum (offset)
#       uint8 qs[16];       16     nibbles, in Q4_0's order
#   };
#   w[i] = d * q[i] + m               q in 0..15
#
# In a dot product the offset needs only the sum of x over the block: sum(w x) = d sum(q x) + m sum(x). Those
# sums are the same for every row, so the driver computes them once per call (xs, one per 16 weights).

assert gguf.GGML_QUANT_SIZES[QT.Q4_1] == (QK, 2 + 2 + 16)


def dequantize_q4_1(blocks):
    d, m, qs = fields(blocks, 2, 2, 16)
    q = nibbles(qs).astype(np.float32)                                  # [n, 32]
    return half(d) * q + half(m)                                        # [n, 32]


@njit(fastmath=True, cache=True)
def dot_q4_1(w, x, xs):
    nb = x.size // QK
    acc = np.float32(0.0)
    for a in range(0, nb, 2):  # two blocks per step, as in dot_q8_0
        b = min(a + 1, nb - 1)
        qa = w[20 * a + 4:20 * a + 20]                                  # [16]
        qb = w[20 * b + 4:20 * b + 20]                                  # [16]
        xa = x[QK * a:QK * a + QK]                                      # [32]
        xb = x[QK * b:QK * b + QK]                                      # [32]
        sa = np.float32(0.0)
        sb = np.float32(0.0)
        for l in range(16):
            sa += np.float32(np.int32(qa[l] & 15)) * xa[l] + np.float32(np.int32(qa[l] >> 4)) * xa[l + 16]
            sb += np.float32(np.int32(qb[l] & 15)) * xb[l] + np.float32(np.int32(qb[l] >> 4)) * xb[l + 16]
        acc += fp16_at(w, 20 * a) * sa + fp16_at(w, 20 * a + 2) * (xs[2 * a] + xs[2 * a + 1])
        if b != a:
            acc += fp16_at(w, 20 * b) * sb + fp16_at(w, 20 * b + 2) * (xs[2 * b] + xs[2 * b + 1])
    return acc


@njit(fastmath=True, cache=True)
def row_q4_1(w, out):
    for b in range(out.size // QK):
        qs = w[20 * b + 4:20 * b + 20]
        d, m = fp16_at(w, 20 * b), fp16_at(w, 20 * b + 2)
        for l in range(16):
            out[QK * b + l] = d * np.float32(np.int32(qs[l] & 15)) + m
            out[QK * b + l + 16] = d * np.float32(np.int32(qs[l] >> 4)) + m


# ----------------------------------------------------------------------------------------------------------------
# Q5_0: 32 weights in 22 bytes = 5.5 bits per weight
#
#   struct block_q5_0 {     bytes
#       fp16  d;            2      scale
#       uint8 qh[4];        4      the 5th bit of each weight: bit i of this little-endian uint32 is weight i's
#       uint8 qs[16];       16     the low 4 bits, in Q4_0's order
#   };
#   w[i] = d * (q[i] - 16)            q in 0..31

assert gguf.GGML_QUANT_SIZES[QT.Q5_0] == (QK, 2 + 4 + 16)


def dequantize_q5_0(blocks):
    d, qh, qs = fields(blocks, 2, 4, 16)
    high = np.unpackbits(qh, axis=1, bitorder="little")                 # [n, 4] -> [n, 32] bits
    q = (nibbles(qs) | (high << 4)).astype(np.float32)                  # [n, 32]
    return half(d) * (q - 16)                                           # [n, 32]


@njit(fastmath=True, cache=True)
def dot_q5_0(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK):  # one block per step: taking two (see PAIRS) did not help here
        qs = w[22 * b + 6:22 * b + 22]                                  # [16]
        qh = u32_at(w, 22 * b + 2)                                      # the 32 fifth bits
        xb = x[QK * b:QK * b + QK]                                      # [32]
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        for l in range(16):
            q0 = np.int32(qs[l] & 15) | np.int32(((qh >> l) & 1) << 4)
            q1 = np.int32(qs[l] >> 4) | np.int32(((qh >> (l + 16)) & 1) << 4)
            s0 += np.float32(q0 - 16) * xb[l]
            s1 += np.float32(q1 - 16) * xb[l + 16]
        acc += fp16_at(w, 22 * b) * (s0 + s1)
    return acc


@njit(fastmath=True, cache=True)
def row_q5_0(w, out):
    for b in range(out.size // QK):
        blk = w[22 * b:22 * b + 22]
        d = fp16_at(blk, 0)
        qh = u32_at(blk, 2)
        for l in range(16):
            q = blk[6 + l]
            out[QK * b + l] = d * np.float32(np.int32((q & 15) | (((qh >> l) & 1) << 4)) - 16)
            out[QK * b + l + 16] = d * np.float32(np.int32((q >> 4) | (((qh >> (l + 16)) & 1) << 4)) - 16)


# ----------------------------------------------------------------------------------------------------------------
# Q5_1: 32 weights in 24 bytes = 6 bits per weight
#
#   struct block_q5_1 {     bytes
#       fp16  d;            2      scale
#       fp16  m;            2      minimum (offset)
#       uint8 qh[4];        4      5th bits, as in Q5_0
#       uint8 qs[16];       16     low 4 bits, as in Q4_0
#   };
#   w[i] = d * q[i] + m               q in 0..31

assert gguf.GGML_QUANT_SIZES[QT.Q5_1] == (QK, 2 + 2 + 4 + 16)


def dequantize_q5_1(blocks):
    d, m, qh, qs = fields(blocks, 2, 2, 4, 16)
    high = np.unpackbits(qh, axis=1, bitorder="little")                 # [n, 32]
    q = (nibbles(qs) | (high << 4)).astype(np.float32)                  # [n, 32]
    return half(d) * q + half(m)                                        # [n, 32]


@njit(fastmath=True, cache=True)
def dot_q5_1(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK):
        qs = w[24 * b + 8:24 * b + 24]                                  # [16]
        qh = u32_at(w, 24 * b + 4)                                      # the 32 fifth bits
        xb = x[QK * b:QK * b + QK]                                      # [32]
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        for l in range(16):
            q0 = np.int32(qs[l] & 15) | np.int32(((qh >> l) & 1) << 4)
            q1 = np.int32(qs[l] >> 4) | np.int32(((qh >> (l + 16)) & 1) << 4)
            s0 += np.float32(q0) * xb[l]
            s1 += np.float32(q1) * xb[l + 16]
        acc += fp16_at(w, 24 * b) * (s0 + s1) + fp16_at(w, 24 * b + 2) * (xs[2 * b] + xs[2 * b + 1])
    return acc


@njit(fastmath=True, cache=True)
def row_q5_1(w, out):
    for b in range(out.size // QK):
        blk = w[24 * b:24 * b + 24]
        d, m = fp16_at(blk, 0), fp16_at(blk, 2)
        qh = u32_at(blk, 4)
        for l in range(16):
            q = blk[8 + l]
            out[QK * b + l] = d * np.float32(np.int32((q & 15) | (((qh >> l) & 1) << 4))) + m
            out[QK * b + l + 16] = d * np.float32(np.int32((q >> 4) | (((qh >> (l + 16)) & 1) << 4))) + m


# ----------------------------------------------------------------------------------------------------------------
# Q2_K: 256 weights in 84 bytes = 2.625 bits per weight; 16 sub-blocks of 16 weights
#
#   struct block_q2_K {     bytes
#       uint8 scales[16];   16     per sub-block: low nibble a 4-bit scale, high nibble a 4-bit min
#       uint8 qs[64];       64     2-bit weights: two halves of 32 bytes; in half h, bits 2j..2j+1 of byte l
#                                  are weight 128h + 32j + l
#       fp16  d;            2      super-block scale of the scales
#       fp16  dmin;         2      super-block scale of the mins
#   };
#   w[i] = d * sc[s] * q[i] - dmin * m[s]    q in 0..3, s = i // 16 the sub-block

assert gguf.GGML_QUANT_SIZES[QT.Q2_K] == (QK_K, 16 + 64 + 2 + 2)


def dequantize_q2_k(blocks):
    n = blocks.shape[0]
    scales, qs, d, dmin = fields(blocks, 16, 64, 2, 2)
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    q = (qs.reshape(n, 2, 1, 32) >> shifts) & 3                         # [n, 2 halves, 4 shifts, 32]
    q = q.reshape(n, 16, 16).astype(np.float32)                         # [n, 16 sub-blocks, 16]
    sc = (half(d) * (scales & 15)).reshape(n, 16, 1)                    # [n, 16, 1]
    m = (half(dmin) * (scales >> 4)).reshape(n, 16, 1)                  # [n, 16, 1]
    return (sc * q - m).reshape(n, QK_K)                                # [n, 256]


@njit(fastmath=True, cache=True)
def dot_q2_k(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK_K):
        blk = w[84 * b:84 * b + 84]
        xb = x[QK_K * b:QK_K * b + QK_K]
        sq = np.float32(0.0)   # sum over sub-blocks of sc * sum(q x)
        sm = np.float32(0.0)   # sum over sub-blocks of m * sum(x)
        for h in range(2):
            qs = blk[16 + 32 * h:16 + 32 * h + 32]
            for j in range(4):
                i0 = 128 * h + 32 * j           # first weight of these 32: sub-blocks i0//16 and i0//16 + 1
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                for l in range(16):
                    s0 += np.float32(np.int32((qs[l] >> (2 * j)) & 3)) * xb[i0 + l]
                    s1 += np.float32(np.int32((qs[l + 16] >> (2 * j)) & 3)) * xb[i0 + 16 + l]
                k = i0 // 16
                sq += np.float32(blk[k] & 15) * s0 + np.float32(blk[k + 1] & 15) * s1
                sm += np.float32(blk[k] >> 4) * xs[16 * b + k] + np.float32(blk[k + 1] >> 4) * xs[16 * b + k + 1]
        acc += fp16_at(blk, 80) * sq - fp16_at(blk, 82) * sm
    return acc


@njit(fastmath=True, cache=True)
def row_q2_k(w, out):
    for b in range(out.size // QK_K):
        blk = w[84 * b:84 * b + 84]
        ob = out[QK_K * b:QK_K * b + QK_K]
        d, dmin = fp16_at(blk, 80), fp16_at(blk, 82)
        for h in range(2):
            qs = blk[16 + 32 * h:16 + 32 * h + 32]
            for j in range(4):
                for half16 in range(2):
                    i0 = 128 * h + 32 * j + 16 * half16
                    sc = d * np.float32(blk[i0 // 16] & 15)
                    m = dmin * np.float32(blk[i0 // 16] >> 4)
                    for l in range(16):
                        ob[i0 + l] = sc * np.float32(np.int32((qs[16 * half16 + l] >> (2 * j)) & 3)) - m


# ----------------------------------------------------------------------------------------------------------------
# Q3_K: 256 weights in 110 bytes = 3.4375 bits per weight; 16 sub-blocks of 16 weights
#
#   struct block_q3_K {     bytes
#       uint8 hmask[32];    32     3rd bit of each weight: bit k of byte l is weight 32k + l
#       uint8 qs[64];       64     low 2 bits, laid out as in Q2_K
#       uint8 scales[12];   12     16 6-bit scales: low 4 bits in bytes 0-7 (sub-blocks 0-7 in the low
#                                  nibbles, 8-15 in the high), top 2 bits in bytes 8-11 (sub-block s at
#                                  bits 2*(s//4) of byte 8 + s%4)
#       fp16  d;            2      super-block scale
#   };
#   w[i] = d * (sc[s] - 32) * (q[i] - 4 * (1 - hbit[i]))    q in 0..3, so weights in -4..3 (a set bit means
#                                                           "no -4": the mask stores the complement)

assert gguf.GGML_QUANT_SIZES[QT.Q3_K] == (QK_K, 32 + 64 + 12 + 2)


def dequantize_q3_k(blocks):
    n = blocks.shape[0]
    hmask, qs, scales, d = fields(blocks, 32, 64, 12, 2)
    low = nibbles(scales[:, :8])                                        # [n, 16]: scale bits 0-3
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)
    high = (scales[:, 8:].reshape(n, 1, 4) >> shifts) & 3               # [n, 4 shifts, 4 bytes] scale bits 4-5
    sc = (low | (high.reshape(n, 16) << 4)).astype(np.float32) - 32     # [n, 16] in -32..31
    q = (qs.reshape(n, 2, 1, 32) >> shifts.reshape(1, 1, 4, 1)) & 3     # [n, 2, 4, 32] low 2 bits
    bits = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    hbit = (hmask.reshape(n, 1, 32) >> bits) & 1                        # [n, 8, 32] third bit
    q = q.reshape(n, QK_K).astype(np.int8) - 4 * (1 - hbit.reshape(n, QK_K).astype(np.int8))  # [n, 256]
    dl = (half(d) * sc).reshape(n, 16, 1)                               # [n, 16, 1]
    return (dl * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)  # [n, 256]


@njit(cache=True)
def scale_q3_k(s, k):
    """Q3_K: the signed scale of sub-block k (0..15) from the 12 packed bytes s."""
    low = (s[k & 7] >> (4 * (k >> 3))) & 15
    high = (s[8 + (k & 3)] >> (2 * (k >> 2))) & 3
    return (low | (high << 4)) - 32


@njit(fastmath=True, cache=True)
def dot_q3_k(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK_K):
        blk = w[110 * b:110 * b + 110]
        xb = x[QK_K * b:QK_K * b + QK_K]
        hmask = blk[0:32]
        scales = blk[96:108]
        sb = np.float32(0.0)
        for h in range(2):
            qs = blk[32 + 32 * h:32 + 32 * h + 32]
            for j in range(4):
                i0 = 128 * h + 32 * j       # weights i0..i0+31: sub-blocks i0//16, i0//16 + 1; hmask bit i0//32
                bit = 4 * h + j
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                for l in range(16):
                    q0 = ((qs[l] >> (2 * j)) & 3) - 4 + 4 * ((hmask[l] >> bit) & 1)
                    q1 = ((qs[l + 16] >> (2 * j)) & 3) - 4 + 4 * ((hmask[l + 16] >> bit) & 1)
                    s0 += np.float32(np.int32(q0)) * xb[i0 + l]
                    s1 += np.float32(np.int32(q1)) * xb[i0 + 16 + l]
                k = i0 // 16
                sb += np.float32(scale_q3_k(scales, k)) * s0 + np.float32(scale_q3_k(scales, k + 1)) * s1
        acc += fp16_at(blk, 108) * sb
    return acc


@njit(fastmath=True, cache=True)
def row_q3_k(w, out):
    for b in range(out.size // QK_K):
        blk = w[110 * b:110 * b + 110]
        ob = out[QK_K * b:QK_K * b + QK_K]
        hmask = blk[0:32]
        d = fp16_at(blk, 108)
        for h in range(2):
            qs = blk[32 + 32 * h:32 + 32 * h + 32]
            for j in range(4):
                bit = 4 * h + j
                for half16 in range(2):
                    i0 = 128 * h + 32 * j + 16 * half16
                    dl = d * np.float32(scale_q3_k(blk[96:108], i0 // 16))
                    for l in range(16 * half16, 16 * half16 + 16):
                        q = ((qs[l] >> (2 * j)) & 3) - 4 + 4 * ((hmask[l] >> bit) & 1)
                        ob[128 * h + 32 * j + l] = dl * np.float32(np.int32(q))


# ----------------------------------------------------------------------------------------------------------------
# Q4_K: 256 weights in 144 bytes = 4.5 bits per weight; 8 sub-blocks of 32 weights
#
#   struct block_q4_K {     bytes
#       fp16  d;            2      super-block scale of the scales
#       fp16  dmin;         2      super-block scale of the mins
#       uint8 scales[12];   12     8 6-bit scales and 8 6-bit mins, packed (see scale_min_k4)
#       uint8 qs[128];      128    nibbles: 4 groups of 32 bytes; group g holds sub-block 2g in its low
#                                  nibbles and sub-block 2g+1 in its high nibbles
#   };
#   w[i] = d * sc[s] * q[i] - dmin * m[s]    q in 0..15, s = i // 32 the sub-block

assert gguf.GGML_QUANT_SIZES[QT.Q4_K] == (QK_K, 2 + 2 + 12 + 128)


def scale_min_k4_np(scales):
    """The NumPy twin of scale_min_k4: packed [n, 12] -> scales [n, 8], mins [n, 8]."""
    a, b, c = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]          # [n, 4] each
    sc = np.concatenate([a & 63, (c & 15) | ((a >> 6) << 4)], axis=1)   # [n, 8]
    m = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)    # [n, 8]
    return sc, m


def dequantize_q4_k(blocks):
    n = blocks.shape[0]
    d, dmin, scales, qs = fields(blocks, 2, 2, 12, 128)
    sc, m = scale_min_k4_np(scales)                                     # [n, 8], [n, 8]
    qs = qs.reshape(n, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=2)                      # [n, 4 groups, 2 nibbles, 32]
    q = q.reshape(n, 8, 32).astype(np.float32)                          # [n, 8 sub-blocks, 32]
    dl = (half(d) * sc).reshape(n, 8, 1)                                # [n, 8, 1]
    ml = (half(dmin) * m).reshape(n, 8, 1)                              # [n, 8, 1]
    return (dl * q - ml).reshape(n, QK_K)                               # [n, 256]


@njit(fastmath=True, cache=True)
def dot_q4_k(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK_K):
        blk = w[144 * b:144 * b + 144]
        xb = x[QK_K * b:QK_K * b + QK_K]
        scales = blk[4:16]
        sq = np.float32(0.0)   # sum over sub-blocks of sc * sum(q x)
        sm = np.float32(0.0)   # sum over sub-blocks of m * sum(x)
        for g in range(4):
            qs = blk[16 + 32 * g:16 + 32 * g + 32]
            x0 = xb[64 * g:64 * g + 32]         # sub-block 2g: the low nibbles
            x1 = xb[64 * g + 32:64 * g + 64]    # sub-block 2g+1: the high nibbles
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            for l in range(32):
                s0 += np.float32(np.int32(qs[l] & 15)) * x0[l]
                s1 += np.float32(np.int32(qs[l] >> 4)) * x1[l]
            sc0, m0 = scale_min_k4(scales, 2 * g)
            sc1, m1 = scale_min_k4(scales, 2 * g + 1)
            sq += np.float32(sc0) * s0 + np.float32(sc1) * s1
            k = 16 * b + 4 * g                  # xs index of this group's first 16 weights
            sm += np.float32(m0) * (xs[k] + xs[k + 1]) + np.float32(m1) * (xs[k + 2] + xs[k + 3])
        acc += fp16_at(blk, 0) * sq - fp16_at(blk, 2) * sm
    return acc


@njit(fastmath=True, cache=True)
def row_q4_k(w, out):
    for b in range(out.size // QK_K):
        blk = w[144 * b:144 * b + 144]
        ob = out[QK_K * b:QK_K * b + QK_K]
        d, dmin = fp16_at(blk, 0), fp16_at(blk, 2)
        for j in range(8):
            sc, m = scale_min_k4(blk[4:16], j)
            dl = d * np.float32(sc)
            ml = dmin * np.float32(m)
            qs = blk[16 + 32 * (j // 2):16 + 32 * (j // 2) + 32]
            shift = 4 * (j % 2)
            for l in range(32):
                ob[32 * j + l] = dl * np.float32(np.int32((qs[l] >> shift) & 15)) - ml


# ----------------------------------------------------------------------------------------------------------------
# Q5_K: 256 weights in 176 bytes = 5.5 bits per weight; 8 sub-blocks of 32 weights
#
#   struct block_q5_K {     bytes
#       fp16  d;            2      super-block scale of the scales
#       fp16  dmin;         2      super-block scale of the mins
#       uint8 scales[12];   12     as in Q4_K
#       uint8 qh[32];       32     5th bit of each weight: bit s of byte l is weight 32s + l
#       uint8 qs[128];      128    low 4 bits, as in Q4_K
#   };
#   w[i] = d * sc[s] * q[i] - dmin * m[s]    q in 0..31, s = i // 32

assert gguf.GGML_QUANT_SIZES[QT.Q5_K] == (QK_K, 2 + 2 + 12 + 32 + 128)


def dequantize_q5_k(blocks):
    n = blocks.shape[0]
    d, dmin, scales, qh, qs = fields(blocks, 2, 2, 12, 32, 128)
    sc, m = scale_min_k4_np(scales)                                     # [n, 8], [n, 8]
    qs = qs.reshape(n, 4, 1, 32)
    low = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(n, 8, 32)  # [n, 8 sub-blocks, 32]
    bits = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    high = (qh.reshape(n, 1, 32) >> bits) & 1                           # [n, 8, 32]
    q = (low | (high << 4)).astype(np.float32)                          # [n, 8, 32]
    dl = (half(d) * sc).reshape(n, 8, 1)                                # [n, 8, 1]
    ml = (half(dmin) * m).reshape(n, 8, 1)                              # [n, 8, 1]
    return (dl * q - ml).reshape(n, QK_K)                               # [n, 256]


@njit(fastmath=True, cache=True)
def dot_q5_k(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK_K):
        blk = w[176 * b:176 * b + 176]
        xb = x[QK_K * b:QK_K * b + QK_K]
        scales = blk[4:16]
        qh = blk[16:48]
        sq = np.float32(0.0)
        sm = np.float32(0.0)
        for g in range(4):
            qs = blk[48 + 32 * g:48 + 32 * g + 32]
            x0 = xb[64 * g:64 * g + 32]         # sub-block 2g: low nibbles, qh bit 2g
            x1 = xb[64 * g + 32:64 * g + 64]    # sub-block 2g+1: high nibbles, qh bit 2g+1
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            for l in range(32):
                q0 = np.int32(qs[l] & 15) | (np.int32((qh[l] >> (2 * g)) & 1) << 4)
                q1 = np.int32(qs[l] >> 4) | (np.int32((qh[l] >> (2 * g + 1)) & 1) << 4)
                s0 += np.float32(np.int32(q0)) * x0[l]
                s1 += np.float32(np.int32(q1)) * x1[l]
            sc0, m0 = scale_min_k4(scales, 2 * g)
            sc1, m1 = scale_min_k4(scales, 2 * g + 1)
            sq += np.float32(sc0) * s0 + np.float32(sc1) * s1
            k = 16 * b + 4 * g
            sm += np.float32(m0) * (xs[k] + xs[k + 1]) + np.float32(m1) * (xs[k + 2] + xs[k + 3])
        acc += fp16_at(blk, 0) * sq - fp16_at(blk, 2) * sm
    return acc


@njit(fastmath=True, cache=True)
def row_q5_k(w, out):
    for b in range(out.size // QK_K):
        blk = w[176 * b:176 * b + 176]
        ob = out[QK_K * b:QK_K * b + QK_K]
        d, dmin = fp16_at(blk, 0), fp16_at(blk, 2)
        qh = blk[16:48]
        for j in range(8):
            sc, m = scale_min_k4(blk[4:16], j)
            dl = d * np.float32(sc)
            ml = dmin * np.float32(m)
            qs = blk[48 + 32 * (j // 2):48 + 32 * (j // 2) + 32]
            shift = 4 * (j % 2)
            for l in range(32):
                q = ((qs[l] >> shift) & 15) | (((qh[l] >> j) & 1) << 4)
                ob[32 * j + l] = dl * np.float32(np.int32(q)) - ml


# ----------------------------------------------------------------------------------------------------------------
# Q6_K: 256 weights in 210 bytes = 6.5625 bits per weight; 16 sub-blocks of 16 weights
#
#   struct block_q6_K {     bytes
#       uint8 ql[128];      128    low 4 bits: two halves of 64 bytes; in half h, the low nibble of byte l is
#                                  weight 128h + l and the high nibble weight 128h + 64 + l
#       uint8 qh[64];       64     top 2 bits: two halves of 32 bytes; in half h, bits 2k..2k+1 of byte l
#                                  are weight 128h + 32k + l
#       int8  scales[16];   16     signed 8-bit scale per sub-block
#       fp16  d;            2      super-block scale (at the END of this struct)
#   };
#   w[i] = d * scales[s] * (q[i] - 32)       q in 0..63, s = i // 16

assert gguf.GGML_QUANT_SIZES[QT.Q6_K] == (QK_K, 128 + 64 + 16 + 2)


def dequantize_q6_k(blocks):
    n = blocks.shape[0]
    ql, qh, scales, d = fields(blocks, 128, 64, 16, 2)
    low = nibbles(ql.reshape(n, 2, 64))                                 # [n, 2 halves, 128]
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    high = (qh.reshape(n, 2, 1, 32) >> shifts) & 3                      # [n, 2 halves, 4, 32]
    q = (low | (high.reshape(n, 2, 128) << 4)).astype(np.float32) - 32  # [n, 2, 128] in -32..31
    dl = (half(d) * scales.view(np.int8)).reshape(n, 16, 1)             # [n, 16, 1]
    return (dl * q.reshape(n, 16, 16)).reshape(n, QK_K)                 # [n, 256]


@njit(fastmath=True, cache=True)
def dot_q6_k(w, x, xs):
    acc = np.float32(0.0)
    for b in range(x.size // QK_K):
        blk = w[210 * b:210 * b + 210]
        scales = blk[192:208].view(np.int8)
        sb = np.float32(0.0)
        for h in range(2):
            ql = blk[64 * h:64 * h + 64]
            qh = blk[128 + 32 * h:128 + 32 * h + 32]
            xh = x[QK_K * b + 128 * h:QK_K * b + 128 * h + 128]
            for k in range(4):  # weights 32k..32k+31 of this half: ql bytes 32*(k%2)+l, nibble k//2, qh bits 2k
                lo = ql[32 * (k % 2):32 * (k % 2) + 32]
                shift = 4 * (k // 2)
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                for l in range(16):
                    q0 = ((lo[l] >> shift) & 15) | (((qh[l] >> (2 * k)) & 3) << 4)
                    q1 = ((lo[l + 16] >> shift) & 15) | (((qh[l + 16] >> (2 * k)) & 3) << 4)
                    s0 += np.float32(np.int32(q0) - 32) * xh[32 * k + l]
                    s1 += np.float32(np.int32(q1) - 32) * xh[32 * k + 16 + l]
                sb += np.float32(scales[8 * h + 2 * k]) * s0 + np.float32(scales[8 * h + 2 * k + 1]) * s1
        acc += fp16_at(blk, 208) * sb
    return acc


@njit(fastmath=True, cache=True)
def row_q6_k(w, out):
    for b in range(out.size // QK_K):
        blk = w[210 * b:210 * b + 210]
        scales = blk[192:208].view(np.int8)
        d = fp16_at(blk, 208)
        for h in range(2):
            ql = blk[64 * h:64 * h + 64]
            qh = blk[128 + 32 * h:128 + 32 * h + 32]
            oh = out[QK_K * b + 128 * h:QK_K * b + 128 * h + 128]
            for k in range(4):
                lo = ql[32 * (k % 2):32 * (k % 2) + 32]
                shift = 4 * (k // 2)
                for half16 in range(2):
                    dl = d * np.float32(scales[8 * h + 2 * k + half16])
                    for l in range(16 * half16, 16 * half16 + 16):
                        q = ((lo[l] >> shift) & 15) | (((qh[l] >> (2 * k)) & 3) << 4)
                        oh[32 * k + l] = dl * np.float32(np.int32(q) - 32)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch and the parallel drivers
#
# The drivers are written once for all types and branch on the type code per row (the branch costs nothing
# next to a row's work). Passing the row function itself as an argument would read better, but Numba cannot
# cache a function compiled for a function-typed argument, so it would recompile on every run.

REFERENCE = {  # qtype -> NumPy reference: raw blocks [n_blocks, type_size] uint8 -> [n_blocks, block_size] f32
    QT.F32: dequantize_f32, QT.F16: dequantize_f16, QT.BF16: dequantize_bf16,
    QT.Q8_0: dequantize_q8_0, QT.Q4_0: dequantize_q4_0, QT.Q4_1: dequantize_q4_1,
    QT.Q5_0: dequantize_q5_0, QT.Q5_1: dequantize_q5_1,
    QT.Q2_K: dequantize_q2_k, QT.Q3_K: dequantize_q3_k, QT.Q4_K: dequantize_q4_k,
    QT.Q5_K: dequantize_q5_k, QT.Q6_K: dequantize_q6_k,
}
SUPPORTED = frozenset(REFERENCE)


@njit(fastmath=True, cache=True)
def dot_row(kind, w, x, xs):
    """One matrix row (its raw bytes w) dotted with x; xs[k] = sum(x[16k:16k+16])."""
    # the types of a Q4_K_M file first; the order hardly matters, the branch is taken once per row
    if kind == Q4_K:
        return dot_q4_k(w, x, xs)
    elif kind == Q6_K:
        return dot_q6_k(w, x, xs)
    elif kind == Q4_0:
        return dot_q4_0(w, x, xs)
    elif kind == Q8_0:
        return dot_q8_0(w, x, xs)
    elif kind == Q5_K:
        return dot_q5_k(w, x, xs)
    elif kind == Q3_K:
        return dot_q3_k(w, x, xs)
    elif kind == Q2_K:
        return dot_q2_k(w, x, xs)
    elif kind == Q4_1:
        return dot_q4_1(w, x, xs)
    elif kind == Q5_0:
        return dot_q5_0(w, x, xs)
    elif kind == Q5_1:
        return dot_q5_1(w, x, xs)
    elif kind == F32:
        return dot_f32(w, x, xs)
    elif kind == F16:
        return dot_f16(w, x, xs)
    elif kind == BF16:
        return dot_bf16(w, x, xs)
    return np.float32(np.nan)  # unreachable: QMatrix only accepts SUPPORTED types


@njit(fastmath=True, cache=True)
def deq_row(kind, w, out):
    """One matrix row (its raw bytes w) dequantized into out [cols]."""
    if kind == Q4_K:
        row_q4_k(w, out)
    elif kind == Q6_K:
        row_q6_k(w, out)
    elif kind == Q4_0:
        row_q4_0(w, out)
    elif kind == Q8_0:
        row_q8_0(w, out)
    elif kind == Q5_K:
        row_q5_k(w, out)
    elif kind == Q3_K:
        row_q3_k(w, out)
    elif kind == Q2_K:
        row_q2_k(w, out)
    elif kind == Q4_1:
        row_q4_1(w, out)
    elif kind == Q5_0:
        row_q5_0(w, out)
    elif kind == Q5_1:
        row_q5_1(w, out)
    elif kind == F32:
        row_f32(w, out)
    elif kind == F16:
        row_f16(w, out)
    elif kind == BF16:
        row_bf16(w, out)


@njit(parallel=True, fastmath=True, cache=True)
def matvec_kernel(kind, w, x, xs, out):
    """out[r] = W[r] . x for every row r: w [rows, bytes_per_row] raw, x [cols], out [rows]; xs [cols // 16]
    the sums of x over each 16 weights, for the types with a min or offset per block (see sums_16)."""
    for r in prange(w.shape[0]):
        out[r] = dot_row(kind, w[r], x, xs)


@njit(cache=True)
def sums_16(x):
    """x [cols] -> [cols // 16], the sums of x over each 16 weights: the same for every row, so computed once."""
    xs = np.empty(x.size // 16, np.float32)
    for k in range(xs.size):
        xs[k] = x[16 * k:16 * k + 16].sum()
    return xs


TILE = 4  # rows dequantized together in the batched kernel, which is written out for exactly 4: each x value
          # loaded is used 4 times


@njit(parallel=True, fastmath=True, cache=True)
def matmul_kernel(kind, w, x, out):
    """out[t, r] = W[r] . x[t]: w [rows, bytes_per_row] raw, x [n, cols], out [n, rows].
    Each thread takes TILE rows at a time, dequantizes them once into a small buffer, then runs all n tokens
    through them: a row's bytes are decoded once per call, not once per token."""
    rows = w.shape[0]
    n, cols = x.shape
    for t in prange((rows + TILE - 1) // TILE):
        r0 = TILE * t
        nr = min(TILE, rows - r0)
        buf = np.zeros((TILE, cols), np.float32)  # rows past the end of W stay zero and are not stored
        for i in range(nr):
            deq_row(kind, w[r0 + i], buf[i])
        b0, b1, b2, b3 = buf[0], buf[1], buf[2], buf[3]
        for k in range(0, n, 2):  # two tokens per step: each weight loaded is used twice, each x value 4 times
            xk, xl = x[k], x[min(k + 1, n - 1)]  # at an odd end the last token goes twice, stored once
            a0 = a1 = a2 = a3 = np.float32(0.0)
            c0 = c1 = c2 = c3 = np.float32(0.0)
            for c in range(cols):
                a0 += b0[c] * xk[c]
                a1 += b1[c] * xk[c]
                a2 += b2[c] * xk[c]
                a3 += b3[c] * xk[c]
                c0 += b0[c] * xl[c]
                c1 += b1[c] * xl[c]
                c2 += b2[c] * xl[c]
                c3 += b3[c] * xl[c]
            store_tile(out[k], r0, nr, a0, a1, a2, a3)
            if k + 1 < n:
                store_tile(out[k + 1], r0, nr, c0, c1, c2, c3)


@njit(cache=True)
def store_tile(out, r0, nr, s0, s1, s2, s3):
    """out[r0:r0 + nr] = the first nr of s0..s3 (a tile at the end of W has fewer than TILE rows)."""
    out[r0] = s0
    if nr > 1:
        out[r0 + 1] = s1
    if nr > 2:
        out[r0 + 2] = s2
    if nr > 3:
        out[r0 + 3] = s3


# ----------------------------------------------------------------------------------------------------------------
# The int8 path: ggml's arithmetic, for speed
#
# Everything above multiplies the weights by float32 activations: the reference, which matches transformers to
# 1e-5. llama.cpp goes faster by also quantizing the activation vector x, once per product, into blocks of int8
# ("Q8" blocks with a float scale), so that the inner loop multiplies small integers: AVX2's vpmaddubsw multiplies
# 32 pairs of bytes and adds neighbours in one instruction, where the float path needs a convert and a
# multiply-add per weight. The format x is rounded to depends on the weight type (ggml's "vec_dot_type"):
#
#   weights               x becomes                                        per block of x
#   Q4_0, Q5_0, Q8_0      Q8_0: 32 int8, d = max|x| / 127 stored as fp16   q = rint(x * 127 / max|x|)
#   Q4_1, Q5_1            Q8_1: Q8_0 plus s = fp16(d * sum(q))              (s serves the weights' offset m)
#   Q2_K ... Q6_K         Q8_K: 256 int8, d = max / -127 in float32, and    q = rint(x / d), at most 127
#                         the 16 sums of 16 q ("bsums", for the mins)
#   F16, BF16             x rounded to F16 or BF16
#   F32                   x as it is
#
# Rounding x changes the logits by 0.1 to 1 on real models, so this path is tested against llama.cpp, the
# implementation whose numbers it reproduces, and the float path stays the reference (see llama3.load's
# `kernels`). The pieces:
#   quantize_x_q8_0 / _q8_1 / _q8_k   the NumPy references of ggml's activation quantizers
#   round_x(x, qtype)                 x as the int8 path sees it: quantized and dequantized again (float32)
#   quantize_x_kernel                 the Numba twin of the quantizers, used by matmul
#   rowdot_q8_0, rowdot_q4_0, rowdot_q4_1, rowdot_q4_k, rowdot_q6_k
#                                     the AVX2 kernels, written as LLVM IR (see "Writing SIMD by hand" below);
#                                     each is tested equal to the float kernels run on round_x(x)
# Other weight types on this path, or a CPU without AVX2, run the float kernels on round_x(x): the same
# numbers, at the float path's speed.

Q8_0_X, Q8_1_X, Q8_K_X = 0, 1, 2   # how x is quantized, as ints for the kernels
X_TYPE = {QT.Q4_0: Q8_0_X, QT.Q5_0: Q8_0_X, QT.Q8_0: Q8_0_X, QT.Q4_1: Q8_1_X, QT.Q5_1: Q8_1_X,
          QT.Q2_K: Q8_K_X, QT.Q3_K: Q8_K_X, QT.Q4_K: Q8_K_X, QT.Q5_K: Q8_K_X, QT.Q6_K: Q8_K_X}


def fp16_nearest(v):
    """float32 -> the nearest float16 (ties to even, as the F16C instruction rounds), as float32 again."""
    with np.errstate(over="ignore"):  # beyond 65504 is inf, as in the hardware conversion
        return np.asarray(v, np.float32).astype(np.float16).astype(np.float32)


def quantize_x_q8_0(x):
    """x [n, 32] float32 -> q int8 [n, 32], d float32 [n] (an fp16 value): ggml's quantize_row_q8_0 for AVX2,
    which multiplies by 127 / max|x| and rounds halves to even (its scalar twin divides and rounds away)."""
    amax = np.abs(x).max(axis=1)                                        # [n]
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax != 0)
    q = np.rint(x * inv[:, None]).astype(np.int8)                       # [n, 32] in -127..127
    return q, fp16_nearest(amax / np.float32(127))


def quantize_x_q8_1(x):
    """x [n, 32] -> q [n, 32], d [n], s [n]: Q8_0's rounding, plus s = fp16(d * sum(q)) with d before its
    rounding to fp16 (so is ggml's)."""
    amax = np.abs(x).max(axis=1)                                        # [n]
    inv = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax != 0)
    q = np.rint(x * inv[:, None]).astype(np.int8)                       # [n, 32]
    d = amax / np.float32(127)                                          # [n], float32
    return q, fp16_nearest(d), fp16_nearest(d * q.sum(axis=1, dtype=np.int32).astype(np.float32))


def quantize_x_q8_k(x):
    """x [n, 256] -> q int8 [n, 256], d float32 [n], bsums int16 [n, 16]: ggml's quantize_row_q8_K. The value of
    largest magnitude (the first, on a tie) maps to -127 exactly; d keeps full float32 precision."""
    n = x.shape[0]
    big = np.abs(x).argmax(axis=1)                                      # [n]
    mx = x[np.arange(n), big]                                           # [n], signed
    iscale = np.divide(np.float32(-127), mx, out=np.zeros_like(mx), where=mx != 0)
    q = np.minimum(np.rint(x * iscale[:, None]), 127).astype(np.int8)   # [n, 256]
    d = np.divide(np.float32(1), iscale, out=np.zeros_like(iscale), where=iscale != 0)
    return q, d, q.reshape(n, 16, 16).sum(axis=2, dtype=np.int16)


def round_x(x, qtype):
    """x [..., cols] as the int8 path multiplies it with weights of type qtype: quantized like ggml, then
    dequantized, in float32. The float kernels run on this give the int8 path's numbers (up to float rounding)."""
    qtype = QT(qtype)
    x = np.ascontiguousarray(x, np.float32)
    if qtype == QT.F16:
        return fp16_nearest(x)
    if qtype == QT.BF16:
        return dequantize_bf16(quantize_bf16(x.reshape(-1, 1))).reshape(x.shape)
    if qtype not in X_TYPE:
        return x
    size = QK_K if X_TYPE[qtype] == Q8_K_X else QK
    blocks = x.reshape(-1, size)                                        # [n_blocks, size]
    q, d = (quantize_x_q8_k if size == QK_K else quantize_x_q8_0)(blocks)[:2]
    return (q.astype(np.float32) * d[:, None]).reshape(x.shape)


@njit(cache=True)
def fp16_nearest_nb(v):
    """The Numba twin of fp16_nearest, for one float32 (Numba has no float16): round the mantissa to 10 bits,
    ties to even, by adding just under half of the dropped part plus the lowest kept bit. Below 2^-14 float16 is
    subnormal, a fixed step of 2^-24, which rint handles exactly; past 65504 it overflows to inf."""
    a = abs(v)
    if a < np.float32(2.0 ** -14):
        r = np.float32(np.rint(a * np.float32(2.0 ** 24)) * np.float32(2.0 ** -24))
    elif a >= np.float32(65520.0):
        r = np.float32(np.inf)
    else:
        bits = np.uint32(np.float32(a).view(np.uint32))
        bits = (bits + np.uint32(0xFFF) + ((bits >> 13) & np.uint32(1))) & np.uint32(0xFFFFE000)
        r = np.uint32(bits).view(np.float32)
    return -r if v < 0 else r


@njit(cache=True)
def quantize_x_kernel(xtype, x, q, d, s, bs):
    """Quantize x [n, cols] like the NumPy references above, into q int8 [n, cols], d float32 [n, blocks],
    s float32 [n, blocks] (Q8_1 only) and bs int16 [n, cols // 16] (Q8_K only). Not fastmath: the roundings
    must be exactly ggml's."""
    n, cols = x.shape
    size = QK_K if xtype == Q8_K_X else QK
    for t in range(n):
        for b in range(cols // size):
            xb = x[t, size * b:size * b + size]
            qb = q[t, size * b:size * b + size]
            amax = np.float32(0.0)
            big = np.float32(0.0)  # the value of largest magnitude, with its sign
            for l in range(size):
                if abs(xb[l]) > amax:
                    amax = abs(xb[l])
                    big = xb[l]
            if xtype == Q8_K_X:
                iscale = np.float32(-127.0) / big if amax != 0 else np.float32(0.0)
                for l in range(size):
                    qb[l] = min(127, np.int32(np.rint(xb[l] * iscale)))
                d[t, b] = np.float32(1.0) / iscale if amax != 0 else np.float32(0.0)
                for k in range(16):
                    bs[t, 16 * b + k] = qb[16 * k:16 * k + 16].astype(np.int32).sum()
            else:
                inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
                total = 0
                for l in range(size):
                    qb[l] = np.int32(np.rint(xb[l] * inv))
                    total += qb[l]
                scale = amax / np.float32(127.0)
                d[t, b] = fp16_nearest_nb(scale)
                if xtype == Q8_1_X:
                    s[t, b] = fp16_nearest_nb(scale * np.float32(total))


# Writing SIMD by hand
#
# LLVM does not turn a plain loop over bytes into vpmaddubsw: it widens every byte to int32 first and runs at a
# quarter of the speed. Numba lets a function emit LLVM IR directly (numba.extending.intrinsic), so the kernels
# below state the vector instructions themselves: the IR vector types (<32 x i8> is one 256-bit AVX2 register of
# 32 bytes) and calls to LLVM's x86 intrinsics, each of which becomes one instruction. The helpers name the
# instruction groups; each kernel is a few lines of them, with its float twin (dot_<type>) as the readable
# statement of what it computes.

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
FLOAT, HALF = ir.FloatType(), ir.HalfType()
HAVE_AVX2 = "+avx2" in llvm.get_host_cpu_features().flatten().split(",")


def vec(t, n):
    return ir.VectorType(t, n)


def splat(t, n, value):
    """A constant vector: n lanes of type t, all equal to value."""
    return ir.Constant(vec(t, n), [value] * n)


def byte_ptr(context, builder, arrty, arr, offset):
    """i8* to byte `offset` of a Numba array's data (offset an LLVM i64 value or a Python int)."""
    data = builder.bitcast(context.make_array(arrty)(context, builder, arr).data, I8.as_pointer())
    return builder.gep(data, [offset if isinstance(offset, ir.Value) else ir.Constant(I64, offset)])


def at(builder, ptr, offset):
    return builder.gep(ptr, [offset if isinstance(offset, ir.Value) else ir.Constant(I64, offset)])


def load(builder, ptr, t):
    """Load a value of type t (e.g. <32 x i8>) from an i8* with no alignment assumed (vmovdqu)."""
    return builder.load(builder.bitcast(ptr, t.as_pointer()), align=1)


def x86(builder, name, ret, *args):
    """Call an LLVM intrinsic: one machine instruction, e.g. x86(b, "llvm.x86.avx2.pmadd.wd", ...)."""
    fnty = ir.FunctionType(ret, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def maddubs(b, u, s):
    """vpmaddubsw: 32 unsigned bytes u times 32 signed bytes s, neighbours added -> 16 x i16."""
    return x86(b, "llvm.x86.avx2.pmadd.ub.sw", vec(I16, 16), u, s)


def madd(b, x, y):
    """vpmaddwd: 16 x i16 times 16 x i16, neighbours added -> 8 x i32."""
    return x86(b, "llvm.x86.avx2.pmadd.wd", vec(I32, 8), x, y)


def dot_u8_s8(b, u, s):
    """32 unsigned bytes . 32 signed bytes, as 8 partial sums (i32). The 16-bit middle step cannot overflow
    for weights below 64: 2 * 63 * 127 < 32767."""
    return madd(b, maddubs(b, u, s), splat(I16, 16, 1))


def dot_s8_s8(b, x, y):
    """32 signed bytes . 32 signed bytes, as 8 partial sums: vpmaddubsw wants its first operand unsigned, so
    multiply |x| by y with x's sign moved onto it (vpsignb). 2 * 127 * 127 < 32767: no overflow."""
    ax = x86(b, "llvm.x86.avx2.psign.b", vec(I8, 32), x, x)
    sy = x86(b, "llvm.x86.avx2.psign.b", vec(I8, 32), y, x)
    return dot_u8_s8(b, ax, sy)


def nibbles_32(b, ptr):
    """16 bytes at ptr -> 32 unsigned bytes: the low nibbles, then the high nibbles (Q4_0's weight order)."""
    qs = load(b, ptr, vec(I8, 16))
    lo, hi = b.and_(qs, splat(I8, 16, 15)), b.lshr(qs, splat(I8, 16, 4))
    return b.shuffle_vector(lo, hi, ir.Constant(vec(I32, 32), list(range(32))))


def hsum_f32(b, v):
    """The 8 lanes of a float vector added: halves, then quarters, then the last pair."""
    for n in (4, 2, 1):
        lo = b.shuffle_vector(v, v, ir.Constant(vec(I32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(vec(I32, n), list(range(n, 2 * n))))
        v = b.fadd(lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))


def fp16_pair(b, ptr):
    """The two fp16 at ptr and ptr + 2, as float32 (vmovd, vcvtph2ps). Loading both as one 32-bit word matters:
    LLVM loads a lone half into a register it leaves partly stale (vpinsrw), which chained each block's
    scale to the previous block's arithmetic and cost half the speed of Q4_0."""
    both = b.fpext(b.bitcast(load(b, ptr, I32), vec(HALF, 2)), vec(FLOAT, 2))
    return b.extract_element(both, ir.Constant(I32, 0)), b.extract_element(both, ir.Constant(I32, 1))


def twice(b, v8):
    """8 x i16 -> 16 x i16 holding it in both 128-bit halves (vinserti128), so that broadcast can stay within
    each half: one vpshufb per scale instead of an extract and a vpbroadcastw."""
    return b.shuffle_vector(v8, v8, ir.Constant(vec(I32, 16), list(range(8)) * 2))


def broadcast(b, scales16, lo, hi):
    """16 x i16 with scales[lo] in lanes 0-7 and scales[hi] in lanes 8-15, from scales16 = twice(scales)."""
    return b.shuffle_vector(scales16, scales16, ir.Constant(vec(I32, 16), [lo] * 8 + [8 + hi] * 8))


def float_at(context, b, arrty, arr, i):
    return b.load(b.bitcast(byte_ptr(context, b, arrty, arr, b.mul(i, ir.Constant(I64, 4))), FLOAT.as_pointer()))


def six_bit_fields(b, pw):
    """Q4_K's 12 bytes of packed scales and mins (at pw + 4) -> (scales, mins), each 8 x i16. The unpacking of
    scale_min_k4 for all 8 sub-blocks at once, on three 32-bit words: the low 6 bits of bytes 0-3 and 4-7 are
    scales and mins 0-3; bytes 8-11 hold the low 4 bits of scales 4-7 (low nibbles) and mins 4-7 (high
    nibbles), and the spare top 2 bits of bytes 0-7 their high bits."""
    u = [load(b, at(b, pw, 4 + 4 * k), I32) for k in range(3)]
    c = lambda v: ir.Constant(I32, v)  # noqa: E731
    top2 = lambda v: b.shl(b.and_(b.lshr(v, c(6)), c(0x03030303)), c(4))  # noqa: E731
    sc = [b.and_(u[0], c(0x3F3F3F3F)), b.or_(b.and_(u[2], c(0x0F0F0F0F)), top2(u[0]))]
    m = [b.and_(u[1], c(0x3F3F3F3F)), b.or_(b.and_(b.lshr(u[2], c(4)), c(0x0F0F0F0F)), top2(u[1]))]

    def widen(words):  # two i32 of 4 bytes each -> 8 x i16
        v = b.insert_element(b.insert_element(ir.Constant(vec(I32, 2), None), words[0], c(0)), words[1], c(1))
        return b.zext(b.bitcast(v, vec(I8, 8)), vec(I16, 8))
    return widen(sc), widen(m)


def fma(b, scale, v, acc):
    """acc + scale * float(v): one block's integer partial sums scaled into the accumulator (vfmadd)."""
    lanes = b.insert_element(ir.Constant(vec(FLOAT, 8), None), scale, ir.Constant(I32, 0))
    lanes = b.shuffle_vector(lanes, lanes, ir.Constant(vec(I32, 8), [0] * 8))
    return x86(b, "llvm.fma.v8f32", vec(FLOAT, 8), lanes, b.sitofp(v, vec(FLOAT, 8)), acc)


def lane0(b, v):
    """A float vector holding v in lane 0 and zeros elsewhere: a scalar sum kept beside the vector ones."""
    return b.insert_element(splat(FLOAT, 8, 0.0), v, ir.Constant(I32, 0))


# The five block readers. Each takes the builder, pw (i8* to the weight block), py (i8* to its activations),
# pbs (i8* to their 16-bit sums of 16, Q8_K only), dy and s (the activation block's scale, and for Q8_1 its s),
# and the accumulators (8 x float each); it returns the new accumulators. Each mirrors its float twin dot_<type>.

def block_q8_0(b, pw, py, pbs, dy, s, acc):
    d = b.fmul(fp16_pair(b, pw)[0], dy)  # (the pair is d and a byte of qs)
    return [fma(b, d, dot_s8_s8(b, load(b, at(b, pw, 2), vec(I8, 32)), load(b, py, vec(I8, 32))), acc[0])]


def block_q4_0(b, pw, py, pbs, dy, s, acc):
    d = b.fmul(fp16_pair(b, pw)[0], dy)
    q = b.sub(nibbles_32(b, at(b, pw, 2)), splat(I8, 32, 8))          # the weights minus 8: signed bytes
    return [fma(b, d, dot_s8_s8(b, q, load(b, py, vec(I8, 32))), acc[0])]


def block_q4_1(b, pw, py, pbs, dy, s, acc):
    d, m = fp16_pair(b, pw)
    q = nibbles_32(b, at(b, pw, 4))                                     # unsigned 0..15
    return [fma(b, b.fmul(d, dy), dot_u8_s8(b, q, load(b, py, vec(I8, 32))), acc[0]),
            b.fadd(acc[1], lane0(b, b.fmul(m, s)))]                     # the offset: m * s


def block_q4_k(b, pw, py, pbs, dy, s, acc):
    sc, m = six_bit_fields(b, pw)
    sc16 = twice(b, sc)
    isum = splat(I32, 8, 0)
    for g in range(4):  # 32 bytes of nibbles: sub-block 2g in the low nibbles, 2g+1 in the high ones
        qs = load(b, at(b, pw, 16 + 32 * g), vec(I8, 32))
        lo, hi = b.and_(qs, splat(I8, 32, 15)), b.lshr(qs, splat(I8, 32, 4))
        p0 = maddubs(b, lo, load(b, at(b, py, 64 * g), vec(I8, 32)))  # 16 pair sums of q * y
        p1 = maddubs(b, hi, load(b, at(b, py, 64 * g + 32), vec(I8, 32)))
        isum = b.add(isum, madd(b, p0, broadcast(b, sc16, 2 * g, 2 * g)))  # times the scale, in pairs
        isum = b.add(isum, madd(b, p1, broadcast(b, sc16, 2 * g + 1, 2 * g + 1)))
    sums32 = madd(b, load(b, pbs, vec(I16, 16)), splat(I16, 16, 1))    # the sum of y in each sub-block
    msum = b.mul(b.zext(m, vec(I32, 8)), sums32)                        # m_j * sum(y_j)
    d, dmin = fp16_pair(b, pw)
    return [fma(b, b.fmul(d, dy), isum, acc[0]), fma(b, b.fmul(dmin, dy), msum, acc[1])]


def block_q6_k(b, pw, py, pbs, dy, s, acc):
    sc = b.sext(load(b, at(b, pw, 192), vec(I8, 16)), vec(I16, 16))    # the 16 int8 scales
    isum = splat(I32, 8, 0)
    for h in range(2):  # two halves of 128 weights: 64 bytes of low 4 bits, 32 bytes of high 2 bits
        sc16 = twice(b, b.shuffle_vector(sc, sc, ir.Constant(vec(I32, 8), list(range(8 * h, 8 * h + 8)))))
        ql = [load(b, at(b, pw, 64 * h), vec(I8, 32)), load(b, at(b, pw, 64 * h + 32), vec(I8, 32))]
        qh = load(b, at(b, pw, 128 + 32 * h), vec(I8, 32))
        for k in range(4):  # weights 32k..32k+31 of the half: nibble k // 2 of ql[k % 2], bits 2k of qh
            low = ql[k % 2]
            low = b.and_(low, splat(I8, 32, 15)) if k < 2 else b.lshr(low, splat(I8, 32, 4))
            high = b.shl(b.and_(b.lshr(qh, splat(I8, 32, 2 * k)), splat(I8, 32, 3)), splat(I8, 32, 4))
            p = maddubs(b, b.or_(low, high), load(b, at(b, py, 128 * h + 32 * k), vec(I8, 32)))
            # lanes 0-7 of p are sub-block 8h + 2k, lanes 8-15 sub-block 8h + 2k + 1
            isum = b.add(isum, madd(b, p, broadcast(b, sc16, 2 * k, 2 * k + 1)))
    offset = madd(b, sc, load(b, pbs, vec(I16, 16)))                    # sum_j scale_j * sum(y_j)
    isum = b.sub(isum, b.shl(offset, splat(I32, 8, 5)))                 # minus 32 times that
    d = fp16_pair(b, at(b, pw, 206))[1]  # (the last scales byte pair, then d: never past the block)
    return [fma(b, b.fmul(d, dy), isum, acc[0])]


# type: (block reader, bytes per block, activations per block, signs of the accumulators in the result)
INT8_BLOCKS = {Q8_0: (block_q8_0, 34, QK, [1]), Q4_0: (block_q4_0, 18, QK, [1]), Q4_1: (block_q4_1, 20, QK, [1, 1]),
               Q4_K: (block_q4_k, 144, QK_K, [1, -1]), Q6_K: (block_q6_k, 210, QK_K, [1])}
INT8_KERNELS = frozenset(QT(k) for k in INT8_BLOCKS)  # the types with an AVX2 kernel


def emit_rowdots(context, b, kind, rows, acts, nb):
    """The IR of the dot products of weight rows (a list of (type, value) Numba arrays of raw bytes) with one
    token's quantized activations acts = (y, yd, ys, bs), over nb blocks: a list of float32 values.
    The loop walks the rows side by side, block by block, each with its own accumulators: independent chains of
    multiply-adds (4 cycles of latency each) and two streams of memory. A single row is split into its even
    and odd blocks, two chains again, added at the end."""
    block, size, per, signs = INT8_BLOCKS[kind]
    (yt, y), (ydt, yd), (yst, ys), (bst, bs) = acts
    streams = rows if len(rows) == 2 else rows * 2               # (row, first block) pairs, stepping by `step`
    step = 1 if len(rows) == 2 else 2
    accs = [[cgutils.alloca_once_value(b, splat(FLOAT, 8, 0.0)) for _ in signs] for _ in streams]

    def run(k, i):  # block i of stream k
        pw = byte_ptr(context, b, streams[k][0], streams[k][1], b.mul(i, ir.Constant(I64, size)))
        py = byte_ptr(context, b, yt, y, b.mul(i, ir.Constant(I64, per)))
        pbs = byte_ptr(context, b, bst, bs, b.mul(i, ir.Constant(I64, 2 * per // 16)))
        dy, s = float_at(context, b, ydt, yd, i), float_at(context, b, yst, ys, i)
        new = block(b, pw, py, pbs, dy, s, [b.load(a) for a in accs[k]])
        for a, v in zip(accs[k], new):
            b.store(v, a)

    n_steps = b.sdiv(nb, ir.Constant(I64, step))
    with cgutils.for_range(b, n_steps) as loop:
        for k in range(len(streams)):
            first = 0 if len(rows) == 2 else k
            run(k, b.add(b.mul(loop.index, ir.Constant(I64, step)), ir.Constant(I64, first)))
    if step == 2:  # a single row of an odd number of blocks: its last block
        with cgutils.if_unlikely(b, b.icmp_signed("!=", b.srem(nb, ir.Constant(I64, 2)), ir.Constant(I64, 0))):
            run(0, b.sub(nb, ir.Constant(I64, 1)))

    def total(k):
        vs = [hsum_f32(b, b.load(a)) for a in accs[k]]
        out = vs[0]
        for v, sign in zip(vs[1:], signs[1:]):
            out = b.fadd(out, v) if sign > 0 else b.fsub(out, v)
        return out
    return [total(0), total(1)] if len(rows) == 2 else [b.fadd(total(0), total(1))]


def int8_intrinsics(kind):
    """rowdot(w, y, yd, ys, bs): one row . one token; rowdot2(wa, wb, y, yd, ys, bs): two rows at once."""
    @intrinsic
    def rowdot(typingctx, w, y, yd, ys, bs):
        def codegen(context, b, sig, args):
            nb = cgutils.unpack_tuple(b, context.make_array(sig.args[2])(context, b, args[2]).shape, 1)[0]
            acts = list(zip(sig.args[1:], args[1:]))
            return emit_rowdots(context, b, kind, [(sig.args[0], args[0])], acts, nb)[0]
        return types.float32(w, y, yd, ys, bs), codegen

    @intrinsic
    def rowdot2(typingctx, wa, wb, y, yd, ys, bs):
        def codegen(context, b, sig, args):
            nb = cgutils.unpack_tuple(b, context.make_array(sig.args[3])(context, b, args[3]).shape, 1)[0]
            acts = list(zip(sig.args[2:], args[2:]))
            pair = emit_rowdots(context, b, kind, [(sig.args[0], args[0]), (sig.args[1], args[1])], acts, nb)
            return context.make_tuple(b, sig.return_type, pair)
        return types.UniTuple(types.float32, 2)(wa, wb, y, yd, ys, bs), codegen
    return rowdot, rowdot2


rowdot_q8_0, rowdot2_q8_0 = int8_intrinsics(Q8_0)
rowdot_q4_0, rowdot2_q4_0 = int8_intrinsics(Q4_0)
rowdot_q4_1, rowdot2_q4_1 = int8_intrinsics(Q4_1)
rowdot_q4_k, rowdot2_q4_k = int8_intrinsics(Q4_K)
rowdot_q6_k, rowdot2_q6_k = int8_intrinsics(Q6_K)


@njit(cache=True)
def dot_row_int8(kind, w, y, yd, ys, bs):
    """One row (raw bytes w) . the quantized activations of one token."""
    if kind == Q4_K:
        return rowdot_q4_k(w, y, yd, ys, bs)
    elif kind == Q6_K:
        return rowdot_q6_k(w, y, yd, ys, bs)
    elif kind == Q8_0:
        return rowdot_q8_0(w, y, yd, ys, bs)
    elif kind == Q4_0:
        return rowdot_q4_0(w, y, yd, ys, bs)
    elif kind == Q4_1:
        return rowdot_q4_1(w, y, yd, ys, bs)
    return np.float32(np.nan)  # unreachable: matmul sends only INT8_KERNELS here


@njit(cache=True)
def dot_rows_int8(kind, wa, wb, y, yd, ys, bs):
    """Two rows . the quantized activations of one token, read side by side."""
    if kind == Q4_K:
        return rowdot2_q4_k(wa, wb, y, yd, ys, bs)
    elif kind == Q6_K:
        return rowdot2_q6_k(wa, wb, y, yd, ys, bs)
    elif kind == Q8_0:
        return rowdot2_q8_0(wa, wb, y, yd, ys, bs)
    elif kind == Q4_0:
        return rowdot2_q4_0(wa, wb, y, yd, ys, bs)
    elif kind == Q4_1:
        return rowdot2_q4_1(wa, wb, y, yd, ys, bs)
    return np.float32(np.nan), np.float32(np.nan)


@njit(parallel=True, cache=True)
def matvec_int8_kernel(kind, xtype, w, x, y, yd, ys, bs, out):
    """out[r] = W[r] . x for one token x [cols]: x is first quantized into y, yd, ys, bs (scratch arrays of the
    shapes quantize_x makes for one token), then each step reads two rows half the matrix apart, side by side.
    (Two far-apart rows kept the memory system busier than two neighbours, measured.)"""
    quantize_x_kernel(xtype, x.reshape(1, -1), y.reshape(1, -1), yd.reshape(1, -1), ys.reshape(1, -1),
                      bs.reshape(1, -1))
    rows = w.shape[0]
    half = (rows + 1) // 2
    for r in prange(half):
        if r + half < rows:
            out[r], out[r + half] = dot_rows_int8(kind, w[r], w[r + half], y, yd, ys, bs)
        else:
            out[r] = dot_row_int8(kind, w[r], y, yd, ys, bs)



# ----------------------------------------------------------------------------------------------------------------
# Public API


def dequantize(data, qtype):
    """Raw tensor data as GGUFReader gives it -> float32 [..., n_per_row]; the same contract as
    gguf.quants.dequantize, so either can stand in for the other. Works through the NumPy references a chunk
    of blocks at a time, so the temporaries stay small even for a whole embedding matrix."""
    qtype = QT(qtype)
    if qtype not in SUPPORTED:
        raise NotImplementedError(f"quant.dequantize: {qtype.name} is not supported")
    data = np.ascontiguousarray(data)
    if qtype == QT.F32 and data.dtype == np.float32:
        return data  # already the answer (gguf-py returns it as is too)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = data.view(np.uint8)                                           # [..., bytes_per_row]
    if raw.ndim == 0 or raw.shape[-1] % type_size:
        raise ValueError(f"{qtype.name}: rows of {raw.shape[-1:]} bytes are not whole {type_size}-byte blocks")
    blocks = raw.reshape(-1, type_size)                                 # [n_blocks, type_size]
    out = np.empty((blocks.shape[0], block_size), np.float32)           # [n_blocks, block_size]
    step = 1 << 16
    for i in range(0, blocks.shape[0], step):
        out[i:i + step] = REFERENCE[qtype](blocks[i:i + step])
    return out.reshape(*raw.shape[:-1], raw.shape[-1] // type_size * block_size)


KERNELS = ("float", "int8")


class QMatrix:
    """A 2-D weight [rows, cols] kept in its GGUF encoding: data as GGUFReader gives it (tensor.data, usually a
    read-only memory map), qtype a GGMLQuantizationType, shape in numpy order (the reverse of GGUF's ne).
    Validates everything the kernels rely on, since Numba kernels do no bounds checks."""

    def __init__(self, data, qtype, shape, kernels="float"):
        if kernels not in KERNELS:
            raise ValueError(f"QMatrix: kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
        try:
            qtype = QT(qtype)
        except ValueError:
            raise ValueError(f"QMatrix: unknown GGML type {qtype!r}") from None
        if qtype not in SUPPORTED:
            raise ValueError(f"QMatrix: {qtype.name} is not supported (supported: "
                             f"{', '.join(sorted(t.name for t in SUPPORTED))})")
        shape = tuple(np.atleast_1d(shape))
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"QMatrix: shape must be (rows, cols) with both >= 1, got {tuple(shape)}")
        rows, cols = int(shape[0]), int(shape[1])
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if cols % block_size:
            raise ValueError(f"QMatrix: {qtype.name} needs cols a multiple of {block_size}, got {cols}")
        bytes_per_row = cols // block_size * type_size
        data = np.asarray(data)
        dtypes = {QT.F32: (np.float32,), QT.F16: (np.float16, np.uint16), QT.BF16: (np.uint8, np.uint16)}
        allowed = dtypes.get(qtype, (np.uint8,))
        if data.dtype not in allowed:
            raise ValueError(f"QMatrix: {qtype.name} data must be {' or '.join(np.dtype(t).name for t in allowed)}"
                             f", got {data.dtype}")
        # The byte count must match exactly, and a 2-D array must have one row per matrix row: this catches a
        # shape given in GGUF order, (cols, rows), whenever rows != cols.
        if data.nbytes != rows * bytes_per_row or (data.ndim >= 2 and np.prod(data.shape[:-1]) != rows):
            raise ValueError(f"QMatrix: {qtype.name} [{rows}, {cols}] needs {rows} rows of {bytes_per_row} bytes, "
                             f"got data of shape {data.shape} and dtype {data.dtype} ({data.nbytes} bytes)")
        self.data, self.qtype, self.shape, self.rows, self.cols = data, qtype, (rows, cols), rows, cols
        self.kernels = kernels  # how matmul multiplies it: "float" (the reference) or "int8" (ggml's arithmetic)
        # What the kernels read: the same memory as uint8 [rows, bytes_per_row] (a copy only if data was not
        # contiguous), marked read-only so that every matrix has the same Numba type: one compiled kernel.
        self.raw = np.ascontiguousarray(data).view(np.uint8).reshape(rows, bytes_per_row)
        self.raw.flags.writeable = False

    def __repr__(self):
        return f"QMatrix({self.qtype.name}, shape={self.shape})"


def matmul(x, w, out=None):
    """x @ W.T without dequantizing W: x [cols] -> [rows] (one token), or x [n, cols] -> [n, rows] (a prompt).
    out, if given, must be a float32 C-contiguous array of the result's shape, not overlapping x."""
    if not isinstance(w, QMatrix):
        raise TypeError(f"matmul: w must be a QMatrix, got {type(w).__name__}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[-1] != w.cols:
        raise ValueError(f"matmul: x must be [{w.cols}] or [n, {w.cols}] for {w!r}, got {x.shape}")
    x = x.view()
    x.flags.writeable = False  # the kernels only read x; one Numba type for writeable and read-only inputs
    shape = x.shape[:-1] + (w.rows,)
    if out is None:
        out = np.empty(shape, np.float32)
    elif (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"matmul: out must be a writeable C-contiguous float32 array of shape {shape}")
    elif np.may_share_memory(x, out):
        raise ValueError("matmul: out must not overlap x (the kernels read x while writing out)")
    kind = int(w.qtype)
    x2, out2 = x.reshape(-1, w.cols), out.reshape(-1, w.rows)          # [n, cols], [n, rows]
    n = x2.shape[0]
    if n == 0:
        return out
    if w.kernels == "float":
        if n == 1:  # one token: the fused product is about twice as fast as dequantize-then-dot
            matvec_kernel(kind, w.raw, x2[0], sums_16(x2[0]), out2[0])
        else:
            matmul_kernel(kind, w.raw, x2, out2)
        return out
    # The int8 path. One token: the AVX2 kernels, or else the float kernel on x rounded like ggml's.
    if n == 1 and HAVE_AVX2 and w.qtype in INT8_KERNELS:
        y, yd, ys, bs = scratch(1, w.cols, X_TYPE[w.qtype])
        matvec_int8_kernel(kind, X_TYPE[w.qtype], w.raw, x2[0], y[0], yd[0], ys[0], bs[0], out2[0])
        return out
    xr, xs = int8_view(x2, w.qtype)                                     # [n, cols], [n, cols // 16]
    if n == 1:
        matvec_kernel(kind, w.raw, xr[0], xs[0], out2[0])
    else:
        # A prompt: the weights dequantized a few rows at a time, as on the float path, times x rounded like
        # ggml's. The products then equal the integer ones up to float rounding, and this is 2.5x faster than
        # running the one-token kernels per token, which unpack every block again for every token.
        matmul_kernel(kind, w.raw, xr, out2)
        if X_TYPE.get(w.qtype) == Q8_1_X:  # ggml's offset term m * s has s rounded to fp16: add the difference
            nb = w.cols // QK
            s_diff = xs[:, 0::2] - xr.reshape(n, nb, QK).sum(axis=2)                       # [n, blocks]
            m = w.raw.reshape(w.rows, nb, -1)[:, :, 2:4].copy().view(np.float16)[:, :, 0]  # [rows, blocks]
            out2 += s_diff @ m.astype(np.float32).T
    return out


SCRATCH = {}  # (n, cols, xtype) -> the arrays quantize_x would allocate, reused by every one-token product


def scratch(n, cols, xtype):
    """Buffers for n quantized activation vectors of cols values: made once per shape, so that decoding a token
    allocates nothing for its products. (Not for use from several Python threads at once.)"""
    key = (n, cols, xtype)
    if key not in SCRATCH:
        blocks = cols // (QK_K if xtype == Q8_K_X else QK)
        SCRATCH[key] = (np.empty((n, cols), np.int8), np.empty((n, blocks), np.float32),
                        np.zeros((n, blocks), np.float32), np.zeros((n, cols // 16), np.int16))
    return SCRATCH[key]


def quantize_x(x, qtype):
    """x [n, cols] -> (y int8 [n, cols], yd [n, blocks], ys [n, blocks], bs [n, cols // 16]): the activations
    quantized for weights of type qtype, as the int8 kernels take them (ys only for Q8_1, bs only for Q8_K)."""
    xtype = X_TYPE[qtype]
    n, cols = x.shape
    blocks = cols // (QK_K if xtype == Q8_K_X else QK)
    y, yd = np.empty((n, cols), np.int8), np.empty((n, blocks), np.float32)
    ys, bs = np.zeros((n, blocks), np.float32), np.zeros((n, cols // 16), np.int16)
    quantize_x_kernel(xtype, x, y, yd, ys, bs)
    return y, yd, ys, bs


def int8_view(x, qtype):
    """x [n, cols] as the int8 path multiplies it with weights of type qtype, for the float kernels: xr, x
    quantized like ggml's and dequantized again (float32, read-only), and xs, the sums the kernels use for a
    min or an offset (see sums_16): for Q8_1 the stored s (rounded to fp16) at xs[:, 2b], for Q8_K d times the
    integer sums. One quantization serves both; round_x is its NumPy reference."""
    n, cols = x.shape
    if qtype not in X_TYPE:  # F16, BF16: x rounded to that type; F32: x itself
        xr = round_x(x, qtype)
        xs = xr.reshape(n, cols // 16, 16).sum(axis=2)
    else:
        y, yd, ys, bs = quantize_x(x, qtype)
        size = cols // yd.shape[1]
        xr = (y.reshape(n, -1, size) * yd[:, :, None]).reshape(n, cols)              # [n, cols] float32
        if X_TYPE[qtype] == Q8_K_X:
            xs = yd.repeat(16, axis=1) * bs                                          # [n, blocks * 16]
        elif X_TYPE[qtype] == Q8_1_X:
            xs = np.zeros((n, cols // 16), np.float32)
            xs[:, 0::2] = ys                                                         # block b's sum at xs[2b]
        else:
            xs = xr.reshape(n, cols // 16, 16).sum(axis=2)
    xr.flags.writeable = False  # the kernels only read it: one Numba type for every input
    return xr, xs


def get_rows(w, ids):
    """The embedding lookup: rows ids of W dequantized -> float32 [len(ids), cols]."""
    ids = np.asarray(ids)
    if ids.size == 0:
        ids = ids.astype(np.int64)  # np.asarray([]) is float64
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"get_rows: ids must be a 1-D array of integers, got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= w.rows):
        raise ValueError(f"get_rows: ids must be in 0..{w.rows - 1}, got {ids.min()}..{ids.max()}")
    return dequantize(w.raw[ids], w.qtype).reshape(ids.size, w.cols)   # [len(ids), cols]


def set_threads(n):
    """Use n threads (1..numba.config.NUMBA_NUM_THREADS) in the Numba kernels."""
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= limit:
        raise ValueError(f"set_threads: n must be an integer in 1..{limit}, got {n!r}")
    numba.set_num_threads(int(n))


# ----------------------------------------------------------------------------------------------------------------
# Quantizing: float weights -> GGUF blocks
#
# The way back, for writing a model in the formats most files use. NumPy only, a whole array of blocks at a time,
# like the dequantizers. There are two kinds of quantizer:
# - Q8_0 and Q4_0 (and BF16) are formulas: one scale per 32 weights, fixed by the block's largest weight. These
#   match llama.cpp's reference quantizer bit for bit (and so gguf-py's), rounding conventions included.
# - Q4_K and Q6_K have no single right answer: a sub-block's scale and min, and the super-block scales they are
#   coded against, are chosen by a search for the least error. llama.cpp's files come from such a search too
#   (make_qkx2_quants, make_qx_quants in ggml-quants.c); this one is written afresh in three stages (a float fit
#   per sub-block, the super-block scales, a search over the neighbouring 6- or 8-bit codes). Its bytes differ from
#   llama.cpp's, but its round-trip RMSE is 1-2.5% lower on weight-like tensors, with the same largest error
#   (tests/test_quantize.py compares the two on the same tensors). The price is time: a 4096 x 4096 matrix takes
#   about 6 s in one thread, where llama.cpp's C takes 1.3 s (Q4_K) and 0.6 s (Q6_K).


def fp16_round(v):
    """float32 -> the nearest float16, as float32 again: a scale as the file will hold it."""
    return v.astype(np.float16).astype(np.float32)


def fp16_bytes(v):
    """float32 [n, 1] -> its float16 as 2 little-endian bytes [n, 2], ready to be a block's field."""
    return v.astype(np.float16).view(np.uint8)


def round_away(v):
    """C's roundf: halves go away from zero, where np.rint goes to the even neighbour: [0.5, 1.5, -2.5] -> [1, 2, -3].
    floor(v + 0.5) would be wrong for 0.49999997, which float32 rounds up to 1 when adding 0.5; v - trunc(v) is
    exact, so compare that with 0.5 instead."""
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


def safe_inverse(v):
    """1 / v, or 0 where v is 0: an all-zero block gets a zero scale and all its weights level 0 (or 8, ...)."""
    return np.divide(np.float32(1), v, out=np.zeros_like(v), where=v != 0)


def quantize_bf16(x):
    """float32 [n, 1] -> bytes [n, 2]: the top 16 bits of each float, rounded to nearest, ties to even (as
    ggml_compute_fp32_to_bf16). Adding 0x7FFF plus the lowest kept bit carries into the kept bits exactly when
    the dropped half is above 0x8000, or equal to it with the kept part odd."""
    bits = x.view(np.uint32)                                            # [n, 1]
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    quiet_nan = (bits >> 16) | 0x0040  # rounding could turn a NaN into inf: keep its top bits, set the quiet bit
    return np.where(is_nan, quiet_nan, rounded).astype(np.uint16).view(np.uint8)


def quantize_q8_0(x):
    """float32 [n, 32] -> Q8_0 blocks [n, 34]. The block's largest magnitude becomes +-127."""
    d = np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)        # [n, 1]
    q = round_away(x * safe_inverse(d)).astype(np.int8)                 # [n, 32] in -127..127
    return np.concatenate([fp16_bytes(d), q.view(np.uint8)], axis=1)    # [n, 34]


def quantize_q4_0(x):
    """float32 [n, 32] -> Q4_0 blocks [n, 18]. The levels run -8..7, and only -8 has no mirror image, so the scale
    is the largest-magnitude weight, sign included, over -8: that weight lands exactly on -8 and no level is lost
    (with +-7, a scale of max / 7 would leave -8 unused)."""
    i = np.abs(x).argmax(axis=1)[:, None]                               # [n, 1] the first one, if several tie
    d = np.take_along_axis(x, i, axis=1) / np.float32(-8)               # [n, 1]
    # q = (int)(x / d + 8.5): truncation of a positive number, so round half up; 8 + 8.5 truncates to 16
    q = np.minimum(np.trunc(x * safe_inverse(d) + np.float32(8.5)), 15).astype(np.uint8)   # [n, 32] in 0..15
    return np.concatenate([fp16_bytes(d), q[:, :16] | (q[:, 16:] << 4)], axis=1)           # [n, 18]


# The K-quant searches share these helpers. A sub-block's levels are lo + k * step for k in 0..top (Q4_K: lo is
# -dmin * m, top 15; Q6_K: lo is -32 * step, top 63), and each weight takes its nearest level.

def error_weights(x):
    """How much each weight's error counts in the searches, [n, k] -> [n, k]: the sub-block's RMS plus the
    weight's own magnitude (as llama.cpp's Q4_K does). Large weights dominate the dot products, and
    fitting them closely also keeps the largest errors small; the RMS term keeps the small ones from being ignored."""
    return np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + np.abs(x)


def nearest_level(x, step, lo, top):
    """Index k in 0..top of the level lo + k * step nearest to each weight: x [n, k], step and lo [n, 1]."""
    return np.clip(np.rint((x - lo) * safe_inverse(step)), 0, top)


def clips(x, step, lo, top):
    """Whether some weight of each row lies more than half a step beyond the levels, [..., k] -> [..., 1]. Rounding
    errs by at most half a step; a clipped weight errs by more, and such outliers are what the searches below
    must not trade away for a smaller squared error, or the largest error grows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x - lo) / step                         # position on the ladder of levels, in steps (nan if step 0)
    inside = (t.min(axis=-1, keepdims=True) >= -0.5) & (t.max(axis=-1, keepdims=True) <= top + 0.5)
    return ~inside


def better(clip_new, err_new, clip, err):
    """The order of the searches' candidates: one that clips nothing beats one that clips, then less error wins."""
    return (clip_new < clip) | ((clip_new == clip) & (err_new < err))


def fit_scale_min(x, w, q):
    """Weighted least squares for x ~ s * q + b, given each weight's level q (x, w, q [n, 32]) -> s, b, err
    [n, 1]. The offset b stands for -dmin * m, which cannot be positive: where the best b is, take b = 0 and
    fit s alone. Where all q are equal no line is defined, and err is inf."""
    sw, sx = w.sum(axis=-1, keepdims=True), (w * x).sum(axis=-1, keepdims=True)
    sq, sqq, sqx = (w * q).sum(axis=-1, keepdims=True), (w * q * q).sum(axis=-1, keepdims=True), \
        (w * q * x).sum(axis=-1, keepdims=True)
    det = sw * sqq - sq * sq                        # > 0 unless all q are equal
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (sw * sqx - sq * sx) / det
        b = (sqq * sx - sq * sqx) / det
        s = np.where(b > 0, sqx / sqq, s)
        b = np.minimum(b, 0)
        err = (w * (s * q + b - x) ** 2).sum(axis=-1, keepdims=True)
    return s, b, np.where(det > 0, err, np.inf)


def search_scale_min(x):
    """Q4_K stage 1: the float scale s and offset b (<= 0) of each sub-block, x [n, 32] -> s, b [n, 1], that
    minimise the weighted squared error of x ~ s * q + b with q in 0..15.
    Start from the plain grid: 15 equal steps from min(x, 0) to max(x) (the offset can only lower the levels, so
    the ladder starts at 0 if all weights are positive). It clips nothing, but it is rarely the best: rounding to
    a slightly finer or coarser grid (14.0, 14.1, ..., 16.0 steps across the same range) sends some weights to
    other levels, and refitting s and b to those levels by least squares moves the ladder to where the weights
    are. Keep the best of these 21 candidates, then alternate twice between re-rounding to the best ladder and
    refitting it (Lloyd's algorithm), which can only lower the error further."""
    w = error_weights(x)                                                # [n, 32]
    lo = np.minimum(x.min(axis=-1, keepdims=True), 0)                   # [n, 1]
    span = x.max(axis=-1, keepdims=True) - lo                           # [n, 1]
    s, b = span / 15, lo
    q = nearest_level(x, s, b, 15)                                      # [n, 32]
    err, clip = (w * (s * q + b - x) ** 2).sum(axis=-1, keepdims=True), clips(x, s, b, 15)

    def consider(q):  # refit the ladder to the levels q; keep it in the rows where it is better
        nonlocal s, b, err, clip
        s_new, b_new, err_new = fit_scale_min(x, w, q)
        clip_new = clips(x, s_new, b_new, 15)
        take = better(clip_new, err_new, clip, err)                     # [n, 1]
        s, b = np.where(take, s_new, s), np.where(take, b_new, b)
        err, clip = np.where(take, err_new, err), np.where(take, clip_new, clip)

    for steps in range(140, 161):
        consider(nearest_level(x, span / np.float32(steps / 10), lo, 15))
    for _ in range(2):
        consider(nearest_level(x, s, b, 15))
    return s, b


def quantize_q4_k(x):
    """float32 [n, 256] -> Q4_K blocks [n, 144]."""
    n = x.shape[0]
    xs = x.reshape(n, 8, 32)                                            # [n, 8 sub-blocks, 32]
    # 1. Each sub-block's float scale and min.
    s, b = search_scale_min(x.reshape(n * 8, 32))                       # [n*8, 1] each
    s, m = s.reshape(n, 8), -b.reshape(n, 8)                            # [n, 8], both >= 0
    # 2. The super-block scales: the largest scale and the largest min get the top 6-bit code, 63.
    d = fp16_round(s.max(axis=-1, keepdims=True) / 63)                  # [n, 1]
    dmin = fp16_round(m.max(axis=-1, keepdims=True) / 63)               # [n, 1]
    sc0 = np.clip(np.rint(s * safe_inverse(d)), 0, 63)                  # [n, 8] the nearest codes
    m0 = np.clip(np.rint(m * safe_inverse(dmin)), 0, 63)                # [n, 8]
    # 3. Rounding to 6 bits moved each scale and min by up to half a code, and the fit of stage 1 is no longer
    #    the best for the codes at hand. So try the 3 x 3 neighbouring codes of each sub-block, re-round its
    #    weights to each ladder, and keep the codes with the least squared error: the error that stays in the file.
    def ladder(sc, mc):  # codes [n, 8] -> levels q [n, 8, 32], squared error and clipped? [n, 8]
        step, lo = (d * sc)[..., None], -(dmin * mc)[..., None]        # [n, 8, 1]: as dequantize_q4_k computes
        q = nearest_level(xs, step, lo, 15)                             # [n, 8, 32]
        return q, ((step * q + lo - xs) ** 2).sum(axis=-1), clips(xs, step, lo, 15)[..., 0]

    sc, mc = sc0, m0
    q, err, clip = ladder(sc, mc)
    for dsc, dm in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:
        sc_new, mc_new = np.clip(sc0 + dsc, 0, 63), np.clip(m0 + dm, 0, 63)
        q_new, err_new, clip_new = ladder(sc_new, mc_new)
        take = better(clip_new, err_new, clip, err)                     # [n, 8]
        sc, mc, err, clip = (np.where(take, new, old) for new, old in
                             ((sc_new, sc), (mc_new, mc), (err_new, err), (clip_new, clip)))
        q = np.where(take[..., None], q_new, q)
    sc, mc, q = sc.astype(np.uint8), mc.astype(np.uint8), q.astype(np.uint8)
    # Pack: see the Q4_K header and scale_min_k4 for the layout.
    scales = np.concatenate([sc[:, :4] | ((sc[:, 4:] >> 4) << 6),      # bytes 0-3: scales 0-3, top bits of 4-7
                             mc[:, :4] | ((mc[:, 4:] >> 4) << 6),      # bytes 4-7: mins 0-3, top bits of 4-7
                             (sc[:, 4:] & 15) | ((mc[:, 4:] & 15) << 4)], axis=1)   # bytes 8-11: low bits
    q = q.reshape(n, 4, 2, 32)                                          # [n, 4 groups, 2 sub-blocks, 32]
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)               # sub-block 2g low, 2g+1 high nibbles
    return np.concatenate([fp16_bytes(d), fp16_bytes(dmin), scales, qs], axis=1)   # [n, 144]


def search_scale(x):
    """Q6_K stage 1: the float scale s of each sub-block, x [n, 16] -> s [n, 1], that minimises the weighted
    squared error of x ~ s * (q - 32) with q in 0..63. The levels run -32..31 and only -32 has no mirror image,
    so (as in Q4_0) the scale carries the sign of minus the largest-magnitude weight x_max, which then sits at
    -32. Start from exactly that, s = -x_max / 32; then try the candidates that put x_max at -(32 + k/10) for
    k in -9..9, each refitted to its levels by least squares, s = sum(w x l) / sum(w l^2) with l = q - 32, and
    keep the best."""
    w = error_weights(x)                                                # [n, 16]
    i = np.abs(x).argmax(axis=1)[:, None]
    x_max = np.take_along_axis(x, i, axis=1)                            # [n, 1]
    s = -x_max / 32                                                     # [n, 1]
    l = nearest_level(x, s, -32 * s, 63) - 32                           # [n, 16] in -32..31
    err, clip = (w * (s * l - x) ** 2).sum(axis=-1, keepdims=True), clips(x, s, -32 * s, 63)
    for k in range(-9, 10):
        step = -x_max / np.float32(32 + k / 10)
        l = nearest_level(x, step, -32 * step, 63) - 32                 # [n, 16] in -32..31
        slx, sll = (w * x * l).sum(axis=-1, keepdims=True), (w * l * l).sum(axis=-1, keepdims=True)
        s_new = slx / np.where(sll > 0, sll, 1)
        err_new = (w * (s_new * l - x) ** 2).sum(axis=-1, keepdims=True)
        clip_new = clips(x, s_new, -32 * s_new, 63)
        take = better(clip_new, err_new, clip, err)
        s, err, clip = np.where(take, s_new, s), np.where(take, err_new, err), np.where(take, clip_new, clip)
    return s


def quantize_q6_k(x):
    """float32 [n, 256] -> Q6_K blocks [n, 210]."""
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)                                           # [n, 16 sub-blocks, 16]
    # 1. Each sub-block's float scale.
    s = search_scale(x.reshape(n * 16, 16)).reshape(n, 16)              # [n, 16]
    # 2. The super-block scale: the largest-magnitude scale gets code -128, the one without a mirror image in
    #    -128..127 (the sign trick of the weights once more), and d has the opposite sign.
    i = np.abs(s).argmax(axis=1)[:, None]
    d = fp16_round(np.take_along_axis(s, i, axis=1) / np.float32(-128))  # [n, 1]
    sc0 = np.clip(np.rint(s * safe_inverse(d)), -128, 127)             # [n, 16] the nearest codes
    # 3. As in Q4_K: try the neighbouring codes, re-round the weights, keep the least squared error.
    def ladder(sc):  # codes [n, 16] -> levels q [n, 16, 16], squared error and clipped? [n, 16]
        step = (d * sc)[..., None]                                      # [n, 16, 1]: as dequantize_q6_k computes
        q = nearest_level(xs, step, -32 * step, 63)                     # [n, 16, 16] in 0..63
        return q, ((step * (q - 32) - xs) ** 2).sum(axis=-1), clips(xs, step, -32 * step, 63)[..., 0]

    sc = sc0
    q, err, clip = ladder(sc)
    for dsc in (-1, 1):
        sc_new = np.clip(sc0 + dsc, -128, 127)
        q_new, err_new, clip_new = ladder(sc_new)
        take = better(clip_new, err_new, clip, err)                     # [n, 16]
        sc, err, clip = np.where(take, sc_new, sc), np.where(take, err_new, err), np.where(take, clip_new, clip)
        q = np.where(take[..., None], q_new, q)
    sc, q = sc.astype(np.int8), q.astype(np.uint8).reshape(n, 2, 128)   # [n, 16], [n, 2 halves, 128]
    # Pack: see the Q6_K header for the layout.
    low, high = q & 15, q >> 4                                          # [n, 2, 128] each
    ql = low[:, :, :64] | (low[:, :, 64:] << 4)                         # [n, 2, 64]
    high = high.reshape(n, 2, 4, 32) << np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    qh = high[:, :, 0] | high[:, :, 1] | high[:, :, 2] | high[:, :, 3]  # [n, 2, 32]
    return np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8), fp16_bytes(d)], axis=1)


QUANTIZER = {  # qtype -> float32 blocks [n_blocks, block_size] -> raw blocks [n_blocks, type_size] uint8
    QT.BF16: quantize_bf16, QT.Q8_0: quantize_q8_0, QT.Q4_0: quantize_q4_0,
    QT.Q4_K: quantize_q4_k, QT.Q6_K: quantize_q6_k,
}


def quantize(data, qtype):
    """Float weights [..., n] -> the tensor in qtype's encoding, as gguf.quants.quantize returns it and
    GGUFWriter.add_tensor(name, data, raw_dtype=qtype) takes it: uint8 [..., n // block_size * type_size], or
    float32 / float16 [..., n] for F32 / F16. F32, F16, BF16, Q8_0 and Q4_0 are bit-identical to gguf-py (and so
    to llama.cpp); Q4_K and Q6_K come from the searches above. n must be a multiple of the block size."""
    qtype = QT(qtype)
    x = np.asarray(data, dtype=np.float32)  # gguf-py and llama.cpp compute in float32 too
    if qtype == QT.F32:
        return x
    if qtype == QT.F16:
        return x.astype(np.float16)
    if qtype not in QUANTIZER:
        raise NotImplementedError(f"quant.quantize: {qtype.name} is not supported (supported: F32, F16, "
                                  f"{', '.join(t.name for t in QUANTIZER)})")
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if x.ndim == 0 or x.shape[-1] % block_size:
        raise ValueError(f"quant.quantize: {qtype.name} needs rows of a multiple of {block_size} weights, "
                         f"got shape {x.shape}")
    blocks = x.reshape(-1, block_size)                                  # [n_blocks, block_size]
    out = np.empty((blocks.shape[0], type_size), np.uint8)              # [n_blocks, type_size]
    step = (1 << 18) // block_size  # blocks per chunk: the searches' temporaries stay at a few MB
    for i in range(0, blocks.shape[0], step):
        out[i:i + step] = QUANTIZER[qtype](blocks[i:i + step])
    return out.reshape(*x.shape[:-1], x.shape[-1] // block_size * type_size)


# ----------------------------------------------------------------------------------------------------------------
# Reading a GGUF file: the metadata, and every tensor as a memory-mapped array
#
# gguf-py's GGUFReader builds a numpy view for every element of every metadata array, which takes ~12 s for
# Llama 3's 128256 tokens and 280147 merges. This reader walks the same layout with `struct` (~0.3 s) and checks
# every length, count and offset against the file size as it goes, so that a truncated or hostile file stops
# here with a message instead of reaching a kernel that does no bounds checks.
#
# Layout (little-endian): magic "GGUF", uint32 version, uint64 tensor count, uint64 key/value count;
# each key/value: key (uint64 length + UTF-8), uint32 value type, value (a string is uint64 length + bytes; an
# array is uint32 element type, uint64 count, elements); each tensor info: name, uint32 n_dims, n_dims x uint64
# ne (innermost first), uint32 GGML type, uint64 offset; then padding to `general.alignment` (default 32) and
# the tensor data, each tensor at its offset from there.

GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


class GGUFTensor:
    """One tensor of a GGUF file: name, qtype, shape in numpy order, and data shaped as GGUFReader gives it
    (uint8 [..., bytes_per_row] for block types and BF16, float32 / float16 [..., cols] for F32 / F16)."""

    def __init__(self, name, qtype, shape, data):
        self.name, self.qtype, self.shape, self.data = name, qtype, shape, data

    def __repr__(self):
        return f"GGUFTensor({self.name!r}, {self.qtype.name}, shape={self.shape})"


def read_gguf(path):
    """Open a GGUF file: returns (metadata dict, {tensor name: GGUFTensor}). The file is memory-mapped, so the
    tensors cost no memory until read. Raises ValueError naming the problem for anything malformed."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")                      # [file_size] the whole file
    buf = memoryview(mm)
    size = len(mm)
    pos = 0

    def take(fmt):  # unpack a struct at pos, or fail cleanly at the end of the file
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > size:
            raise ValueError(f"truncated at byte {pos} (file has {size} bytes)")
        values = struct.unpack_from(fmt, buf, pos)
        pos += n
        return values

    def string():
        nonlocal pos
        (n,) = take("<Q")
        if pos + n > size:
            raise ValueError(f"a string of {n} bytes at byte {pos} runs past the end of the file")
        s = bytes(buf[pos:pos + n]).decode("utf-8", errors="replace")
        pos += n
        return s

    def value(kind):
        nonlocal pos
        if kind == GGUF_STRING:
            return string()
        if kind == GGUF_ARRAY:
            elem, count = take("<IQ")
            if count > size - pos:  # every element takes at least one byte
                raise ValueError(f"an array of {count} elements at byte {pos} cannot fit in the file")
            if elem in GGUF_SCALARS:  # numbers: one unpack for the whole array
                return list(take(f"<{count}{GGUF_SCALARS[elem]}"))
            return [value(elem) for _ in range(count)]
        if kind not in GGUF_SCALARS:
            raise ValueError(f"unknown metadata value type {kind} at byte {pos}")
        return take("<" + GGUF_SCALARS[kind])[0]

    magic, version, n_tensors, n_kv = take("<4sIQQ")
    if magic != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
    if n_tensors > size // 24 or n_kv > size // 12:  # the smallest tensor info / key-value take that many bytes
        raise ValueError(f"header declares {n_tensors} tensors and {n_kv} metadata keys: more than the file holds")
    meta = {}
    for _ in range(n_kv):
        key = string()
        (kind,) = take("<I")
        meta[key] = value(kind)

    infos = []
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = take("<I")
        if not 1 <= n_dims <= 4:
            raise ValueError(f"tensor {name}: {n_dims} dimensions")
        ne = take(f"<{n_dims}Q")
        kind, offset = take("<IQ")
        infos.append((name, ne, kind, offset))

    alignment = meta.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-pos // alignment) * alignment  # the tensor data begins at the next aligned byte

    tensors = {}
    for name, ne, kind, offset in infos:
        try:
            qtype = QT(kind)
        except ValueError:
            raise ValueError(f"tensor {name}: unknown GGML type {kind}") from None
        if qtype not in gguf.GGML_QUANT_SIZES:
            raise ValueError(f"tensor {name}: type {qtype.name} has no known block size")
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if min(ne) < 1 or ne[0] % block_size:
            raise ValueError(f"tensor {name}: dimensions {list(ne)} do not fit {qtype.name} blocks of {block_size}")
        shape = tuple(int(n) for n in reversed(ne))  # numpy order: outermost first
        n_rows = int(np.prod(shape[:-1], dtype=np.float64))
        row_bytes = ne[0] // block_size * type_size
        nbytes = n_rows * row_bytes
        start = data_start + offset
        if offset % alignment or start + nbytes > size:
            raise ValueError(f"tensor {name}: {nbytes} bytes at offset {offset} lie outside the file or are "
                             f"misaligned")
        raw = mm[start:start + nbytes]
        if qtype == QT.F32:
            data = raw.view(np.float32).reshape(shape)
        elif qtype == QT.F16:
            data = raw.view(np.float16).reshape(shape)
        else:  # block types and BF16: raw bytes, one row of blocks per matrix row
            data = raw.reshape(*shape[:-1], row_bytes)
        if name in tensors:
            raise ValueError(f"tensor {name} appears twice")
        tensors[name] = GGUFTensor(name, qtype, shape, data)
    return meta, tensors

"""Tests for quant.py: the NumPy references against gguf-py, the Numba kernels against the references, on random
blocks and on tensors quantized by llama.cpp itself.

The kernels compile once per machine (Numba caches them next to quant.py): the first run takes ~20 s longer.
"""
import numba
import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as T
from numba import njit

import models  # tests/models.py (on the path through conftest.py)
import quant

TYPES = sorted(quant.SUPPORTED)
IDS = [t.name for t in TYPES]

# Where each type keeps its fp16 scales, as byte offsets in a block: random bytes there could be inf or nan.
FP16_FIELDS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q2_K: [80, 82],
               T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def random_raw(qt, rows, cols, rng):
    """A random [rows, cols] matrix as GGUFReader would give it: every bit pattern of the quantized weights,
    sane fp16 scales (both signs, magnitudes down to fp16 subnormals)."""
    if qt == T.F32:
        return rng.standard_normal((rows, cols)).astype(np.float32)
    if qt == T.F16:
        return rng.standard_normal((rows, cols)).astype(np.float16)
    if qt == T.BF16:  # GGUFReader hands BF16 over as raw bytes
        return rng.integers(0, 256, (rows, 2 * cols), dtype=np.uint8) & np.uint8(0xBF)  # exponent < 128: finite
    block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, (rows, cols // block_size, type_size), dtype=np.uint8)  # [rows, n_blocks, bytes]
    for off in FP16_FIELDS[qt]:
        scale = rng.uniform(-1, 1, raw.shape[:2]) * 10.0 ** rng.uniform(-6, -1, raw.shape[:2])
        raw[:, :, off:off + 2] = scale.astype(np.float16).view(np.uint8).reshape(rows, -1, 2)
    return raw.reshape(rows, -1)


def check_product(y, x, W):
    """y (float32 from a kernel) against x @ W.T in float64, to 1e-5 of the result's magnitude."""
    ref = x.astype(np.float64) @ W.astype(np.float64).T
    assert y.shape == ref.shape and y.dtype == np.float32
    scale = max(np.abs(ref).max(), 1e-30)
    assert np.abs(y - ref).max() <= 1e-5 * scale, np.abs(y - ref).max() / scale


def check_matrix(raw, qt, shape, rng, ids=(0, -1)):
    """Every product of quant.py on one matrix against its dequantized reference."""
    m = quant.QMatrix(raw, qt, shape)
    W = quant.dequantize(raw, qt)                                       # [rows, cols]
    x = rng.standard_normal((7, shape[1])).astype(np.float32)           # [7, cols]
    check_product(quant.matmul(x[0], m), x[0], W)                       # decode: one token
    check_product(quant.matmul(x[:1], m), x[:1], W)                     # a one-token prompt
    check_product(quant.matmul(x, m), x, W)                             # a prompt of 7 tokens
    ids = np.array(ids) % shape[0]
    assert np.array_equal(quant.get_rows(m, ids), W[ids])


# ----------------------------------------------------------------------------------------------------------------
# NumPy references against gguf-py

@pytest.mark.parametrize("qt", TYPES, ids=IDS)
def test_reference_matches_gguf_on_random_blocks(qt):
    rng = np.random.default_rng(int(qt))
    raw = random_raw(qt, 19, 512, rng)
    ours = quant.dequantize(raw, qt)
    assert ours.dtype == np.float32 and ours.shape == (19, 512)
    assert np.array_equal(ours, gguf.quants.dequantize(raw, qt))
    # any leading shape, as in gguf-py: (..., bytes_per_row) -> (..., n_per_row)
    assert np.array_equal(quant.dequantize(raw.reshape(1, 19, -1), qt), ours.reshape(1, 19, 512))


@pytest.mark.parametrize("qt", [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.BF16], ids=lambda t: t.name)
def test_reference_matches_gguf_on_quantized_data(qt):
    """Realistic blocks from gguf-py's quantizer (bit-identical to llama.cpp's), which does not do K-quants."""
    rng = np.random.default_rng(1)
    raw = gguf.quants.quantize(rng.standard_normal((33, 256)).astype(np.float32), qt)
    assert np.array_equal(quant.dequantize(raw, qt), gguf.quants.dequantize(raw, qt))


def test_fp16_decoder_on_every_bit_pattern():
    """The Numba fp16 decoder against NumPy's, on all 65536 halves: zeros, subnormals, normals, inf, nan."""
    @njit
    def decode_all():
        out = np.empty(65536, np.float32)
        for h in range(65536):
            out[h] = quant.fp16_to_f32(h)
        return out

    ours = decode_all()
    ref = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])  # bit-exact, signs of zero too


# ----------------------------------------------------------------------------------------------------------------
# Numba kernels against the references

# Rows not a multiple of the batched kernel's tile of 4, a single row, fewer rows than a tile.
SHAPES = [(1, 256), (3, 512), (37, 768), (130, 2048)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("qt", TYPES, ids=IDS)
def test_kernels_on_random_blocks(qt, shape):
    rng = np.random.default_rng(int(qt) * 1000 + shape[0])
    check_matrix(random_raw(qt, *shape, rng), qt, shape, rng, ids=(0, shape[0] - 1, 0, shape[0] // 2))


@pytest.mark.parametrize("cols", [32, 96])
@pytest.mark.parametrize("qt", [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1], ids=lambda t: t.name)
def test_kernels_on_short_rows_of_32_blocks(qt, cols):
    """Rows of 1 and 3 blocks: the kernels that take two blocks per step must handle an odd one at the end."""
    rng = np.random.default_rng(5)
    check_matrix(random_raw(qt, 5, cols, rng), qt, (5, cols), rng)


def test_matmul_arguments():
    rng = np.random.default_rng(2)
    raw = random_raw(T.Q4_K, 9, 256, rng)
    m = quant.QMatrix(raw, T.Q4_K, (9, 256))
    W = quant.dequantize(raw, T.Q4_K)
    x = rng.standard_normal((3, 512))                                    # float64, every other column used
    check_product(quant.matmul(x[:, ::2], m), x[:, ::2], W)             # converted to contiguous float32
    out = np.full((3, 9), np.nan, np.float32)
    assert quant.matmul(x[:, ::2], m, out=out) is out
    check_product(out, x[:, ::2], W)
    out1 = np.empty(9, np.float32)
    assert quant.matmul(x[0, ::2], m, out=out1) is out1
    check_product(out1, x[0, ::2], W)
    assert quant.matmul(np.zeros((0, 256), np.float32), m).shape == (0, 9)
    assert quant.get_rows(m, []).shape == (0, 256)
    with pytest.raises(ValueError):
        quant.matmul(np.zeros(255, np.float32), m)                       # wrong length
    with pytest.raises(ValueError):
        quant.matmul(np.zeros((2, 3, 256), np.float32), m)               # 3-D
    with pytest.raises(ValueError):
        quant.matmul(np.zeros(256, np.float32), m, out=np.empty(8, np.float32))
    with pytest.raises(ValueError):
        quant.matmul(np.zeros(256, np.float32), m, out=np.empty(9, np.float64))
    with pytest.raises(ValueError):
        quant.get_rows(m, [9])
    with pytest.raises(ValueError):
        quant.get_rows(m, [-1])


def test_set_threads():
    rng = np.random.default_rng(3)
    raw = random_raw(T.Q6_K, 21, 512, rng)
    m = quant.QMatrix(raw, T.Q6_K, (21, 512))
    x = rng.standard_normal((4, 512)).astype(np.float32)
    limit = numba.config.NUMBA_NUM_THREADS
    try:
        quant.set_threads(1)
        assert numba.get_num_threads() == 1
        check_product(quant.matmul(x, m), x, quant.dequantize(raw, T.Q6_K))
    finally:
        quant.set_threads(limit)
    for bad in (0, limit + 1, 1.5, "2"):
        with pytest.raises(ValueError):
            quant.set_threads(bad)


def test_qmatrix_validation():
    rng = np.random.default_rng(4)
    raw = random_raw(T.Q4_0, 4, 64, rng)                                 # [4, 36] bytes
    m = quant.QMatrix(raw, T.Q4_0, (4, 64))
    assert (m.rows, m.cols, m.shape, m.qtype) == (4, 64, (4, 64), T.Q4_0) and m.data is raw
    quant.QMatrix(raw.reshape(-1), T.Q4_0, (4, 64))                      # flat bytes are fine
    bad = [
        (raw[:, :-1], T.Q4_0, (4, 64)),                                  # rows one byte short
        (raw[:3], T.Q4_0, (4, 64)),                                      # a row missing
        (raw, T.Q4_0, (4, 60)),                                          # cols not whole blocks
        (raw, T.Q4_0, (2, 128)),                                         # byte count right, rows wrong
        (raw, T.Q4_1, (4, 64)),                                          # type/size mismatch
        (raw, T.IQ4_NL, (4, 64)),                                        # a type we do not support
        (raw, 9999, (4, 64)),                                            # no such type
        (raw, T.Q4_0, (4, 64, 1)),                                       # not 2-D
        (raw.view(np.int8), T.Q4_0, (4, 64)),                            # wrong dtype
        (np.zeros((64, 4), np.float32), T.F32, (4, 64)),                 # shape in GGUF order
        (np.zeros((4, 64), np.float64), T.F32, (4, 64)),                 # float64 is not F32
    ]
    for data, qt, shape in bad:
        with pytest.raises(ValueError):
            quant.QMatrix(data, qt, shape)


# ----------------------------------------------------------------------------------------------------------------
# Tensors quantized by llama.cpp itself (llama-cpp-python is a test requirement: no llama_cpp, no pass)

FTYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K",
          "F16", "BF16"]


@pytest.fixture(scope="module")
def llamacpp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    src = str(d / "f32.gguf")
    models.write_tiny_llama(src, qtype="F32", seed=7)
    out = {}
    for ftype in FTYPES:
        out[ftype] = str(d / f"{ftype}.gguf")
        models.llamacpp_quantize(src, out[ftype], ftype)
    return out


@pytest.mark.parametrize("ftype", FTYPES)
def test_llamacpp_tensors(llamacpp_files, ftype):
    rng = np.random.default_rng(6)
    reader = gguf.GGUFReader(llamacpp_files[ftype])
    seen = set()
    for t in reader.tensors:
        qt = T(t.tensor_type)
        assert qt in quant.SUPPORTED, f"{t.name}: {qt.name}"
        seen.add(qt)
        assert np.array_equal(quant.dequantize(t.data, qt), gguf.quants.dequantize(t.data, qt)), t.name
        if len(t.shape) == 2:
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))   # numpy order: the reverse of GGUF's ne
            check_matrix(t.data, qt, shape, rng)
    main = T[ftype[:4]] if ftype.endswith(("_S", "_M")) else T[ftype]    # "Q4_K_M" is mostly Q4_K
    assert main in seen, (ftype, seen)


def test_llamacpp_files_cover_every_quantized_type(llamacpp_files):
    seen = set()
    for path in llamacpp_files.values():
        seen |= {T(t.tensor_type) for t in gguf.GGUFReader(path).tensors}
    assert seen == set(quant.SUPPORTED), set(quant.SUPPORTED) - seen


# ----------------------------------------------------------------------------------------------------------------
# The int8 path against llama.cpp's own CPU kernels (tests/ggml_oracle.py calls them through ctypes)

import ggml_oracle  # noqa: E402

QK_K = quant.QK_K


def check_int8(raw, qt, shape, rng, n=3):
    """quant.matmul on the int8 path against ggml's vec_dot, for one token and for a prompt of n tokens, with
    the AVX2 kernels and with the fallback (the float kernels on activations rounded like ggml's)."""
    m = quant.QMatrix(raw, qt, shape, kernels="int8")
    x = (rng.standard_normal((n, shape[1])) * 3).astype(np.float32)     # [n, cols]
    x[0, :min(QK_K, shape[1])] = 0                                      # an all-zero block: a zero scale
    ref = np.stack([ggml_oracle.matvec(raw, qt, x[t]) for t in range(n)])   # [n, rows]
    scale = max(np.abs(ref).max(), 1e-30)
    for avx2 in sorted({quant.HAVE_AVX2, False}):
        saved, quant.HAVE_AVX2 = quant.HAVE_AVX2, avx2
        try:
            one = quant.matmul(x[1], m)                                 # [rows]
            many = quant.matmul(x, m)                                   # [n, rows]
        finally:
            quant.HAVE_AVX2 = saved
        assert np.abs(one - ref[1]).max() <= 1e-5 * scale, (avx2, np.abs(one - ref[1]).max() / scale)
        assert np.abs(many - ref).max() <= 1e-5 * scale, (avx2, np.abs(many - ref).max() / scale)


@pytest.mark.parametrize("qt", TYPES, ids=IDS)
def test_int8_path_matches_ggml_on_random_blocks(qt):
    rng = np.random.default_rng(int(qt) + 100)
    assert quant.X_TYPE.get(qt, qt) == {T.Q8_0: 0, T.Q8_1: 1, T.Q8_K: 2}.get(ggml_oracle.vec_dot_type(qt), qt)
    shapes = [(16, 512), (5, 256)] + ([(3, 96)] if gguf.GGML_QUANT_SIZES[qt][0] == 32 else [])  # 3 blocks: odd
    for shape in shapes:
        check_int8(random_raw(qt, *shape, rng), qt, shape, rng)


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q6_K", "Q8_0", "Q4_1"])
def test_int8_path_matches_ggml_on_llamacpp_tensors(llamacpp_files, ftype):
    rng = np.random.default_rng(8)
    for t in gguf.GGUFReader(llamacpp_files[ftype]).tensors:
        if len(t.shape) == 2:
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))
            check_int8(t.data, T(t.tensor_type), shape, rng)


@pytest.mark.parametrize("qt", [T.Q8_0, T.Q4_1, T.Q4_K], ids=["Q8_0", "Q8_1", "Q8_K"])
def test_activation_quantizers_match_ggml_bytes(qt):
    """Our NumPy references and the Numba twin produce the very bytes ggml's from_float writes."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(4096) * 10.0 ** rng.uniform(-6, 3, 4096)).astype(np.float32)
    x[:256] = 0                                                         # all-zero blocks
    x[256:512] = np.round(x[256:512] * 2) / 2                           # ties for the rounding
    x[512:768] *= np.float32(1e-6)                                      # an fp16-subnormal scale
    ref = ggml_oracle.quantize_x(x, qt)
    xtype = quant.X_TYPE[qt]
    size = QK_K if xtype == quant.Q8_K_X else 32
    blocks = x.reshape(-1, size)
    y, yd, ys, bs = quant.quantize_x(x.reshape(1, -1), qt)              # the Numba twin
    if xtype == quant.Q8_0_X:
        q, d = quant.quantize_x_q8_0(blocks)
        ours = [d.astype(np.float16).view(np.uint8).reshape(-1, 2), q.view(np.uint8)]
        twin = [yd[0].astype(np.float16).view(np.uint8).reshape(-1, 2), y.view(np.uint8).reshape(-1, size)]
    elif xtype == quant.Q8_1_X:
        q, d, s = quant.quantize_x_q8_1(blocks)
        f16 = lambda v: v.astype(np.float16).view(np.uint8).reshape(-1, 2)  # noqa: E731
        ours = [f16(d), f16(s), q.view(np.uint8)]
        twin = [f16(yd[0]), f16(ys[0]), y.view(np.uint8).reshape(-1, size)]
    else:
        q, d, sums = quant.quantize_x_q8_k(blocks)
        ours = [d.view(np.uint8).reshape(-1, 4), q.view(np.uint8), sums.view(np.uint8).reshape(-1, 32)]
        twin = [yd[0].view(np.uint8).reshape(-1, 4), y.view(np.uint8).reshape(-1, size),
                bs[0].view(np.uint8).reshape(-1, 32)]
    assert np.array_equal(np.concatenate(ours, axis=1).reshape(-1), ref)
    assert np.array_equal(np.concatenate(twin, axis=1).reshape(-1), ref)


def test_fp16_rounding_twin_matches_numpy():
    rng = np.random.default_rng(4)
    v = np.concatenate([rng.standard_normal(20000) * 10.0 ** rng.uniform(-9, 5, 20000),
                        np.arange(-2048, 2049) * 2.0 ** -25, [0.0, 65504.0, 65519.0, 65520.0, -1e9]]).astype(np.float32)
    twin = njit(lambda a: np.array([quant.fp16_nearest_nb(e) for e in a], np.float32))(v)
    assert np.array_equal(twin, quant.fp16_nearest(v))


def test_qmatrix_kernels_argument():
    with pytest.raises(ValueError, match="kernels"):
        quant.QMatrix(np.zeros((1, 32), np.float32), T.F32, (1, 32), kernels="fast")

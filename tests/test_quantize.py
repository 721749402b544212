"""Tests for quant.quantize, the way from float weights to GGUF blocks.

The formula types (F32, F16, BF16, Q8_0, Q4_0) must be bit-identical to gguf-py's quantizer, which is itself
bit-identical to llama.cpp's. Q4_K and Q6_K are searches with no unique answer, so they are held to what matters:
their bytes decode the same in gguf-py and in quant.py, llama.cpp loads and runs a file of them, and their
round-trip error is no worse than that of llama.cpp's own quantizer on the same tensors.

    pytest -s tests/test_quantize.py     # -s prints the error ratios against llama.cpp
"""

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as T

import models  # tests/models.py (on the path through conftest.py)
import quant


def rms(e):
    return float(np.sqrt(np.mean(np.square(e, dtype=np.float64))))


# ----------------------------------------------------------------------------------------------------------------
# The formula types: bit for bit against gguf-py

def tensors(rng):
    """name -> float32 tensor: the cases where a quantizer's conventions show (ties, signs, zeros, tiny scales)."""
    halves = rng.integers(-254, 255, (8, 64)) / 2
    halves[:, ::32] = 127         # Q8_0: d = 127 / 127 = 1 exactly, so every x.5 is a tie for round-half-away
    halves[:, 1] = np.nextafter(np.float32(0.5), np.float32(0))  # rounds to 0, though 0.49999997 + 0.5 gives 1
    small_halves = rng.integers(-16, 16, (8, 64)) / 2
    small_halves[:, ::32] = -8    # Q4_0: d = -8 / -8 = 1 exactly, so x + 8.5 lands on whole numbers
    outliers = rng.standard_normal((16, 256))
    outliers[rng.uniform(size=outliers.shape) < 0.01] *= 100
    zero_rows = rng.standard_normal((6, 128))
    zero_rows[::2] = 0
    same_magnitude = np.tile([3.0, -3.0], (4, 32))  # Q4_0 takes the first of equal magnitudes: +3 here
    cases = {
        "normal": rng.standard_normal((32, 256)) / 16,
        "uniform": rng.uniform(-1, 1, (3, 5, 96)),
        "positive": rng.uniform(0, 2, (4, 64)),
        "outliers": outliers,
        "zero_rows": zero_rows,
        "tiny": rng.standard_normal((4, 64)) * 1e-30,
        "fp16_subnormal_scales": rng.standard_normal((4, 64)) * 1e-6,
        "halves": halves,
        "small_halves": small_halves,
        "same_magnitude": same_magnitude,
        "one_block": rng.standard_normal(32),
    }
    return {name: x.astype(np.float32) for name, x in cases.items()}


FORMULA_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0]


@pytest.mark.parametrize("qt", FORMULA_TYPES, ids=[t.name for t in FORMULA_TYPES])
def test_formula_types_bit_identical_to_gguf(qt):
    for name, x in tensors(np.random.default_rng(0)).items():
        ours, theirs = quant.quantize(x, qt), gguf.quants.quantize(x, qt)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        assert np.array_equal(ours.view(np.uint8), theirs.view(np.uint8)), name


def test_bf16_keeps_nan_and_inf():
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 3.4e38, -0.0, 1e-40], np.float32)
    x = np.concatenate([x, np.uint32([0x7F800001, 0xFFFFFFFF]).view(np.float32)])  # signalling and all-ones NaN
    assert np.array_equal(quant.quantize(x, T.BF16), gguf.quants.quantize(x, T.BF16))


def test_quantize_accepts_float64_and_lists():
    x = np.random.default_rng(1).standard_normal((2, 64))
    assert np.array_equal(quant.quantize(x, T.Q8_0), gguf.quants.quantize(x, T.Q8_0))
    assert np.array_equal(quant.quantize(x.tolist(), T.Q4_0), gguf.quants.quantize(x, T.Q4_0))


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError):
        quant.quantize(np.zeros((2, 48), np.float32), T.Q8_0)      # not whole blocks of 32
    with pytest.raises(ValueError):
        quant.quantize(np.zeros((2, 128), np.float32), T.Q4_K)     # not whole super-blocks of 256
    with pytest.raises(ValueError):
        quant.quantize(np.float32(1.0), T.Q8_0)                     # a scalar has no rows
    with pytest.raises(NotImplementedError):
        quant.quantize(np.zeros(256, np.float32), T.Q5_K)


# ----------------------------------------------------------------------------------------------------------------
# The K-quants: valid blocks, sensible on edge cases

K_TYPES = [T.Q4_K, T.Q6_K]


@pytest.mark.parametrize("qt", K_TYPES, ids=[t.name for t in K_TYPES])
def test_k_quants_decode_the_same_in_gguf_py(qt):
    rng = np.random.default_rng(2)
    for name, x in tensors(rng).items():
        x = np.resize(x, x.shape[:-1] + (256,))                    # whole super-blocks
        raw = quant.quantize(x, qt)
        assert raw.dtype == np.uint8 and raw.shape == gguf.quants.quant_shape_to_byte_shape(x.shape, qt), name
        y = quant.dequantize(raw, qt)
        assert np.array_equal(y, gguf.quants.dequantize(raw, qt)), name
        assert np.all(np.isfinite(y)), name


@pytest.mark.parametrize("qt", K_TYPES, ids=[t.name for t in K_TYPES])
def test_k_quants_edge_cases(qt):
    rng = np.random.default_rng(3)
    x = np.zeros((6, 512), np.float32)
    x[1] = 0.3                                                      # constant
    x[2] = rng.uniform(0.5, 1.0, 512)                               # all positive: Q4_K's min stays at 0
    x[3] = -rng.uniform(0.5, 1.0, 512)                              # all negative
    x[4, ::97] = 5.0                                                # a few spikes among zeros
    x[5] = rng.standard_normal(512) * 1e-30                         # below fp16's smallest scale
    y = quant.dequantize(quant.quantize(x, qt), qt)
    assert np.all(np.isfinite(y))
    assert np.array_equal(y[0], x[0])                               # zeros stay exactly zero
    assert np.all(y[5] == 0)
    step = {T.Q4_K: 1 / 15, T.Q6_K: 1 / 32}[qt]                     # one step of the grid, for weights up to 1
    assert np.abs(y[1:4] - x[1:4]).max() <= step
    assert np.abs(y[4] - x[4]).max() <= 5.0 * 1e-3


def test_k_quants_chunking_does_not_change_the_bytes():
    """quantize works through large tensors a chunk of blocks at a time: the result must not depend on that."""
    x = np.random.default_rng(4).standard_normal((1100, 256)).astype(np.float32)  # 1100 super-blocks > 1 chunk
    for qt in K_TYPES:
        whole = quant.quantize(x, qt)
        parts = np.concatenate([quant.quantize(x[:7], qt), quant.quantize(x[7:], qt)])
        assert np.array_equal(whole, parts)


# ----------------------------------------------------------------------------------------------------------------
# The K-quants against llama.cpp's own quantizer, on the same tensors

def matrices(kind):
    """A maker of weight matrices, make(rng, rows, cols), of one distribution."""
    def make(rng, rows, cols):
        g = rng.standard_normal((rows, cols)) / np.sqrt(cols)       # what the tiny models use
        if kind == "normal":
            return g
        if kind == "student_t3":                                    # heavy tails: outliers in every row
            return rng.standard_t(3, (rows, cols)) / np.sqrt(3 * cols)
        if kind == "row_scales":                                    # rows (output channels) of unequal size
            return g * np.exp(rng.standard_normal((rows, 1)))
        if kind == "col_scales":                                    # columns (input channels) of unequal size
            return g * np.exp(rng.standard_normal((1, cols)))
        raise ValueError(kind)
    return make


def write_model(path, make, seed):
    """A tiny Llama GGUF in F32 with models.write_tiny_llama's metadata and tensor names, but with every matrix
    drawn by make(rng, rows, cols): llama.cpp only quantizes files of a model it knows, so the tensors under
    test travel inside one. -> {name: float32 matrix}."""
    rng = np.random.default_rng(seed)
    models.write_tiny_llama(path, qtype="F32", make_matrix=lambda rows, cols: make(rng, rows, cols))
    _, ts = quant.read_gguf(path)
    return {name: np.array(t.data) for name, t in ts.items() if len(t.shape) == 2}


DISTRIBUTIONS = ["normal", "student_t3", "row_scales", "col_scales"]


@pytest.mark.parametrize("kind", DISTRIBUTIONS)
def test_k_quants_error_no_worse_than_llamacpp(kind, tmp_path):
    src = str(tmp_path / "f32.gguf")
    originals = write_model(src, matrices(kind), seed=DISTRIBUTIONS.index(kind))
    # llama.cpp's choice of type per tensor: Q4_K_M makes most matrices Q4_K (a few Q6_K), Q6_K makes all Q6_K.
    theirs = {}
    for ftype in ("Q4_K_M", "Q6_K"):
        dst = str(tmp_path / f"{ftype}.gguf")
        models.llamacpp_quantize(src, dst, ftype)
        for name, t in quant.read_gguf(dst)[1].items():
            if name in originals and t.qtype in K_TYPES:
                theirs[t.qtype, name] = t.data
    assert {qt for qt, _ in theirs} == set(K_TYPES)
    for qt in K_TYPES:
        ours_sq = theirs_sq = n = 0.0
        ours_max = theirs_max = worst = 0.0
        for (t, name), data in theirs.items():
            if t != qt:
                continue
            x = originals[name]
            e_ours = quant.dequantize(quant.quantize(x, qt), qt) - x
            e_theirs = quant.dequantize(data, qt) - x
            # tensor by tensor: a little slack, since a small tensor's RMSE is itself a noisy estimate
            worst = max(worst, rms(e_ours) / rms(e_theirs))
            assert worst <= 1.02, (name, worst)
            ours_sq, theirs_sq, n = ours_sq + np.sum(np.square(e_ours, dtype=np.float64)), \
                theirs_sq + np.sum(np.square(e_theirs, dtype=np.float64)), n + x.size
            ours_max, theirs_max = max(ours_max, np.abs(e_ours).max()), max(theirs_max, np.abs(e_theirs).max())
        rmse_ratio, max_ratio = np.sqrt(ours_sq / theirs_sq), ours_max / theirs_max
        print(f"\n{kind:>10} {qt.name}: {int(n)} weights, RMSE {np.sqrt(ours_sq / n):.3e} vs llama.cpp's "
              f"{np.sqrt(theirs_sq / n):.3e} (x{rmse_ratio:.4f}; worst tensor x{worst:.4f}), "
              f"max error x{max_ratio:.3f}")
        assert rmse_ratio <= 1.0
        # The largest error is about half of the largest step in both quantizers, so it agrees only to the luck of
        # where single weights fall between two levels.
        assert max_ratio <= 1.05


# ----------------------------------------------------------------------------------------------------------------
# A model quantized by us: read back, multiplied by quant.matmul, and run by llama.cpp

@pytest.mark.parametrize("qt", K_TYPES, ids=[t.name for t in K_TYPES])
def test_our_k_quant_model_round_trip(qt, tmp_path):
    src, ours = str(tmp_path / "f32.gguf"), str(tmp_path / "ours.gguf")
    models.write_tiny_llama(src, qtype="F32", seed=5)
    models.write_tiny_llama(ours, qtype=qt.name, seed=5, quantize=quant.quantize)  # quantized by our code
    _, f32 = quant.read_gguf(src)
    _, ts = quant.read_gguf(ours)
    rng = np.random.default_rng(6)
    for name, t in ts.items():
        if len(t.shape) != 2:
            continue
        assert t.qtype == qt and np.array_equal(t.data, quant.quantize(f32[name].data, qt)), name
        W = quant.dequantize(t.data, qt)                                # [rows, cols]
        m = quant.QMatrix(t.data, t.qtype, t.shape)
        x = rng.standard_normal((3, t.shape[1])).astype(np.float32)     # [3, cols]
        for xs in (x[0], x):                                            # one token, and a prompt
            ref = xs.astype(np.float64) @ W.T.astype(np.float64)
            assert np.abs(quant.matmul(xs, m) - ref).max() <= 1e-5 * np.abs(ref).max(), name


def test_llamacpp_runs_our_files(tmp_path):
    """llama.cpp reads our Q6_K file and its logits are as close to its F32 logits as with its own Q6_K file
    (within noise: the logits of a random model magnify small differences); the same for Q4_K against its Q4_K_M."""
    import llama_cpp

    src = str(tmp_path / "f32.gguf")
    models.write_tiny_llama(src, qtype="F32", seed=1)
    ids = [264, 40, 41, 42, 100, 200, 7, 9, 50, 60, 70, 80]

    def logits(path):
        llm = llama_cpp.Llama(path, n_ctx=32, n_threads=2, logits_all=True, verbose=False)
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)])

    ref = logits(src)
    for qt, ftype in ((T.Q6_K, "Q6_K"), (T.Q4_K, "Q4_K_M")):
        ours, theirs = str(tmp_path / f"ours-{qt.name}.gguf"), str(tmp_path / f"{ftype}.gguf")
        models.write_tiny_llama(ours, qtype=qt.name, seed=1, quantize=quant.quantize)
        models.llamacpp_quantize(src, theirs, ftype)
        e_ours, e_theirs = rms(logits(ours) - ref), rms(logits(theirs) - ref)
        print(f"\nllama.cpp logits vs F32: our {qt.name} file {e_ours:.4f}, its own {ftype} file {e_theirs:.4f}")
        assert e_ours <= 1.25 * e_theirs

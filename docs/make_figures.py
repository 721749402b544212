"""
docs/make_figures.py - draws the figures of docs/replit.md from the models' own code.

    python docs/make_figures.py               # write docs/figures/*.png
    python docs/make_figures.py --out DIR     # write them somewhere else (the tests do)

Every curve comes from a function of llama3.py or replit.py, never from a formula copied here: RoPE frequencies
from llama3.RunState's tables, ALiBi from replit.alibi_slopes and replit.alibi_bias, the activations from
llama3.silu and replit.gelu. matplotlib is the `docs` extra (pip install '.[docs]'); nothing else imports it.
"""
import argparse
import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import llama3  # noqa: E402  (first: it limits NumPy's BLAS threads before NumPy loads)
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402  (tests/models.py: Llama 3.1's rope_freqs, as the tests write them)
import replit  # noqa: E402

# Replit Code V1.5 3B's attention: 24 query heads over 8 key/value heads, MPT's alibi_bias_max of 8.
REPLIT_HEADS, REPLIT_KV_HEADS, ALIBI_BIAS_MAX = 24, 8, 8.0
# Llama 3 / 3.1 8B's RoPE: head size 128, base 500000; 3.1's scaling as in Meta's config.
LLAMA_HEAD, LLAMA_THETA = 128, 500000.0
LLAMA31_SCALING = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=8192)

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.grid": True, "grid.alpha": 0.3,
                     "savefig.dpi": 110, "savefig.bbox": "tight"})


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, metadata={"Software": None})  # no version string: the bytes depend only on the drawing
    plt.close(fig)
    return path


def rope_frequencies(rope_freqs):
    """The frequency of each pair, read back from llama3.RunState's tables: at position 1 the angle is the
    frequency. A config with one layer and two positions is enough for the tables."""
    cfg = llama3.Config(dim=4096, hidden_dim=14336, n_layers=1, n_heads=32, n_kv_heads=8, head_size=LLAMA_HEAD,
                        vocab_size=128256, seq_len=131072, max_length=2, norm_eps=1e-5, rope_theta=LLAMA_THETA,
                        rope_dim=LLAMA_HEAD, name="Llama 3 / 3.1 8B")
    state = llama3.RunState(cfg, rope_freqs)
    return np.arctan2(state.rope_sin[1], state.rope_cos[1]).astype(np.float64)  # [head/2]


def figure_rope(out):
    factors = models.llama3_rope_factors(LLAMA_HEAD, LLAMA_THETA, **LLAMA31_SCALING)        # [64]
    f30 = rope_frequencies(np.ones(LLAMA_HEAD // 2, np.float32))
    f31 = rope_frequencies(factors)
    pairs = np.arange(LLAMA_HEAD // 2)
    ctx = LLAMA31_SCALING["original_context"]
    short = ctx / LLAMA31_SCALING["high_freq_factor"]

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    ax.semilogy(pairs, f30, "o-", ms=5, lw=3, label="Llama 3: $500000^{-2i/128}$")
    ax.semilogy(pairs, f31, "s-", ms=3, label="Llama 3.1: divided by rope_freqs (same up to pair 28)")
    ax.axhline(2 * np.pi / short, color="gray", ls="--", lw=1)
    ax.text(pairs[-1], 2 * np.pi / short * 1.3, "wavelength 2048 tokens", ha="right", fontsize=9, color="dimgray")
    ax.axhline(2 * np.pi / ctx, color="gray", ls="--", lw=1)
    ax.text(pairs[-1], 2 * np.pi / ctx / 1.3, "wavelength 8192 tokens", ha="right",
            va="top", fontsize=9, color="dimgray")
    ax.set_xlabel("pair i (dimensions 2i, 2i+1 of a 128-wide head)")
    ax.set_ylabel("frequency (radians per token)")
    ax.set_title("RoPE frequency of each pair")
    ax.legend(loc="upper right", fontsize=10)

    bx.plot(pairs, factors, "s-", ms=3, color="C1")
    kept, scaled = pairs[factors == 1], pairs[factors == LLAMA31_SCALING["factor"]]
    bx.axvspan(kept[-1], scaled[0], color="C2", alpha=0.15, label="blended")
    bx.set_xlabel("pair i")
    bx.set_ylabel("divisor in rope_freqs")
    bx.set_title("Llama 3.1's rope_freqs")
    bx.text(kept[-1] / 2, 1.4, "kept\n(wavelength < 2048)", ha="center", fontsize=9)
    bx.text((scaled[0] + pairs[-1]) / 2, 6.6, "slowed 8x\n(wavelength > 8192)", ha="center", fontsize=9)
    bx.set_ylim(0, 9)
    bx.legend(loc="center left")
    return save(fig, out, "rope_frequencies.png")


def figure_alibi_slopes(out):
    slopes = replit.alibi_slopes(REPLIT_HEADS, ALIBI_BIAS_MAX)                   # [24]
    power_of_two = replit.alibi_slopes(32, ALIBI_BIAS_MAX)                       # [32]: the plain formula
    heads = np.arange(REPLIT_HEADS)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.plot(heads[:16], slopes[:16], "o-", color="C0",
            label="heads 0-15: the odd-indexed slopes of 32 heads, $2^{-1/2}, 2^{-1}, ..., 2^{-8}$")
    ax.plot(heads[16:], slopes[16:], "o-", color="C1",
            label="heads 16-23: the first 8 even-indexed ones, $2^{-1/4}, 2^{-3/4}, ..., 2^{-15/4}$")
    ax.plot(heads, power_of_two[1::2].tolist() + power_of_two[0:16:2].tolist(), "kx", ms=5,
            label="the same slopes taken from replit.alibi_slopes(32, 8)")
    ax.set_yscale("log", base=2)
    ax.set_xticks(heads)
    ax.set_xlabel("head h")
    ax.set_ylabel("slope (log scale)")
    ax.set_title("ALiBi slopes of Replit Code's 24 heads: replit.alibi_slopes(24, 8)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=9)
    return save(fig, out, "alibi_slopes.png")


def figure_alibi_bias(out):
    T = 32
    slopes = replit.alibi_slopes(REPLIT_HEADS, ALIBI_BIAS_MAX)
    kv_mul = REPLIT_HEADS // REPLIT_KV_HEADS
    bias = replit.alibi_bias(slopes, 0, T, T, kv_mul).reshape(REPLIT_HEADS, T, T)  # [head, query, key]
    future = np.arange(T)[None, :] > np.arange(T)[:, None]                          # the causal mask

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.3, 1]})
    for h in (0, 1, 3, 16, 20, 23):
        ax.plot(np.arange(T), bias[h, T - 1], "o-", ms=3, label=f"head {h}: slope {slopes[h]:.3g}")
    ax.set_xlabel(f"key position j (the query is the last token, i = {T - 1})")
    ax.set_ylabel("bias added to the score: -slope * (i - j)")
    ax.set_title("ALiBi: farther keys get lower scores")
    ax.legend(fontsize=9, loc="upper left")

    h = 16
    shown = np.where(future, np.nan, bias[h])
    im = bx.imshow(shown, cmap="viridis", origin="upper")
    bx.set_xlabel("key position j")
    bx.set_ylabel("query position i")
    bx.set_title(f"head {h}'s bias; blank: masked (j > i)")
    bx.grid(False)
    fig.colorbar(im, ax=bx, shrink=0.85, label="bias")
    return save(fig, out, "alibi_bias.png")


def figure_activations(out):
    x = np.linspace(-5, 5, 401, dtype=np.float32)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
    ax.plot(x, replit.gelu(x), lw=2, label="GELU: x * Phi(x)  (replit.gelu, MPT)")
    ax.plot(x, llama3.silu(x), lw=2, ls="--", label="SiLU: x * sigmoid(x)  (llama3.silu, Llama)")
    ax.plot(x, np.maximum(x, 0), color="gray", lw=1, ls=":", label="ReLU, for comparison")
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    ax.set_title("The two activations")
    ax.set_ylim(-1, 5)
    ax.legend(loc="upper left", fontsize=9)

    g = np.linspace(-4, 4, 201, dtype=np.float32)
    gate, up = np.meshgrid(g, g)
    swiglu = llama3.silu(gate) * up                                                   # [201, 201]
    limit = np.abs(swiglu).max()
    im = bx.imshow(swiglu, extent=(-4, 4, -4, 4), origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
    bx.contour(gate, up, swiglu, levels=[-2, -1, -0.25, 0.25, 1, 2], colors="k", linewidths=0.6)
    bx.set_xlabel("gate  (x W1)")
    bx.set_ylabel("up  (x W3)")
    bx.set_title("SwiGLU: silu(gate) * up")
    bx.grid(False)
    fig.colorbar(im, ax=bx, shrink=0.85, label="output of one hidden unit")
    return save(fig, out, "activations.png")


FIGURES = [figure_rope, figure_alibi_slopes, figure_alibi_bias, figure_activations]


def main(argv=None):
    p = argparse.ArgumentParser(description="Draw the figures of docs/replit.md.")
    p.add_argument("--out", default=os.path.join(DOCS, "figures"), help="folder for the PNG files")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for figure in FIGURES:
        print(f"wrote {figure(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

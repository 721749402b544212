"""llama3.py's downloads of the default weights, against a fake Hugging Face hub on 127.0.0.1.

huggingface_hub reads $HF_ENDPOINT, $HF_HOME, ... when it is imported, so the code under test runs in a fresh
subprocess with those set: the endpoint is a small HTTP server in this process (a background thread) that answers
`HEAD` and `GET /{repo_id}/resolve/{revision}/{filename}` as the hub does for a file stored without Xet (X-Repo-Commit,
ETag / X-Linked-Etag, X-Linked-Size, Content-Length, Range requests, and the hub's X-Error-Code on errors), and the
cache is a temporary folder. Nothing leaves 127.0.0.1.

- A download lands in the cache with the served bytes; a second call needs no network (server stopped, or offline
  mode), and with the server up it asks only for the file's metadata, not its bytes again.
- A transfer cut off partway is resumed with a Range request and gives the right bytes.
- An unknown file or repo, or an unreachable hub, is a ModelError that names the repo and file and says to pass
  --model-path; through the command line it is one error line (after the download notice), exit status 1, no
  traceback, no retry warnings, and it comes promptly.
- `resolve_model_path("", version, encoding)` downloads MAX's default file for that version and encoding, and an
  encoding that has no default weights is refused before any request.
- The whole command line with no --model-path: it downloads a tiny model from the fake hub and generates from it.
"""
import hashlib
import http.server
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading

import pytest

from conftest import ROOT
import models

# MAX's default weights for --version 3.1 --quantization-encoding q4_k (the command line's defaults).
REPO = "modularai/llama-3.1"
Q4_K = "llama-3.1-8b-instruct-q4_k_m.gguf"
Q6_K = "llama-3.1-8b-instruct-q6_k.gguf"

# An unreachable hub must be reported within this many seconds (a Python start included), not after
# huggingface_hub's ~23 s of retries with backoff.
PROMPT_S = 10


def fake_bytes(n, seed):
    """n deterministic bytes, starting like a GGUF file."""
    return b"GGUF" + random.Random(seed).randbytes(n - 4)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    with open(path, "rb") as f:
        return sha256(f.read())


# ----------------------------------------------------------------------------------------------------------------------
# The fake hub


class FakeHub:
    """A hub serving `files` ({(repo_id, filename): bytes}) on http://127.0.0.1:<free port>. `requests` records
    (method, path, Range header) of every request; a file in `cut_once` has its first GET cut off after 7/8 of it."""

    def __init__(self, files):
        self.files = dict(files)
        self.repos = {repo for repo, _ in self.files}
        self.cut_once = set()
        self.requests = []
        self.lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()
        self.running = True

    def stop(self):
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.running = False

    @staticmethod
    def commit(repo_id):
        return hashlib.sha1(repo_id.encode()).hexdigest()  # 40 hex digits, as a git commit id

    def requests_for(self, filename, method=None):
        with self.lock:
            return [r for r in self.requests if r[1].endswith("/" + filename) and method in (None, r[0])]

    def answer(self, h, body):
        with self.lock:
            self.requests.append((h.command, h.path, h.headers.get("Range")))
        h.close_connection = True
        # /{owner}/{name}/resolve/{revision}/{filename}
        parts = h.path.split("?")[0].lstrip("/").split("/", 4)
        if len(parts) != 5 or parts[2] != "resolve":
            return self.error(h, 404, None, "Not Found")
        repo_id, revision, filename = parts[0] + "/" + parts[1], parts[3], parts[4]
        if repo_id not in self.repos:  # the hub says 401 for a repo it does not show, private or absent
            return self.error(h, 401, "RepoNotFound", "Repository not found")
        commit = self.commit(repo_id)
        if revision not in ("main", commit):
            return self.error(h, 404, "RevisionNotFound", "Invalid rev id: " + revision)
        data = self.files.get((repo_id, filename))
        if data is None:
            return self.error(h, 404, "EntryNotFound", f"{filename} does not exist on \"main\"", commit)

        start, end, status = 0, len(data) - 1, 200
        rng = h.headers.get("Range")
        if rng and body:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end, status = int(first), (int(last) if last else len(data) - 1), 206
            if start >= len(data):
                return self.error(h, 416, None, "Range Not Satisfiable")
        chunk = data[start:end + 1]
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(chunk)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{sha256(data)}"')
        h.send_header("X-Repo-Commit", commit)
        h.send_header("X-Linked-Etag", f'"{sha256(data)}"')
        h.send_header("X-Linked-Size", str(len(data)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        h.end_headers()
        if not body:
            return
        key = (repo_id, filename)
        if key in self.cut_once:
            self.cut_once.discard(key)
            h.wfile.write(chunk[:len(chunk) * 7 // 8])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
            return
        h.wfile.write(chunk)

    @staticmethod
    def error(h, status, code, message, commit=None):
        payload = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        if code:
            h.send_header("X-Error-Code", code)
            h.send_header("X-Error-Message", message)
        if commit:
            h.send_header("X-Repo-Commit", commit)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)


FILES = {
    (REPO, Q4_K): fake_bytes(300_000, "q4_k"),
    (REPO, Q6_K): fake_bytes(12 << 20, "q6_k"),   # over huggingface_hub's 10 MiB read chunk: a cut can be resumed
    ("modularai/llama-3", "llama-3-8b-instruct-q4_k_m.gguf"): fake_bytes(1000, "3.0"),
}


@pytest.fixture
def hub():
    h = FakeHub(FILES)
    yield h
    h.stop()


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------------
# Running llama3.py in a subprocess with the hub's environment

RUNNER = r"""
import json, sys
import llama3
call = sys.argv[1]
try:
    if call == "hub_download":
        result = {"path": llama3.hub_download(sys.argv[2], sys.argv[3])}
    else:
        result = {"path": llama3.resolve_model_path(sys.argv[2], sys.argv[3], sys.argv[4])}
except llama3.ModelError as e:
    result = {"error": str(e)}
print("RESULT " + json.dumps(result))
"""


def hub_env(endpoint, hf_home, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy") and k != "PYTHONPATH"}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_CACHE=os.path.join(hf_home, "hub"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_IMPLICIT_TOKEN="1", HF_HUB_DISABLE_UPDATE_CHECK="1",
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5", NO_PROXY="127.0.0.1,localhost")
    env.update(extra)
    return env


def run(argv, env, timeout):
    """Run a command in the repo root; a command that outlives `timeout` fails the test with what it wrote."""
    try:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{argv[1:]} did not finish within {timeout} s; stderr so far:\n{err[-3000:]}")


def run_py(env, *args, timeout=60):
    r = run([sys.executable, "-c", RUNNER, *args], env, timeout)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):]), r.stderr


def download(env, repo_id, filename):
    return run_py(env, "hub_download", repo_id, filename)[0]


def assert_model_error(result, *names):
    assert "error" in result, f"expected a ModelError, got {result}"
    message = result["error"]
    assert "\n" not in message, f"the message should be one line: {message!r}"
    assert "--model-path" in message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


# ----------------------------------------------------------------------------------------------------------------------
# Tests


def test_download_lands_in_the_cache_with_the_served_bytes(hub, tmp_path):
    result = download(hub_env(hub.url, tmp_path), REPO, Q4_K)
    path = result.get("path")
    assert path and os.path.isfile(path), result
    assert os.path.realpath(path).startswith(str(tmp_path)), "the file should be in $HF_HOME's cache"
    assert os.path.basename(path) == Q4_K
    assert file_sha256(path) == sha256(FILES[REPO, Q4_K])
    assert len(hub.requests_for(Q4_K, "GET")) == 1


def test_cached_file_needs_no_network(hub, tmp_path):
    env = hub_env(hub.url, tmp_path)
    first = download(env, REPO, Q4_K)["path"]

    # The hub is up: only the metadata is asked for, the bytes are not fetched again.
    assert download(env, REPO, Q4_K)["path"] == first
    assert [m for m, _, _ in hub.requests_for(Q4_K)].count("GET") == 1

    # Offline mode: no request at all.
    n = len(hub.requests)
    assert download({**env, "HF_HUB_OFFLINE": "1"}, REPO, Q4_K)["path"] == first
    assert len(hub.requests) == n

    # The hub is gone: the cached file, promptly.
    hub.stop()
    assert run_py(env, "hub_download", REPO, Q4_K, timeout=PROMPT_S)[0]["path"] == first
    assert file_sha256(first) == sha256(FILES[REPO, Q4_K])


def test_cut_off_transfer_is_resumed(hub, tmp_path):
    """huggingface_hub keeps what it has read in 10 MiB pieces: a 12 MiB file cut off after 10.5 MiB is resumed
    from 10 MiB with a Range request."""
    hub.cut_once.add((REPO, Q6_K))
    result = download(hub_env(hub.url, tmp_path), REPO, Q6_K)
    assert file_sha256(result["path"]) == sha256(FILES[REPO, Q6_K])
    gets = hub.requests_for(Q6_K, "GET")
    assert len(gets) == 2 and gets[0][2] is None and gets[1][2] and gets[1][2].startswith("bytes="), gets
    assert 0 < int(gets[1][2].removeprefix("bytes=").split("-")[0]) < len(FILES[REPO, Q6_K])


@pytest.mark.parametrize("repo_id, filename", [
    (REPO, "llama-3.1-8b-instruct-q2_k.gguf"),        # no such file in the repo: 404 EntryNotFound
    ("modularai/no-such-repo", Q4_K),                 # no such repo: 401 RepoNotFound
])
def test_unknown_file_or_repo_is_a_model_error(hub, tmp_path, repo_id, filename):
    result = download(hub_env(hub.url, tmp_path), repo_id, filename)
    assert_model_error(result, repo_id, filename)
    assert hub.requests_for(filename), "the hub should have been asked"


def test_resolve_model_path_downloads_max_default_weights(hub, tmp_path):
    env = hub_env(hub.url, tmp_path)
    result, stderr = run_py(env, "resolve_model_path", "", "3.1", "q4_k")
    assert os.path.basename(result["path"]) == Q4_K
    assert file_sha256(result["path"]) == sha256(FILES[REPO, Q4_K])
    assert hub.requests_for(Q4_K, "GET")

    result, _ = run_py(env, "resolve_model_path", "", "3.1", "q6_k")
    assert file_sha256(result["path"]) == sha256(FILES[REPO, Q6_K])

    n = len(hub.requests)
    result, _ = run_py(env, "resolve_model_path", "", "3.0", "float32")  # Llama 3 has no float32 GGUF
    assert "error" in result and "float32" in result["error"], result
    assert len(hub.requests) == n, "weights that do not exist should be refused before any request"

    # A path given is used as it is: no hub.
    given = str(tmp_path / "mine.gguf")
    result, _ = run_py(env, "resolve_model_path", given, "3.1", "q4_k")
    assert result["path"] == given
    assert len(hub.requests) == n


def test_unreachable_hub_is_a_prompt_model_error(tmp_path):
    env = hub_env(f"http://127.0.0.1:{closed_port()}", tmp_path)
    result, _ = run_py(env, "hub_download", REPO, Q4_K, timeout=PROMPT_S)
    assert_model_error(result, REPO, Q4_K)


def test_command_line_unreachable_hub_one_line_error(tmp_path):
    env = hub_env(f"http://127.0.0.1:{closed_port()}", tmp_path)
    r = run([sys.executable, "llama3.py", "--prompt", "hi"], env, timeout=PROMPT_S)
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("llama3.py: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "--model-path" in errors[0] and REPO in errors[0] and Q4_K in errors[0], errors[0]
    # Besides the error, at most the notice that the default weights are being downloaded: no retry warnings.
    others = [line for line in lines[:-1] if not line.startswith("no --model-path")]
    assert not others, "unexpected lines on stderr:\n" + "\n".join(others)
    assert r.stdout == ""


def test_command_line_downloads_the_default_model_and_generates(tmp_path):
    """No --model-path: the default q4_k file comes from the hub (here a tiny model under that name) and runs."""
    tiny = tmp_path / "tiny.gguf"
    models.write_tiny_llama(tiny, qtype="F32", seed=3)
    hub = FakeHub({(REPO, Q4_K): tiny.read_bytes()})
    try:
        env = hub_env(hub.url, tmp_path / "hf")
        r = run([sys.executable, "llama3.py", "--prompt", "hi", "--max-new-tokens", "3", "--max-length", "64",
                 "--temperature", "0"], env, timeout=120)
    finally:
        hub.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("hi")
    assert re.search(r"output size: [1-3] tokens", r.stderr), r.stderr[-3000:]
    assert hub.requests_for(Q4_K, "GET")
    cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "hf") for f in fs if f == Q4_K]
    assert cached and file_sha256(cached[0]) == sha256(tiny.read_bytes())

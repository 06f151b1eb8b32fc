"""An unreachable, silent, failing or offline Hub, and bad Hub ids: one line naming the problem, within seconds.

Every case runs the CLI in process against loopback servers only (127.0.0.1): a closed port, a listener that accepts
and never answers, or an HTTP server answering one status to everything. HF_ENDPOINT always points at one of them,
HF_HOME at an empty folder, SWINZOO_HUB_TIMEOUT is 1 s; nothing reaches the internet.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swinzoo import SwinConfig, SwinTransformer, save_model
from tests.bad_inputs.harness import fails_cleanly
from tests.hub_emulator import HubEmulator

LIMIT_S = 15  # every case must fail faster than this
SERVER_LIFETIME_S = 60  # a server left behind stops by itself


# ---------------------------------------------------------------------------------------------- loopback servers
def closed_port() -> str:
    """The URL of a loopback port nothing listens on (connecting is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def silent_server():
    """A listener that accepts connections and never answers; closed on exit or after SERVER_LIFETIME_S."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def hold() -> None:
        end = time.monotonic() + SERVER_LIFETIME_S
        while not stop.is_set() and time.monotonic() < end:
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue
        for conn in held:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@contextmanager
def status_server(status: int):
    """An HTTP server answering `status` (and a JSON error) to every request; shut down on exit or after
    SERVER_LIFETIME_S."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = json.dumps({"error": f"test server says {status}"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    timer = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()


@contextmanager
def hub(kind: str):
    """The HF_ENDPOINT of a case: "closed", "silent", "500"/"404"/"401"/... (an HTTP status), "emulator-ENDPOINT-
    STATUS" (the loopback Hub answering STATUS to one endpoint), or "offline" and "none" (a closed port: nothing may be
    contacted at all)."""
    if kind == "silent":
        with silent_server() as url:
            yield url
    elif kind.startswith("emulator-"):  # the loopback Hub, refusing one endpoint: emulator-commit-503
        _, endpoint, status = kind.split("-")
        with HubEmulator(token="hf_test") as emulator:
            emulator.refuse[endpoint] = int(status)
            yield emulator.url
    elif kind.isdigit():
        with status_server(int(kind)) as url:
            yield url
    else:
        yield closed_port()


# ---------------------------------------------------------------------------------------------- fixtures
LOOPBACK = ("127.0.0.1", "localhost", "::1", b"127.0.0.1", b"localhost")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """In process, a name lookup or a connection beyond the loopback fails at once, as with no network at all (e.g.
    huggingface_hub >= 1.0 fetching its agent registry from the endpoint it read at import)."""
    lookup, connect = socket.getaddrinfo, socket.socket.connect

    def guarded_lookup(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: not loopback, blocked by the test")
        return lookup(host, *args, **kwargs)

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"{address[0]}: not loopback, blocked by the test")
        return connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty Hugging Face home under tmp_path, online, no token, 1 s timeout; the cwd is tmp_path."""
    import huggingface_hub.constants as constants

    home = tmp_path / "hf_home"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("SWINZOO_HUB_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                 "HF_ENDPOINT", "SWINZOO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    # a token saved by `huggingface-cli login` on this machine must not count (paths are fixed at import)
    for attr in ("HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH"):
        if hasattr(constants, attr):
            monkeypatch.setattr(constants, attr, str(home / attr.lower()))
    # huggingface_hub and `datasets` (which copies it) fixed HF_HUB_OFFLINE at import: under HF_HUB_OFFLINE=1 the
    # hf: data cases never reached the test's Hub (OfflineModeIsEnabled, exit 2)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if "datasets" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny swinzoo model to push (outside the folder each case checks)."""
    cfg = SwinConfig(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2), window_size=4,
                     pretrained_window_sizes=(0, 0), num_classes=2)
    path = tmp_path_factory.mktemp("push_src") / "tiny.safetensors"
    save_model(SwinTransformer(cfg), path, {"source": "test"})
    return path


# ---------------------------------------------------------------------------------------------- the table
PUSH = ["push", "{model}", "--repo"]
CASES = [
    # (id, hub, token, argv, fragments the one line must hold)
    ("download-hf-closed-port", "closed", False, ["download", "hf-hub:org/name"],
     ["could not reach", "refused", "org/name", "not in the Hugging Face cache"]),
    ("download-zoo-silent", "silent", False, ["download", "swin_t_224"],
     ["could not reach", "timed out", "SWINZOO_HUB_TIMEOUT", "timm/swin_tiny_patch4_window7_224"]),
    ("convert-hf-silent", "silent", False, ["convert", "hf-hub:org/name", "-o", "x.safetensors"],
     ["timed out", "org/name"]),
    ("info-hf-closed-port", "closed", False, ["info", "hf-hub:org/name@v1"], ["could not reach", "org/name"]),
    ("info-hf-silent", "silent", False, ["info", "hf-hub:org/name"], ["timed out"]),
    ("eval-zoo-closed-port", "closed", False, ["eval", "swin_t_224", "--data", "shapes"], ["could not reach"]),
    ("eval-hf-silent", "silent", False, ["eval", "hf-hub:org/name", "--data", "shapes"], ["timed out"]),
    # `datasets` words its own failure on huggingface_hub >= 1.0 ("Couldn't reach 'org/data' on the Hub")
    ("eval-hf-dataset-silent", "silent", False, ["eval", "swin_n_64", "--data", "hf:org/data"], ["reach"]),
    ("finetune-hf-dataset-closed", "closed", False, ["finetune", "--from", "swin_n_64", "--data", "hf:org/data",
                                                     "--out", "run"], ["reach", "HF_ENDPOINT"]),
    ("download-hf-500", "500", False, ["download", "hf-hub:org/name"], ["500", "org/name", "try again later"]),
    ("download-hf-429", "429", False, ["download", "hf-hub:org/name"], ["429", "try again later"]),
    ("convert-zoo-503", "503", False, ["convert", "swin_s_224", "-o", "x.safetensors"], ["503"]),
    ("info-hf-404", "404", False, ["info", "hf-hub:org/name"], ["hf-hub:org/name", "does not exist"]),
    ("download-hf-401", "401", False, ["download", "hf-hub:org/private"], ["hf-hub:org/private", "HF_TOKEN"]),
    ("download-hf-offline", "offline", False, ["download", "hf-hub:org/name"],
     ["org/name", "unset HF_HUB_OFFLINE to download it"]),
    ("convert-zoo-offline", "offline", False, ["convert", "swin_s_224", "-o", "x.safetensors"],
     ["timm/swin_small", "unset HF_HUB_OFFLINE and run `swinzoo download"]),
    ("eval-zoo-offline", "offline", False, ["eval", "swin_t_224", "--data", "shapes"], ["HF_HUB_OFFLINE"]),
    ("push-offline", "offline", True, [*PUSH, "acme/x"], ["HF_HUB_OFFLINE is set", "unset it"]),
    ("download-id-with-space", "none", False, ["download", "hf-hub:org/na me"], ["not a Hub reference", "na me"]),
    ("info-id-dotdot", "none", False, ["info", "hf-hub:../x"], ["not a Hub reference", "../x"]),
    ("convert-id-empty-revision", "none", False, ["convert", "hf-hub:org/x@", "-o", "x.safetensors"],
     ["not a Hub reference", "'@'"]),
    ("download-id-no-name", "none", False, ["download", "hf-hub:org/"], ["not a Hub reference"]),
    ("eval-id-bad-chars", "none", False, ["eval", "hf_hub:org/x$y", "--data", "shapes"], ["not a Hub reference"]),
    ("push-no-token", "closed", False, [*PUSH, "acme/x"], ["no Hugging Face token", "HF_TOKEN"]),
    ("push-repo-with-space", "none", True, [*PUSH, "acme/x y"], ["not ORG/NAME", "acme/x y"]),
    ("push-repo-dotdot", "none", True, [*PUSH, "../x"], ["not ORG/NAME"]),
    ("push-repo-double-dash", "none", True, [*PUSH, "acme/x--y"], ["not ORG/NAME", "--"]),
    ("push-closed-port", "closed", True, [*PUSH, "acme/x"], ["push to acme/x failed", "could not reach", "refused"]),
    ("push-silent", "silent", True, [*PUSH, "acme/x"], ["push to acme/x failed", "timed out"]),
    ("push-500", "500", True, [*PUSH, "acme/x"], ["push to acme/x failed", "500"]),
    ("push-401", "401", True, [*PUSH, "acme/x"], ["push to acme/x failed", "401", "token"]),
    ("push-commit-503", "emulator-commit-503", True, [*PUSH, "acme/x"], ["push to acme/x failed", "503"]),
    ("push-preupload-500", "emulator-preupload-500", True, [*PUSH, "acme/x"], ["push to acme/x failed", "500"]),
]


@pytest.mark.parametrize("kind, token, argv, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hub_failure_is_one_line(kind, token, argv, expect, hub_env, model_file, tmp_path, monkeypatch, capsys):
    if kind == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if token:
        monkeypatch.setenv("HF_TOKEN", "hf_test")
    args = [str(a).replace("{model}", str(model_file)) for a in argv]
    with hub(kind) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        start = time.monotonic()
        # the network or the Hub failing exits 1, as the disk does; bad input (a 404, a bad id, offline) 2
        bad_input = kind in ("none", "offline", "401", "404") or "no Hugging Face token" in expect
        line = fails_cleanly(args, capsys, tmp_path, *expect, owned=("hf_home",), code=2 if bad_input else 1)
        took = time.monotonic() - start
    assert took < LIMIT_S, f"{args} took {took:.1f} s: {line}"
    assert "Traceback" not in line and "unexpected" not in line, line


# ---------------------------------------------------------------------------------------------- beyond the table
def test_huggingface_hub_state_is_restored(hub_env, monkeypatch, capsys, tmp_path):
    """The timeout wrapper, offline flag and silenced logger are undone after the call, failed or not."""
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import _http

    def state():
        factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or getattr(_http, "_GLOBAL_BACKEND_FACTORY", None)
        return (factory, constants.HF_HUB_OFFLINE, constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT,
                logging.getLogger("huggingface_hub").level, list(warnings.filters))

    before = state()
    offline = not constants.HF_HUB_OFFLINE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")  # the opposite, for the call
    with silent_server() as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        # offline, an uncached repo is bad input (2); online, the silent Hub fails (1)
        fails_cleanly(["download", "hf-hub:org/name"], capsys, tmp_path, "org/name", owned=("hf_home",),
                      code=2 if offline else 1)
    assert state() == before


@pytest.mark.parametrize("value", ["abc", "0", "-3", "inf"])
def test_bad_timeout_setting(value, hub_env, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SWINZOO_HUB_TIMEOUT", value)
    monkeypatch.setenv("HF_ENDPOINT", closed_port())
    fails_cleanly(["download", "hf-hub:org/name"], capsys, tmp_path, "SWINZOO_HUB_TIMEOUT", repr(value),
                  owned=("hf_home",))


def test_real_stderr_holds_one_line(tmp_path):
    """Out of process, where huggingface_hub's own log handler writes to the real stderr: still one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_", "SWINZOO_"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), SWINZOO_HUB_TIMEOUT="1", HF_HUB_DISABLE_TELEMETRY="1")
    with status_server(500) as url:
        env["HF_ENDPOINT"] = url
        start = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "swinzoo", "download", "hf-hub:org/name"], env=env,
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    # the Hub failing is not the input's fault: exit 1, as for the disk (2 is for bad input)
    assert run.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    assert "500" in lines[0] and time.monotonic() - start < 60


@pytest.mark.parametrize("kind", ["closed", "silent", "503"])
def test_cached_repo_still_loads_when_the_hub_fails(kind, hub_env, monkeypatch, capsys, tmp_path):
    """Online, a Hub that does not answer is tried once, then the cache answers (no error, no retries)."""
    from swinzoo.converters import timm as timm_format
    from tests.conftest import run_cli
    from tests.test_hub import cached_repo, small_model

    cfg, model = small_model(1)
    snapshot = cached_repo(hub_env, "someone/cached")
    timm_format.write_timm_folder(model.state_dict(), cfg, snapshot)
    with hub(kind) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        start = time.monotonic()
        code, out, err = run_cli(["info", "hf-hub:someone/cached", "--json"], capsys)
        took = time.monotonic() - start
    assert code == 0 and err.strip() == "", err
    assert json.loads(out)["config"]["embed_dim"] == cfg.embed_dim and took < LIMIT_S

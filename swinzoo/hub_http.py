"""Bounded, quiet calls to the Hugging Face Hub, and the environment they read (endpoint, offline, cache).

Every call swinzoo makes to the Hub (`swinzoo.hub`, `swinzoo.upload`) runs inside `hub_calls()`:

- `SWINZOO_HUB_TIMEOUT` (seconds, default 10) bounds connecting and each wait for an answer (or for the next
  bytes of one); a commit or an upload (PUT) may wait 3x as long for its answer. It replaces huggingface_hub's
  `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` and bounds the `HfApi` calls that have no timeout at all;
  a tighter bound huggingface_hub sets on one request itself is kept.
- A Hub that cannot be reached (refused, unknown host, timed out) is not retried: the call fails at once with
  `HubNetworkError` naming the endpoint and the reason. A request answered 429 or 5xx may be retried once by
  huggingface_hub; a second such answer fails the same way. Downloads then fall back to the cache.
- huggingface_hub's log messages and Python warnings are silenced while the call runs (`SWINZOO_DEBUG=1` keeps
  them), so a failure is the one line the CLI prints.

All of this is put in place on entry and removed on exit (huggingface_hub's HTTP session factory, its offline flag
and timeout constants, its logger level, the warnings filters); nothing stays changed after the call.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from swinzoo.errors import NetworkError, SwinzooError, debug_enabled
from swinzoo.settings import HUB_TIMEOUT_ENV as TIMEOUT_ENV
from swinzoo.settings import hub_timeout

DEFAULT_ENDPOINT = "https://huggingface.co"
WRITE_TIMEOUT_FACTOR = 3  # a commit or an upload (PUT) may take longer to be answered


class HubNetworkError(NetworkError):
    """The Hub could not be reached (refused, unknown host, timed out) or kept answering 429/5xx."""

    def __init__(self, url: str, reason: str, *, reached: bool = False, timed_out: bool = False) -> None:
        self.url, self.reason, self.reached, self.timed_out = url, reason, reached, timed_out
        super().__init__(f"{self.what()}; {self.hint()}")

    def what(self) -> str:
        origin = _origin(self.url)
        if self.reached:
            return f"the Hugging Face Hub at {origin} {self.reason}"
        return f"could not reach the Hugging Face Hub at {origin} ({self.reason})"

    def hint(self) -> str:
        if self.reached:
            return "try again later"
        return "check the network and HF_ENDPOINT" + (f", or raise {TIMEOUT_ENV} (seconds) for a slow network"
                                                      if self.timed_out else "")


# ---------------------------------------------------------------------------------------------- references
def endpoint() -> str:
    """The Hub's URL: `HF_ENDPOINT`, read now (huggingface_hub reads it once, at import), else huggingface_hub's."""
    if os.environ.get("HF_ENDPOINT", "").strip():
        return os.environ["HF_ENDPOINT"].strip().rstrip("/")
    from huggingface_hub import constants

    return str(getattr(constants, "ENDPOINT", None) or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """huggingface_hub's cache folder for the current environment (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


# ---------------------------------------------------------------------------------------------- guarded calls
def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _connect_reason(error: BaseException) -> str:
    """'Connection refused', 'Name or service not known', ... out of a requests/httpx connection error."""
    text = str(error)
    found = re.findall(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if found:
        return found[-1].strip().rstrip(".")
    if re.search(r"RemoteDisconnected|without response|Server disconnected|Connection aborted", text):
        return "the connection was closed without an answer"
    if "SSL" in text or "CERTIFICATE" in text.upper():
        return "TLS/SSL error"
    return type(error).__name__


def _tighter(ours: float, theirs) -> float:
    """The smaller of swinzoo's bound and one huggingface_hub set itself (None: none)."""
    return min(ours, float(theirs)) if isinstance(theirs, (int, float)) and theirs > 0 else ours


class _Guard:
    """The per-call state shared by the wrapped sessions: the timeout and the failed answers seen so far."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.failed: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def read_timeout(self, method: str, url: str) -> float:
        method = method.upper()
        slow = method == "PUT" or (method == "POST" and "/commit/" in str(url))
        return self.timeout * (WRITE_TIMEOUT_FACTOR if slow else 1)

    def timed_out(self, method: str, url: str) -> HubNetworkError:
        return HubNetworkError(url, f"timed out: no answer within {self.read_timeout(method, url):g} s",
                               timed_out=True)

    def check(self, method: str, url: str, status: int, phrase: str | None, close) -> None:
        """A 429/5xx answer passes once per request (huggingface_hub may retry it); the second fails."""
        if status != 429 and not 500 <= status < 600:
            return
        with self.lock:
            key = (method.upper(), str(url))
            self.failed[key] = self.failed.get(key, 0) + 1
            again = self.failed[key] > 1
        if again:
            close()
            raise HubNetworkError(str(url), f"answered {status} {phrase or ''}".rstrip() + " twice", reached=True)

    def wrap_requests(self, session):
        """A requests.Session (huggingface_hub < 1.0) whose every request has the timeout and fails fast."""
        import requests
        from huggingface_hub.errors import OfflineModeIsEnabled

        request = session.request

        def guarded(method, url, *args, **kwargs):
            theirs = kwargs.get("timeout")
            connect, read = theirs if isinstance(theirs, tuple) else (theirs, theirs)
            kwargs["timeout"] = (_tighter(self.timeout, connect), _tighter(self.read_timeout(method, url), read))
            try:
                response = request(method, url, *args, **kwargs)
            except OfflineModeIsEnabled:
                raise
            except requests.exceptions.Timeout:
                raise self.timed_out(method, url) from None
            except requests.exceptions.ConnectionError as e:
                if "timed out" in str(e).lower():
                    raise self.timed_out(method, url) from None
                raise HubNetworkError(url, _connect_reason(e)) from None
            self.check(method, url, response.status_code, response.reason, response.close)
            return response

        session.request = guarded
        return session

    def wrap_httpx(self, client, httpx):
        """An httpx Client (huggingface_hub >= 1.0) whose every request has the timeout and fails fast."""
        send = client.send
        timeout = httpx.Timeout(self.timeout)

        def guarded(request, *args, **kwargs):
            theirs = request.extensions.get("timeout") or {}
            ours = httpx.Timeout(self.timeout, read=self.read_timeout(request.method, str(request.url))).as_dict()
            request.extensions["timeout"] = {k: _tighter(v, theirs.get(k)) for k, v in ours.items()}
            try:
                response = send(request, *args, **kwargs)
            except httpx.TimeoutException:
                raise self.timed_out(request.method, str(request.url)) from None
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
                raise HubNetworkError(str(request.url), _connect_reason(e)) from None
            self.check(request.method, str(request.url), response.status_code, response.reason_phrase,
                       response.close)
            return response

        client.timeout = timeout
        client.send = guarded
        return client


_state_lock = threading.Lock()
_active = 0
_undo: list = []


def _install(guard: _Guard, quiet: bool) -> list:
    """Wrap huggingface_hub's HTTP sessions with `guard`, set its offline flag from the environment and, if `quiet`,
    silence its logger and Python warnings; returns the undo steps."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    undo: list = []
    try:
        _install_steps(guard, quiet, undo, constants, _http)
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    return undo


def _install_steps(guard: _Guard, quiet: bool, undo: list, constants, _http) -> None:
    was_offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline()  # read at import by huggingface_hub; swinzoo reads it at call time
    undo.append(lambda: setattr(constants, "HF_HUB_OFFLINE", was_offline))
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):  # read at import; swinzoo's bound replaces them
        if hasattr(constants, name):
            value = getattr(constants, name)
            undo.append(lambda name=name, value=value: setattr(constants, name, value))
            setattr(constants, name, guard.timeout)
    if hasattr(_http, "set_client_factory"):  # >= 1.0: one shared httpx client
        httpx = getattr(_http, "httpx2", None) or getattr(_http, "httpx", None)
        previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or getattr(_http, "default_client_factory", None)
        if httpx is not None and previous is not None:
            _http.set_client_factory(lambda: guard.wrap_httpx(previous(), httpx))
            undo.append(lambda: _http.set_client_factory(previous))
    else:  # 0.x: one requests.Session per thread
        previous = getattr(_http, "_GLOBAL_BACKEND_FACTORY", None) or getattr(_http, "_default_backend_factory", None)
        if previous is not None:
            _http.configure_http_backend(lambda: guard.wrap_requests(previous()))
            undo.append(lambda: _http.configure_http_backend(previous))
    if quiet:
        logger = logging.getLogger("huggingface_hub")
        level = logger.level
        logger.setLevel(logging.CRITICAL + 1)
        undo.append(lambda: logger.setLevel(level))
        caught = warnings.catch_warnings()
        caught.__enter__()
        warnings.simplefilter("ignore")
        undo.append(lambda: caught.__exit__(None, None, None))


@contextmanager
def hub_calls():
    """Run huggingface_hub calls with swinzoo's timeout, no retries on an unreachable Hub, and no output besides
    progress bars; everything is restored on exit (see the module docstring). Nested and concurrent uses share one
    installation, undone when the last one exits."""
    global _active, _undo
    guard = _Guard(hub_timeout())
    debug = debug_enabled()
    with _state_lock:
        if _active == 0:
            _undo = _install(guard, quiet=not debug)
        _active += 1
    try:
        yield
    finally:
        with _state_lock:
            _active -= 1
            if _active == 0:
                undo, _undo = _undo, []
                for step in reversed(undo):
                    step()


def http_error(error: BaseException | None) -> tuple[int, str] | None:
    """(status, reason phrase) of the huggingface_hub HTTP error in `error`'s chain, if any."""
    from huggingface_hub.errors import HfHubHTTPError

    for _ in range(8):
        if error is None:
            return None
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            response = error.response
            phrase = getattr(response, "reason", None) or getattr(response, "reason_phrase", None) or ""
            return int(response.status_code), str(phrase)
        error = error.__cause__ or error.__context__
    return None


def refused(ref: str, status: int, phrase: str) -> SwinzooError:
    """A download the Hub answered with a client error (no retry, no cache fallback helps)."""
    if not status:
        return NetworkError(f"could not download {ref}: the Hugging Face Hub at {endpoint()} failed ({phrase})")
    answered = f"the Hugging Face Hub at {endpoint()} answered {status} {phrase}".rstrip()
    if status == 404:
        return SwinzooError(f"{ref} does not exist or is private ({answered}); check the name, or set HF_TOKEN for "
                            "a private repo")
    if status in (401, 403):
        return SwinzooError(f"could not download {ref}: {answered}; set HF_TOKEN to a token that may read it, or "
                            "check the name")
    return SwinzooError(f"could not download {ref}: {answered}")


# ---------------------------------------------------------------------------------------------- downloads


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")

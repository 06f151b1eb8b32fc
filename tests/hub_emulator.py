"""A loopback Hugging Face Hub for tests: the HTTP calls huggingface_hub makes to create a repo, pre-upload, commit,
read repo info and download files, answered from memory on 127.0.0.1.

Every file is declared "regular" at pre-upload, so commits carry their content inline (base64) and no LFS or Xet
storage is needed. `refuse` makes chosen endpoints answer with an error status, to test failure handling;
`after_download` changes the repo between two downloads (a push landing meanwhile).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    messages: dict[str, str] = field(default_factory=dict)


class HubEmulator:
    """`with HubEmulator(token="hf_test") as hub:` then point HF_ENDPOINT at `hub.url`."""

    def __init__(self, token: str | None = "hf_test") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.refuse: dict[str, int] = {}  # endpoint name ("create", "preupload", "commit", ...) -> status
        self.calls: list[str] = []
        self.after_download = None  # called with (repo_id, filename) once a file's content was sent
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Put `files` on `branch` of `repo_id` as one commit (the repo made if new); the commit's sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        sha = _sha(files)
        repo.commits[sha], repo.branches[branch], repo.messages[sha] = dict(files), sha, f"test files on {branch}"
        return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(revision, revision)]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

            def _authorized(self) -> bool:
                if hub.token is None:
                    return True
                return self.headers.get("Authorization", "") == f"Bearer {hub.token}"

            def _json(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _refused(self, endpoint: str) -> bool:
                hub.calls.append(endpoint)
                status = hub.refuse.get(endpoint)
                if status:
                    self._send(status, {"error": f"refused by test ({endpoint})"})
                    return True
                return False

            # ------------------------------------------------------------------ write API
            def do_POST(self) -> None:
                path = unquote(urlparse(self.path).path)
                if path == "/api/validate-yaml":
                    self._json()
                    return self._send(200, {"errors": [], "warnings": []})
                if not self._authorized():
                    return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                if path == "/api/repos/create":
                    if self._refused("create"):
                        return
                    body = self._json()
                    repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
                    url = f"{hub.url}/{repo_id}"
                    if repo_id in hub.repos:
                        return self._send(409, {"error": "You already created this model repo", "url": url})
                    repo = Repo(private=bool(body.get("private")))
                    sha = _sha({})
                    repo.commits[sha], repo.branches["main"], repo.messages[sha] = {}, sha, "initial commit"
                    hub.repos[repo_id] = repo
                    return self._send(200, {"url": url, "name": repo_id})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
                if not m:
                    return self._error(404, "EntryNotFound", f"no route {path}")
                repo_id, action, revision = m.groups()
                if self._refused(action):
                    return
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
                if action == "preupload":
                    files = self._json()["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if action == "branch":
                    self._json()
                    if revision in repo.branches:
                        return self._send(409, {"error": "Reference already exists"})
                    repo.branches[revision] = repo.branches["main"]
                    return self._send(200, {})
                if revision not in repo.branches:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                length = int(self.headers.get("Content-Length") or 0)
                files = dict(repo.commits[repo.branches[revision]])
                message = ""
                for line in self.rfile.read(length).splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        message = value.get("summary", "")
                    elif item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] in ("deletedFile", "deletedFolder"):
                        for p in [p for p in files if p == value["path"] or p.startswith(value["path"])]:
                            del files[p]
                    else:
                        return self._error(400, "BadRequest", f"unsupported commit item {item['key']}")
                sha = _sha(files)
                repo.commits[sha], repo.branches[revision], repo.messages[sha] = files, sha, message
                return self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                                        "success": True})

            # ------------------------------------------------------------------ read API
            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                if path == "/api/whoami-v2":
                    if not self._authorized() or hub.token is None and not self.headers.get("Authorization"):
                        return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                    return self._send(200, {"type": "user", "name": "emulator"})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path)
                if m:
                    if self._refused("info"):
                        return
                    repo_id, revision = m.group(1), m.group(2) or "main"
                    files = self._files(repo_id, revision)
                    if files is None:
                        return
                    sha = hub.repos[repo_id].branches.get(revision, revision)
                    return self._send(200, {"id": repo_id, "modelId": repo_id, "sha": sha,
                                            "private": hub.repos[repo_id].private,
                                            "siblings": [{"rfilename": p} for p in sorted(files)]})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
                if m:  # huggingface_hub >= 1.0 lists a snapshot's files here (one page, no Link header)
                    repo_id, revision, prefix = m.group(1), m.group(2), (m.group(3) or "").strip("/")
                    files = self._files(repo_id, revision)
                    if files is None:
                        return
                    inside = {p: c for p, c in files.items() if not prefix or p.startswith(prefix + "/")}
                    dirs = {"/".join(p.split("/")[:i]) for p in inside for i in range(1, p.count("/") + 1)}
                    return self._send(200, [{"type": "directory", "oid": _sha({}), "size": 0, "path": d}
                                            for d in sorted(dirs)] +
                                           [{"type": "file", "oid": hashlib.sha1(c).hexdigest(), "size": len(c),
                                             "path": p} for p, c in sorted(inside.items())])
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m:
                    return self._error(404, "EntryNotFound", f"no route {path}")
                if self._refused("download"):
                    return
                repo_id, revision, filename = m.groups()
                files = self._files(repo_id, revision)
                if files is None:
                    return
                if filename not in files:
                    return self._error(404, "EntryNotFound", f"{filename} does not exist in {repo_id}")
                content = files[filename]
                sha = hub.repos[repo_id].branches.get(revision, revision)
                etag = hashlib.sha256(content).hexdigest()
                self._send(200, content, {"ETag": f'"{etag}"', "X-Repo-Commit": sha})
                if self.command == "GET" and hub.after_download is not None:
                    hub.after_download(repo_id, filename)

            def _files(self, repo_id: str, revision: str) -> dict[str, bytes] | None:
                repo = hub.repos.get(repo_id)
                if repo is None or (repo.private and not self._authorized()):
                    self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
                    return None
                sha = repo.branches.get(revision, revision)
                if sha not in repo.commits:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                    return None
                return repo.commits[sha]

        return Handler


def _sha(files: dict[str, bytes]) -> str:
    h = hashlib.sha1()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha1(files[path]).digest())
    return h.hexdigest()

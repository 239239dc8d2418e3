"""A small, offline, Hugging Face Hub-compatible HTTP server for tests.

Standard library only: this module does not import the rest of ``tracetorch_zoo``, so tests can load it by
path before the package is importable.

It serves the subset of the Hub HTTP API that the real ``huggingface_hub`` client (checked against 2.4.0)
uses for ``create_repo``, ``upload_folder``/``upload_file``/``create_commit``, ``create_tag``/``create_branch``,
``list_repo_refs``, ``repo_info``, ``list_repo_tree``, ``get_paths_info``, ``list_repo_commits``,
``hf_hub_download`` and ``snapshot_download``. Every file is committed as a *regular* (non-LFS, non-Xet) blob:
the ``preupload`` route answers ``uploadMode: "regular"``, so the client puts base64 content in the NDJSON
commit payload and never talks to an LFS or Xet storage backend.

Storage is content addressed and git-like: blobs are keyed by their git blob sha1 (which is also the ``ETag``
the client caches on), trees and commits are hashed the way git hashes them, and branches and tags are refs
that only move when a commit (or an explicit ref operation) moves them. State persists under ``root_dir``, so
a new server on the same directory sees the same repos.

Usage::

    with LocalHub(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.endpoint, token="anything")
        api.create_repo("org/model")
        ...
        hf_hub_download("org/model", "config.json", endpoint=hub.endpoint, cache_dir=...)

The server binds to 127.0.0.1 only, accepts any (or no) token, caps request bodies and concurrent requests,
and stops cleanly on ``close()``/context exit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["LocalHub", "ReplyError", "git_blob_oid"]

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_API_RE = re.compile(
    r"^/api/(?P<kind>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
    r"(?:/(?P<action>revision|preupload|commit|tag|branch|refs|tree|paths-info|commits)(?:/(?P<rest>.*))?)?$"
)
_RESOLVE_RE = re.compile(
    r"^/(?:(?P<kind>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_AUTHOR = "LocalHub <localhub@localhost>"


class ReplyError(Exception):
    """An HTTP error answered with the status and ``X-Error-Code`` the real Hub uses."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        commit: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.commit = commit
        self.extra = extra or {}


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 of ``data`` (the Hub's ETag / ``oid`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git_object_oid(kind: str, body: bytes) -> str:
    return hashlib.sha1(kind.encode() + b" %d\0" % len(body) + body).hexdigest()


def _valid_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise ReplyError(400, f"Invalid path in repo: {path!r}")
    if parts[0] == ".git":
        raise ReplyError(400, f"Invalid path in repo: {path!r}")
    return path


def _json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (``{}`` when empty); a 400 for anything else."""
    value = json.loads(body or b"{}")
    if not isinstance(value, dict):
        raise ReplyError(400, f"Expected a JSON object, got {type(value).__name__}")
    return value


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000Z"


class _Store:
    """Repos, commits and blobs on disk; all methods are called under ``self.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "repos").mkdir(parents=True, exist_ok=True)
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}

    # -- blobs ---------------------------------------------------------------------------------------
    def _blob_path(self, oid: str) -> Path:
        return self.root / "objects" / oid[:2] / oid[2:]

    def put_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self._blob_path(oid)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return oid

    def blob_path(self, oid: str) -> Path:
        return self._blob_path(oid)

    # -- repos ---------------------------------------------------------------------------------------
    def _state_file(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / repo_id / "state.json"

    def get_repo(self, repo_type: str, repo_id: str) -> dict[str, Any]:
        key = (repo_type, repo_id)
        if key not in self._cache:
            f = self._state_file(repo_type, repo_id)
            if not f.exists():
                raise ReplyError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
            self._cache[key] = json.loads(f.read_text())
        return self._cache[key]

    def save_repo(self, repo_type: str, repo_id: str, state: dict[str, Any]) -> None:
        f = self._state_file(repo_type, repo_id)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name("state.json.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, f)
        self._cache[(repo_type, repo_id)] = state

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> None:
        if self._state_file(repo_type, repo_id).exists():
            raise ReplyError(409, f"You already created this {repo_type} repo: {repo_id}")
        state: dict[str, Any] = {"private": private, "branches": {}, "tags": {}, "commits": {}}
        oid = self._make_commit(state, {}, [], "initial commit", "")
        state["branches"]["main"] = oid
        self.save_repo(repo_type, repo_id, state)

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        self.get_repo(repo_type, repo_id)
        f = self._state_file(repo_type, repo_id)
        f.unlink()
        self._cache.pop((repo_type, repo_id), None)

    # -- git-like hashing ----------------------------------------------------------------------------
    @staticmethod
    def tree_oids(files: dict[str, str]) -> dict[str, str]:
        """Git tree oids for every directory of ``files`` (path -> blob oid); key ``""`` is the root."""
        dirs: dict[str, dict[str, str]] = {"": {}}  # dir -> {entry name: blob oid, or "" for a subdir}
        for path, oid in files.items():
            parts = path.split("/")
            for i in range(len(parts) - 1):
                parent, child = "/".join(parts[:i]), "/".join(parts[: i + 1])
                dirs.setdefault(child, {})
                dirs.setdefault(parent, {})[parts[i]] = ""
            dirs["/".join(parts[:-1])][parts[-1]] = oid
        oids: dict[str, str] = {}
        for d in sorted(dirs, key=lambda p: -(p.count("/") + 1) if p else 0):  # deepest first, root last
            entries = dirs[d]
            body = b""
            # git orders a subdirectory as if its name ended with "/"
            for name in sorted(entries, key=lambda n: n + "/" if entries[n] == "" else n):
                if entries[name]:
                    body += b"100644 " + name.encode() + b"\0" + bytes.fromhex(entries[name])
                else:
                    body += b"40000 " + name.encode() + b"\0" + bytes.fromhex(oids[f"{d}/{name}" if d else name])
            oids[d] = _git_object_oid("tree", body)
        return oids

    def _make_commit(
        self, state: dict[str, Any], files: dict[str, str], parents: list[str], summary: str, description: str
    ) -> str:
        tree = self.tree_oids(files)[""]
        ts = time.time()
        message = summary + ("\n\n" + description if description else "")
        body = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents)
        body += f"author {_AUTHOR} {int(ts)} +0000\ncommitter {_AUTHOR} {int(ts)} +0000\n\n{message}\n"
        # Same second, same content, same parent -> same sha in git too; add a nonce only on collision.
        oid = _git_object_oid("commit", body.encode())
        nonce = 0
        while oid in state["commits"]:
            nonce += 1
            oid = _git_object_oid("commit", (body + f"\nnonce {nonce}\n").encode())
        state["commits"][oid] = {
            "tree": tree,
            "files": dict(sorted(files.items())),
            "parents": parents,
            "summary": summary,
            "description": description,
            "date": ts,
        }
        return oid

    # -- revisions -----------------------------------------------------------------------------------
    @staticmethod
    def resolve(state: dict[str, Any], revision: str) -> str:
        if revision in state["branches"]:
            return state["branches"][revision]
        if revision.startswith("refs/heads/") and revision[11:] in state["branches"]:
            return state["branches"][revision[11:]]
        if revision in state["tags"]:
            return state["tags"][revision]
        if revision.startswith("refs/tags/") and revision[10:] in state["tags"]:
            return state["tags"][revision[10:]]
        if _SHA_RE.match(revision) and revision in state["commits"]:
            return revision
        raise ReplyError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(
        self, repo_type: str, repo_id: str, branch: str, ops: list[dict[str, Any]], header: dict[str, Any]
    ) -> str:
        state = self.get_repo(repo_type, repo_id)
        if branch.startswith("refs/heads/"):
            branch = branch[11:]
        if branch not in state["branches"]:
            if branch in state["tags"] or branch in state["commits"]:
                raise ReplyError(400, f"Can only commit to a branch, not to {branch!r}")
            raise ReplyError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = state["branches"][branch]
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            raise ReplyError(412, f"A commit has happened since {parent}; {branch} is at {head}")
        files = dict(state["commits"][head]["files"])
        for op in ops:
            key, value = op.get("key"), op.get("value") or {}
            if key == "file":
                path = _valid_path(str(value.get("path", "")))
                if value.get("encoding", "base64") != "base64":
                    raise ReplyError(400, f"Unsupported encoding {value.get('encoding')!r}")
                data = base64.b64decode(value.get("content", ""), validate=True)
                if any(p.startswith(path + "/") for p in files):
                    raise ReplyError(400, f"A folder named {path!r} already exists")
                parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
                if any(p in files for p in parents):
                    raise ReplyError(400, f"A parent of {path!r} is a file")
                files[path] = self.put_blob(data)
            elif key == "lfsFile":
                raise ReplyError(400, "LFS files are not supported by this local hub (preupload answers 'regular')")
            elif key == "deletedFile":
                path = _valid_path(str(value.get("path", "")))
                if path not in files:
                    raise ReplyError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                path = _valid_path(str(value.get("path", "")).rstrip("/"))
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise ReplyError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise ReplyError(400, f"Unknown commit operation {key!r}")
        oid = self._make_commit(
            state, files, [head], str(header.get("summary") or ""), str(header.get("description") or "")
        )
        state["branches"][branch] = oid
        self.save_repo(repo_type, repo_id, state)
        return oid


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # seconds a connection may sit idle / stall mid-request

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- plumbing ------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                if len(out) + size > limit:
                    self.close_connection = True
                    raise ReplyError(413, "Request body too large")
                out += self.rfile.read(size)
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:  # read(-1) would wait for the client to close: a held slot
            self.close_connection = True
            raise ReplyError(400, f"Invalid Content-Length {self.headers.get('Content-Length')!r}")
        if length > limit:
            self.close_connection = True
            raise ReplyError(413, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head_only: bool = False
    ) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self) -> None:
        if not self.server.slots.acquire(timeout=30):
            self._send(503, b'{"error": "server busy"}', {"Connection": "close"})
            self.close_connection = True
            return
        try:
            try:
                body = b"" if self.command in ("GET", "HEAD") else self._read_body()
                self._route(body)
            except ReplyError as e:
                headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode()}
                if e.code:
                    headers["X-Error-Code"] = e.code
                if e.commit:
                    headers["X-Repo-Commit"] = e.commit
                self._send(e.status, json.dumps({"error": e.message, **e.extra}).encode(), headers)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                self._send(400, json.dumps({"error": f"Bad request: {e}"}).encode())
            except Exception as e:  # never drop a connection without a reply
                self._send(500, json.dumps({"error": f"Internal error: {type(e).__name__}: {e}"}).encode())
        finally:
            self.server.slots.release()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch  # noqa: N815

    # -- routing -------------------------------------------------------------------------------------
    def _route(self, body: bytes) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        store = self.server.store
        method = self.command
        if path in ("/api/repos/create", "/api/repos/delete") and method in ("POST", "DELETE"):
            payload = _json_object(body)
            repo_type = payload.get("type") or "model"
            if repo_type not in _URL_PREFIX:
                raise ReplyError(400, f"Invalid repo type {repo_type!r}")
            name, org = payload.get("name"), payload.get("organization")
            if not org:
                raise ReplyError(400, "This local hub needs a namespaced repo id ('org/name')")
            repo_id = self._repo_id(org, name)
            url_ = f"{self.server.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"
            with store.lock:
                if path.endswith("create"):
                    private = bool(payload.get("private")) or payload.get("visibility") == "private"
                    try:
                        store.create_repo(repo_type, repo_id, private)
                    except ReplyError as e:
                        e.extra["url"] = url_  # the Hub's 409 names the existing repo; exist_ok relies on it
                        raise
                else:
                    store.delete_repo(repo_type, repo_id)
            return self._json({"url": url_, "name": repo_id, "id": repo_id})
        if path == "/api/validate-yaml" and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if path == "/api/whoami-v2" and method == "GET":
            return self._json({"type": "user", "name": "localhub", "fullname": "LocalHub", "orgs": []})
        m = _API_RE.match(path)
        if m:
            return self._api(m, method, query, body)
        m = _RESOLVE_RE.match(path)
        if m and method in ("GET", "HEAD"):
            return self._resolve(m)
        raise ReplyError(404, f"Not found: {method} {path}")

    def _repo_id(self, ns: str, name: str) -> str:
        ns, name = unquote(ns), unquote(name)
        if not (_NAME_RE.match(ns) and _NAME_RE.match(name)) or ".." in ns + name:
            raise ReplyError(400, f"Invalid repo id {ns}/{name}")
        return f"{ns}/{name}"

    def _api(self, m: re.Match[str], method: str, query: dict[str, list[str]], body: bytes) -> None:
        store = self.server.store
        repo_type = _REPO_TYPES[m["kind"]]
        repo_id = self._repo_id(m["ns"], m["name"])
        action, rest = m["action"], unquote(m["rest"] or "")
        with store.lock:
            state = store.get_repo(repo_type, repo_id)
            if action in (None, "revision") and method == "GET":
                oid = store.resolve(state, rest or "main")
                return self._json(self._info(repo_type, repo_id, state, oid))
            if action == "refs" and method == "GET":

                def refs(kind: str, prefix: str) -> list[dict[str, str]]:
                    return [
                        {"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": o}
                        for n, o in sorted(state[kind].items())
                    ]

                return self._json(
                    {
                        "branches": refs("branches", "heads"),
                        "tags": refs("tags", "tags"),
                        "converts": [],
                        "pullRequests": [],
                    }
                )
            if action == "preupload" and method == "POST":
                oid = store.resolve(state, rest or "main")
                files = state["commits"][oid]["files"]
                req = _json_object(body)
                return self._json(
                    {
                        "files": [
                            {
                                "path": f["path"],
                                "uploadMode": "regular",
                                "shouldIgnore": False,
                                "oid": files.get(f["path"]),
                            }
                            for f in req.get("files", [])
                        ],
                        "commitOid": oid,
                    }
                )
            if action == "commit" and method == "POST":
                if query.get("create_pr", ["0"])[0] not in ("0", "", "false"):
                    raise ReplyError(400, "Pull requests are not supported by this local hub")
                lines = [_json_object(line) for line in body.splitlines() if line.strip()]
                if not lines or lines[0].get("key") != "header":
                    raise ReplyError(400, "Commit payload must start with a header line")
                oid = store.commit(repo_type, repo_id, rest or "main", lines[1:], lines[0].get("value") or {})
                return self._json(
                    {
                        "success": True,
                        "commitOid": oid,
                        "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{oid}",
                        "commitMessage": lines[0].get("value", {}).get("summary", ""),
                        "pullRequestUrl": None,
                    }
                )
            if action in ("tag", "branch") and method in ("POST", "DELETE"):
                kind = "tags" if action == "tag" else "branches"
                if method == "DELETE":
                    if rest not in state[kind]:
                        raise ReplyError(404, f"{action} {rest!r} not found", "RevisionNotFound")
                    if kind == "branches" and rest == "main":
                        raise ReplyError(403, "Cannot delete the main branch")
                    del state[kind][rest]
                else:
                    payload = _json_object(body)
                    if action == "tag":
                        name, target = str(payload.get("tag", "")), store.resolve(state, rest or "main")
                    else:
                        name = rest
                        target = store.resolve(state, str(payload.get("startingPoint") or "main"))
                    if not name or not re.match(r"^[A-Za-z0-9._/-]+$", name) or name.startswith("refs/"):
                        raise ReplyError(400, f"Invalid {action} name {name!r}")
                    if name in state["tags"] or name in state["branches"]:
                        raise ReplyError(409, f"Reference {name!r} already exists")
                    state[kind][name] = target
                store.save_repo(repo_type, repo_id, state)
                return self._json({})
            if action == "tree" and method == "GET":
                rev, _, sub = rest.partition("/")
                oid = store.resolve(state, rev)
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._json(self._tree(state, oid, sub.strip("/"), recursive))
            if action == "paths-info" and method == "POST":
                oid = store.resolve(state, rest or "main")
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    paths = _json_object(body).get("paths", [])
                else:
                    paths = parse_qs(body.decode()).get("paths", [])
                entries = {e["path"]: e for e in self._tree(state, oid, "", True)}
                return self._json([entries[p.strip("/")] for p in paths if p.strip("/") in entries])
            if action == "commits" and method == "GET":
                oid = store.resolve(state, rest or "main")
                out = []
                while oid:
                    c = state["commits"][oid]
                    out.append(
                        {
                            "id": oid,
                            "title": c["summary"],
                            "message": c["description"],
                            "authors": [{"user": "localhub"}],
                            "date": _iso(c["date"]),
                        }
                    )
                    oid = c["parents"][0] if c["parents"] else None
                return self._json(out)
        raise ReplyError(404, f"Not found: {method} {self.path}")

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.server.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}"

    def _info(self, repo_type: str, repo_id: str, state: dict[str, Any], oid: str) -> dict[str, Any]:
        store = self.server.store
        commit = state["commits"][oid]
        siblings = [
            {"rfilename": p, "size": store.blob_path(b).stat().st_size, "blobId": b} for p, b in commit["files"].items()
        ]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": oid,
            "lastModified": _iso(commit["date"]),
            "private": state["private"],
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "createdAt": _iso(min(c["date"] for c in state["commits"].values())),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        return info

    def _tree(self, state: dict[str, Any], oid: str, sub: str, recursive: bool) -> list[dict[str, Any]]:
        store = self.server.store
        files: dict[str, str] = state["commits"][oid]["files"]
        trees = store.tree_oids(files)
        if sub and sub not in trees:
            if sub in files:
                raise ReplyError(404, f"{sub} is a file, not a folder", "EntryNotFound")
            raise ReplyError(404, f"Folder {sub} not found", "EntryNotFound")
        prefix = sub + "/" if sub else ""
        out: list[dict[str, Any]] = []
        for d, t in sorted(trees.items()):
            if d and d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                out.append({"type": "directory", "oid": t, "size": 0, "path": d})
        for p, b in files.items():
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                out.append({"type": "file", "oid": b, "size": store.blob_path(b).stat().st_size, "path": p})
        return out

    def _resolve(self, m: re.Match[str]) -> None:
        store = self.server.store
        repo_type = {"datasets": "dataset", "spaces": "space", None: "model"}[m["kind"]]
        repo_id = self._repo_id(m["ns"], m["name"])
        rev, path = unquote(m["rev"]), unquote(m["path"])
        with store.lock:
            state = store.get_repo(repo_type, repo_id)
            oid = store.resolve(state, rev)
            blob = state["commits"][oid]["files"].get(path)
        if blob is None:
            raise ReplyError(404, f"Entry not found: {path}", "EntryNotFound", commit=oid)
        data_path = store.blob_path(blob)
        size = data_path.stat().st_size
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": oid,
            "ETag": f'"{blob}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        start, end, status = 0, size, 200
        rng = re.match(r"^bytes=(\d*)-(\d*)$", self.headers.get("Range", "").strip())
        if rng and (rng[1] or rng[2]):
            if rng[1]:
                start = int(rng[1])
                end = min(size, int(rng[2]) + 1) if rng[2] else size
            else:
                start = max(0, size - int(rng[2]))
            if start >= size or start >= end:
                headers["Content-Range"] = f"bytes */{size}"
                return self._send(416, b"", headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET":
            with data_path.open("rb") as f:
                f.seek(start)
                remaining = end - start
                while remaining > 0:
                    chunk = f.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: _Store, max_body_bytes: int, max_concurrency: int, verbose: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.verbose = verbose
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


class LocalHub:
    """A Hub-compatible server on 127.0.0.1 (ephemeral port) in a background thread.

    ``endpoint`` is the base URL to pass as ``endpoint=`` to ``HfApi``/``hf_hub_download``/
    ``snapshot_download`` (or as ``HF_ENDPOINT`` to a subprocess). Any token is accepted.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        *,
        max_body_bytes: int = 256 * 1024 * 1024,
        max_concurrency: int = 16,
        verbose: bool = False,
    ) -> None:
        self.root_dir = Path(root_dir)
        self._store = _Store(self.root_dir)
        self._max_body_bytes = max_body_bytes
        self._max_concurrency = max_concurrency
        self._verbose = verbose
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The server's address (``http://127.0.0.1:<port>``): pass it as the Hub client's ``endpoint``."""
        if self._server is None:
            raise RuntimeError("LocalHub is not running; call start() or use it as a context manager")
        return self._server.endpoint

    def start(self) -> LocalHub:
        """Start serving on a free port of 127.0.0.1 (in a background thread); returns the hub."""
        if self._server is None:
            self._server = _Server(self._store, self._max_body_bytes, self._max_concurrency, self._verbose)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the server and wait for its thread; the stored repositories stay on disk."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    stop = close

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- direct inspection helpers for tests ---------------------------------------------------------
    def resolve(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha that ``revision`` (branch, tag or sha) points at."""
        with self._store.lock:
            return self._store.resolve(self._store.get_repo(repo_type, repo_id), revision)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Path -> content of every file at ``revision``."""
        with self._store.lock:
            state = self._store.get_repo(repo_type, repo_id)
            tree = state["commits"][self._store.resolve(state, revision)]["files"]
            return {p: self._store.blob_path(b).read_bytes() for p, b in tree.items()}

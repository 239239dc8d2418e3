"""The local Hub server against the real ``huggingface_hub`` client.

The client reads ``HF_ENDPOINT`` once, at import, into ``huggingface_hub.constants``; so in-process calls pass
``endpoint=hub.endpoint`` explicitly (``HfApi(endpoint=...)``, ``hf_hub_download(..., endpoint=...)``,
``snapshot_download(..., endpoint=...)``) and the offline check runs in a subprocess whose environment sets
``HF_HUB_OFFLINE=1`` before the client is imported. Every call also passes an explicit ``cache_dir`` and token,
so nothing reads or writes the user's Hugging Face home.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

_SERVER = Path(__file__).resolve().parents[1] / "src" / "tracetorch_zoo" / "testing" / "hub_server.py"


def _load_server():
    # Loaded by path: the module is stdlib-only and must not depend on the rest of the package being importable.
    spec = importlib.util.spec_from_file_location("_tracetorch_zoo_hub_server", _SERVER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hub_server = _load_server()
LocalHub = hub_server.LocalHub

REPO = "tracetorch/tiny"
TOKEN = "hf_local_any_token"


def _safetensors_bytes(tensors: dict[str, list[float]]) -> bytes:
    """A real safetensors file (F32 1-D tensors), written by hand so the test needs no torch."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def _read_safetensors(path: Path) -> dict[str, list[float]]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = list(struct.unpack(f"<{(b - a) // 4}f", blob[8 + n + a : 8 + n + b]))
    return out


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as h:
        yield h


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """create_repo, upload_folder, create_tag('v1'), then a second commit that changes config.json."""
    with pytest.MonkeyPatch.context() as mp:
        # With hf_xet installed, upload_folder opens a (never used) Xet session, which writes logs under
        # HF_XET_CACHE (read by hf_xet when the session starts): keep them out of the user's home.
        mp.setenv("HF_XET_CACHE", str(tmp_path_factory.mktemp("xet")))
        return _publish(hub, tmp_path_factory.mktemp("upload"))


def _publish(hub, folder):
    (folder / "states").mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden": 4, "version": 1}))
    (folder / "model.safetensors").write_bytes(_safetensors_bytes({"weight": [1.0, 2.0, 3.0, 4.0]}))
    (folder / "states" / "a.safetensors").write_bytes(_safetensors_bytes({"h": [0.5, -0.5]}))
    (folder / "README.md").write_text("# tiny\n\nA test model.\n")

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    url = api.create_repo(REPO)
    assert url.repo_id == REPO
    first = api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="first")
    api.create_tag(REPO, tag="v1")
    (folder / "config.json").write_text(json.dumps({"hidden": 4, "version": 2}))
    second = api.upload_folder(folder_path=folder, repo_id=REPO, commit_message="second")
    return {"api": api, "first": first.oid, "second": second.oid}


def test_commits_refs_and_history(hub, published):
    api, first, second = published["api"], published["first"], published["second"]
    assert len(first) == 40 and first != second
    refs = api.list_repo_refs(REPO)
    assert {r.name: r.target_commit for r in refs.branches} == {"main": second}
    assert {r.name: r.target_commit for r in refs.tags} == {"v1": first}  # the tag did not move with main
    history = [c.commit_id for c in api.list_repo_commits(REPO)]
    assert history[:2] == [second, first] and len(history) == 3  # + the repo's initial commit
    info = api.repo_info(REPO, revision="v1")
    assert info.sha == first
    assert sorted(s.rfilename for s in info.siblings) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "states/a.safetensors",
    ]
    # The second upload_folder only sent what changed (the client skips files whose oid the server reports).
    assert hub.files(REPO, first)["model.safetensors"] == hub.files(REPO, second)["model.safetensors"]
    assert json.loads(hub.files(REPO, "main")["config.json"])["version"] == 2


@pytest.mark.parametrize(("revision", "version"), [("v1", 1), ("first", 1), ("main", 2), ("second", 2)])
def test_hf_hub_download_at_revision(hub, published, tmp_path, revision, version):
    rev = published.get(revision, revision)
    path = hf_hub_download(REPO, "config.json", revision=rev, endpoint=hub.endpoint, cache_dir=tmp_path, token=TOKEN)
    assert json.loads(Path(path).read_text())["version"] == version
    expected_sha = published["first"] if version == 1 else published["second"]
    assert Path(path).parent.name == expected_sha  # cached under the resolved commit's snapshot
    weights = hf_hub_download(
        REPO, "states/a.safetensors", revision=rev, endpoint=hub.endpoint, cache_dir=tmp_path, token=TOKEN
    )
    assert _read_safetensors(Path(weights)) == {"h": [0.5, -0.5]}


@pytest.mark.parametrize(("revision", "version"), [("v1", 1), ("first", 1), ("main", 2)])
def test_snapshot_download_at_revision(hub, published, tmp_path, revision, version):
    rev = published.get(revision, revision)
    snap = Path(snapshot_download(REPO, revision=rev, endpoint=hub.endpoint, cache_dir=tmp_path, token=TOKEN))
    files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    assert files == ["README.md", "config.json", "model.safetensors", "states/a.safetensors"]
    assert json.loads((snap / "config.json").read_text())["version"] == version
    assert _read_safetensors(snap / "model.safetensors") == {"weight": [1.0, 2.0, 3.0, 4.0]}
    st = pytest.importorskip("safetensors.numpy")
    assert st.load_file(str(snap / "states" / "a.safetensors"))["h"].tolist() == [0.5, -0.5]


def test_offline_cache_for_pinned_revisions(hub, published, tmp_path):
    cache = tmp_path / "cache"
    hf_hub_download(REPO, "config.json", revision="v1", endpoint=hub.endpoint, cache_dir=cache, token=TOKEN)
    snapshot_download(REPO, revision=published["first"], endpoint=hub.endpoint, cache_dir=cache, token=TOKEN)
    script = textwrap.dedent(
        """
        import json, sys
        from huggingface_hub import constants, hf_hub_download, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
        assert constants.HF_HUB_OFFLINE
        cache, first = sys.argv[1], sys.argv[2]
        p = hf_hub_download("tracetorch/tiny", "config.json", revision="v1", cache_dir=cache)
        assert json.load(open(p))["version"] == 1, p
        snap = snapshot_download("tracetorch/tiny", revision=first, cache_dir=cache)
        assert json.load(open(snap + "/config.json"))["version"] == 1
        try:
            hf_hub_download("tracetorch/tiny", "config.json", revision="main", cache_dir=cache)
        except LocalEntryNotFoundError:
            print("OFFLINE-OK")
        """
    )
    # No server listens on the discard port: any network use would fail (and offline mode forbids it anyway).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "h")}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(cache), published["first"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OFFLINE-OK" in proc.stdout

    # In-process too: local_files_only never contacts the endpoint (a dead port here).
    path = hf_hub_download(
        REPO, "config.json", revision="v1", endpoint="http://127.0.0.1:9", cache_dir=cache, local_files_only=True
    )
    assert json.loads(Path(path).read_text())["version"] == 1
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "README.md", revision="main", cache_dir=cache, local_files_only=True)


def test_typed_errors(hub, published, tmp_path):
    kw = {"endpoint": hub.endpoint, "cache_dir": tmp_path, "token": TOKEN}
    api = published["api"]
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tracetorch/missing", "config.json", **kw)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("tracetorch/missing")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("tracetorch/missing", **kw)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="v404", **kw)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="0" * 40, **kw)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="v404", **kw)
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(REPO, revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", **kw)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "states/missing.safetensors", revision="v1", **kw)


def test_write_conflicts(hub, published):
    api = published["api"]
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(REPO)
    assert exc.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(REPO, tag="v1")
    assert exc.value.response.status_code == 409
    api.create_tag(REPO, tag="v1", exist_ok=True)
    # A commit whose parent is no longer the branch head is refused and leaves the branch alone.
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(
            path_or_fileobj=b"stale", path_in_repo="stale.txt", repo_id=REPO, parent_commit=published["first"]
        )
    assert exc.value.response.status_code == 412
    assert hub.resolve(REPO, "main") == published["second"]


def test_resolve_headers_and_range(hub, published):
    content = hub.files(REPO, "v1")["config.json"]
    url = f"{hub.endpoint}/{REPO}/resolve/v1/config.json"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
        assert r.headers["X-Repo-Commit"] == published["first"]
        assert r.headers["ETag"] == f'"{hub_server.git_blob_oid(content)}"'
        assert int(r.headers["Content-Length"]) == len(content)
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=2-"})) as r:
        assert r.status == 206 and r.read() == content[2:]
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{hub.endpoint}/{REPO}/resolve/main/nope.txt")
    assert exc.value.code == 404 and exc.value.headers["X-Error-Code"] == "EntryNotFound"
    assert exc.value.headers["X-Repo-Commit"] == published["second"]


def test_state_persists_and_limits(hub, published, tmp_path):
    assert hub.endpoint.startswith("http://127.0.0.1:")
    # A second server on the same root sees the same repos, refs and blobs.
    with LocalHub(hub.root_dir) as again:
        assert again.resolve(REPO, "v1") == published["first"]
        assert again.files(REPO, "main") == hub.files(REPO, "main")
    with LocalHub(tmp_path / "small", max_body_bytes=1024) as small:
        HfApi(endpoint=small.endpoint, token=TOKEN).create_repo("a/b")
        req = urllib.request.Request(f"{small.endpoint}/api/models/a/b/commit/main", data=b"x" * 4096, method="POST")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req)
        assert exc.value.code == 413
    with pytest.raises(RuntimeError):
        _ = small.endpoint  # stopped


def test_dataset_repo_branch_and_delete(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    repo, kw = "tracetorch/data", {"repo_type": "dataset"}
    api.create_repo(repo, **kw)
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id=repo, **kw)
    api.create_branch(repo, branch="dev", **kw)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="dev.txt", repo_id=repo, revision="dev", **kw)
    assert api.list_repo_files(repo, **kw) == ["data/train.csv"]  # main did not move with dev
    assert sorted(api.list_repo_files(repo, revision="dev", **kw)) == ["data/train.csv", "dev.txt"]
    path = hf_hub_download(repo, "data/train.csv", endpoint=hub.endpoint, cache_dir=tmp_path, token=TOKEN, **kw)
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    api.delete_file("data/train.csv", repo, **kw)
    assert api.list_repo_files(repo, **kw) == []
    api.delete_repo(repo, **kw)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(repo, **kw)


def _raw_request(endpoint: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` on a fresh socket and return the whole reply (``b''`` if the server closed silently)."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_json_bodies_that_are_not_objects_get_a_400(hub, body):
    """Was: ``[...].get`` raised AttributeError inside the handler and the connection dropped without a reply."""
    for path in ("/api/repos/create", "/api/models/tracetorch/tiny/tag/main"):
        req = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        reply = _raw_request(hub.endpoint, req)
        assert reply.startswith(b"HTTP/1.1 4"), (path, body, reply[:200])


@pytest.mark.parametrize("length", ["-1", "abc"])
def test_an_invalid_content_length_is_refused_at_once(hub, length):
    """Was: ``Content-Length: -1`` made the server read until the client closed, holding a slot for 30 s."""
    import time

    req = (
        f"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    start = time.monotonic()
    reply = _raw_request(hub.endpoint, req, timeout=10.0)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert time.monotonic() - start < 5.0

"""The fake Hub server, driven only through the real huggingface_hub and datasets clients."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub import CommitOperationAdd, HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from tests.fakes.hub_env import HubSession, fake_hub_fixture, fake_hub_session  # noqa: F401 - fixture
from tests.fakes.hub_server import FakeHub, git_blob_sha, resolve_url

REPO = "tester/smoltrace-results"
CARD = "---\nlicense: mit\npretty_name: Results\n---\n# Results\n"


def parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


@pytest.fixture
def api(fake_hub: HubSession) -> HfApi:
    return HfApi(endpoint=fake_hub.url, token=fake_hub.token)


def publish(api: HfApi, repo_id: str, files: dict[str, bytes | str], message: str = "publish", private: bool = False) -> str:
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c.encode() if isinstance(c, str) else c) for p, c in files.items()]
    return api.create_commit(repo_id, operations=ops, repo_type="dataset", commit_message=message).oid


def raw(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# -- identity and repos -----------------------------------------------------------------------
def test_whoami_knows_the_token_and_rejects_others(fake_hub: HubSession, api: HfApi) -> None:
    assert api.whoami()["name"] == "tester"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=fake_hub.url, token="hf_wrong").whoami()
    assert err.value.response.status_code == 401


def test_create_repo_is_private_and_conflicts_without_exist_ok(fake_hub: HubSession, api: HfApi) -> None:
    url = api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    assert url.repo_id == REPO and url.repo_type == "dataset"
    api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)  # idempotent
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="dataset", exist_ok=False)
    assert err.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("someone-else/x", repo_type="dataset")
    assert err.value.response.status_code == 403
    info = api.dataset_info(REPO)
    assert info.private is True
    assert len(info.sha) == 40
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]  # the Hub's initial commit
    assert fake_hub.hub.count("create_repo") == 4


# -- commits, listings, downloads -------------------------------------------------------------
def test_commit_then_list_and_download(fake_hub: HubSession, api: HfApi, tmp_path: Path) -> None:
    data = parquet([{"task_id": "a", "success": True}, {"task_id": "b", "success": False}])
    sha = publish(api, REPO, {"data/train-00000-of-00001.parquet": data, "README.md": CARD}, message="Add results")
    assert len(sha) == 40
    assert fake_hub.hub.count("preupload") == 1 and fake_hub.hub.count("commit") == 1

    info = api.dataset_info(REPO)
    assert info.sha == sha
    assert info.last_modified is not None
    assert info.card_data["license"] == "mit"
    assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]

    top = {e.path: type(e).__name__ for e in api.list_repo_tree(REPO, repo_type="dataset")}
    assert top == {"data": "RepoFolder", ".gitattributes": "RepoFile", "README.md": "RepoFile"}
    [entry] = api.list_repo_tree(REPO, "data", repo_type="dataset", expand=True)
    assert entry.path == "data/train-00000-of-00001.parquet"
    assert entry.size == len(data) and entry.blob_id == git_blob_sha(data)
    assert entry.last_commit.oid == sha and entry.last_commit.title == "Add results"

    assert api.file_exists(REPO, "README.md", repo_type="dataset")
    assert not api.file_exists(REPO, "missing.md", repo_type="dataset")
    infos = {p.path: p for p in api.get_paths_info(REPO, ["README.md", "data", "missing.md"], repo_type="dataset")}
    assert set(infos) == {"README.md", "data"}
    assert infos["README.md"].size == len(CARD)

    local = Path(hf_hub_download(REPO, "data/train-00000-of-00001.parquet", repo_type="dataset", token=fake_hub.token))
    assert local.read_bytes() == data
    assert local.parent.parent.name == sha  # snapshots/<commit sha>/data/...
    snap = Path(snapshot_download(REPO, repo_type="dataset", token=fake_hub.token, local_dir=tmp_path / "snap"))
    assert (snap / "README.md").read_text() == CARD
    assert (snap / "data/train-00000-of-00001.parquet").read_bytes() == data


def test_revisions_keep_old_content(fake_hub: HubSession, api: HfApi) -> None:
    first = publish(api, REPO, {"notes.txt": "one"})
    second = publish(api, REPO, {"notes.txt": "two"})
    assert first != second
    assert Path(hf_hub_download(REPO, "notes.txt", repo_type="dataset", revision=first, token=fake_hub.token)).read_text() == "one"
    assert Path(hf_hub_download(REPO, "notes.txt", repo_type="dataset", token=fake_hub.token)).read_text() == "two"
    assert api.dataset_info(REPO, revision=first).sha == first
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.commit_id for c in commits[:2]] == [second, first]
    assert commits[-1].title == "initial commit"
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", second)]


def test_unchanged_files_are_not_recommitted(fake_hub: HubSession, api: HfApi) -> None:
    sha = publish(api, REPO, {"a.txt": "same"})
    again = api.create_commit(REPO, operations=[CommitOperationAdd("a.txt", b"same")], repo_type="dataset", commit_message="noop")
    assert again.oid == sha  # preupload reported the same git oid, so the client skipped the commit
    assert fake_hub.hub.count("commit") == 1


def test_upload_file_and_delete_file(fake_hub: HubSession, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"x,y\n1,2\n", path_in_repo="extra/table.csv", repo_id=REPO, repo_type="dataset")
    assert fake_hub.hub.read_file(REPO, "extra/table.csv") == b"x,y\n1,2\n"
    api.delete_file("extra/table.csv", REPO, repo_type="dataset", commit_message="drop table")
    assert not api.file_exists(REPO, "extra/table.csv", repo_type="dataset")
    assert fake_hub.hub.commit_history(REPO)[0].title == "drop table"
    with pytest.raises(EntryNotFoundError):
        api.delete_file("extra/table.csv", REPO, repo_type="dataset")


def test_model_repos_use_the_unprefixed_resolve_route(fake_hub: HubSession, api: HfApi) -> None:
    api.create_repo("tester/tiny-model")
    api.upload_file(path_or_fileobj=b'{"hidden": 8}', path_in_repo="config.json", repo_id="tester/tiny-model")
    assert api.model_info("tester/tiny-model").private is False
    path = hf_hub_download("tester/tiny-model", "config.json")  # default endpoint is patched to the fake
    assert json.loads(Path(path).read_text()) == {"hidden": 8}
    assert any(r.path.startswith("/tester/tiny-model/resolve/main/config.json") for r in fake_hub.hub.requests)


def test_resolve_headers_and_ranges(fake_hub: HubSession, api: HfApi) -> None:
    blob = bytes(range(256)) * 4
    sha = publish(api, REPO, {"blob.bin": blob})
    url = resolve_url(fake_hub.url, REPO, "blob.bin")
    status, headers, body = raw("HEAD", url)
    assert status == 200 and body == b""
    assert headers["X-Repo-Commit"] == sha
    assert headers["ETag"] == f'"{git_blob_sha(blob)}"'
    assert headers["Content-Length"] == str(len(blob))
    status, headers, body = raw("GET", url, {"Range": "bytes=10-19"})
    assert status == 206 and body == blob[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(blob)}"
    assert raw("GET", url, {"Range": "bytes=5000-"})[0] == 416
    fs = HfFileSystem(endpoint=fake_hub.url, token=fake_hub.token)
    assert fs.cat_file(f"datasets/{REPO}/blob.bin", start=100, end=164) == blob[100:164]
    assert fake_hub.hub.count("resolve", method="GET", status=206) >= 2


# -- errors the clients map -------------------------------------------------------------------
def test_unknown_repo_revision_and_file(fake_hub: HubSession, api: HfApi) -> None:
    publish(api, REPO, {"README.md": CARD})
    with pytest.raises(RepositoryNotFoundError) as err:
        api.dataset_info("tester/nope")
    assert err.value.response.status_code == 404
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="f" * 40)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "README.md", repo_type="dataset", revision="no-such-branch", token=fake_hub.token)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", repo_type="dataset", token=fake_hub.token)
    codes = {
        "repo": raw("GET", f"{fake_hub.url}/api/datasets/tester/nope", {"Authorization": f"Bearer {fake_hub.token}"}),
        "revision": raw("GET", f"{fake_hub.url}/api/datasets/{REPO}/revision/{'f' * 40}"),
        "entry": raw("GET", resolve_url(fake_hub.url, REPO, "missing.txt")),
    }
    assert {k: (v[0], v[1].get("X-Error-Code")) for k, v in codes.items()} == {
        "repo": (404, "RepoNotFound"),
        "revision": (404, "RevisionNotFound"),
        "entry": (404, "EntryNotFound"),
    }


def test_private_repo_is_hidden_without_the_token(fake_hub: HubSession, api: HfApi) -> None:
    publish(api, REPO, {"data/train-00000-of-00001.parquet": parquet([{"v": 1}])}, private=True)
    anonymous = HfApi(endpoint=fake_hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError) as err:
        anonymous.dataset_info(REPO)
    assert err.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "data/train-00000-of-00001.parquet", repo_type="dataset", token=False)
    with pytest.raises(DatasetNotFoundError):
        datasets.load_dataset(REPO, split="train")
    fake_hub.hub.tokens["hf_other"] = "other"
    with pytest.raises(RepositoryNotFoundError) as err:
        HfApi(endpoint=fake_hub.url, token="hf_other").dataset_info(REPO)
    assert err.value.response.status_code == 404
    assert datasets.load_dataset(REPO, split="train", token=fake_hub.token)["v"] == [1]


# -- datasets.load_dataset --------------------------------------------------------------------
def test_load_dataset_with_a_card_and_one_shard(fake_hub: HubSession, api: HfApi) -> None:
    rows = [{"task_id": f"t{i}", "steps": i} for i in range(5)]
    publish(api, REPO, {"data/train-00000-of-00001.parquet": parquet(rows), "README.md": CARD}, private=True)
    ds = datasets.load_dataset(REPO, split="train", token=fake_hub.token)
    assert ds.num_rows == 5
    assert ds.to_list() == rows


def test_load_dataset_sees_the_union_of_appended_shards(fake_hub: HubSession, api: HfApi) -> None:
    board = "tester/smoltrace-leaderboard"
    first = publish(api, board, {"data/run-a.parquet": parquet([{"run_id": "run-a", "score": 0.5}]), "README.md": CARD})
    assert datasets.load_dataset(board, split="train", token=fake_hub.token)["run_id"] == ["run-a"]
    second = publish(api, board, {"data/run-b.parquet": parquet([{"run_id": "run-b", "score": 0.75}])})
    assert second != first
    ds = datasets.load_dataset(board, split="train", token=fake_hub.token)
    assert sorted(zip(ds["run_id"], ds["score"], strict=True)) == [("run-a", 0.5), ("run-b", 0.75)]
    old = datasets.load_dataset(board, split="train", token=fake_hub.token, revision=first)
    assert old["run_id"] == ["run-a"]


# -- failure injection ------------------------------------------------------------------------
def test_429_on_repo_info_surfaces_with_retry_after(fake_hub: HubSession, api: HfApi) -> None:
    publish(api, REPO, {"a.txt": "a"})
    fake_hub.hub.inject_failure("repo_info", status=429, retry_after=7)
    with pytest.raises(HfHubHTTPError) as err:
        api.dataset_info(REPO)
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert fake_hub.hub.count("repo_info") == 1  # repo_info is not retried by huggingface_hub
    assert api.dataset_info(REPO).sha  # the injection was for one call only


def test_429_on_preupload_is_retried_after_retry_after(fake_hub: HubSession, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    fake_hub.hub.inject_failure("preupload", status=429, retry_after=0)
    start = time.monotonic()
    sha = publish(api, REPO, {"a.txt": "a"})
    assert time.monotonic() - start >= 1.0  # huggingface_hub sleeps Retry-After + 1 s
    assert fake_hub.hub.count("preupload", status=429) == 1
    assert fake_hub.hub.count("preupload", status=200) == 1
    assert fake_hub.hub.list_files(REPO) == [".gitattributes", "a.txt"]
    assert fake_hub.hub.get_repo(REPO).head.oid == sha


def test_429_on_download_head_is_retried(fake_hub: HubSession, api: HfApi) -> None:
    publish(api, REPO, {"a.txt": "payload"})
    fake_hub.hub.inject_failure("resolve", status=429, retry_after=0, method="HEAD")
    path = hf_hub_download(REPO, "a.txt", repo_type="dataset", token=fake_hub.token)
    assert Path(path).read_text() == "payload"
    assert fake_hub.hub.count("resolve", method="HEAD", status=429) == 1
    assert fake_hub.hub.count("resolve", method="HEAD", status=200) == 1


def test_failed_commits_write_nothing(fake_hub: HubSession, api: HfApi) -> None:
    base = publish(api, REPO, {"a.txt": "a"})
    fake_hub.hub.fail_next_commit(status=500)
    with pytest.raises(HfHubHTTPError) as err:
        publish(api, REPO, {"b.txt": "b"})
    assert err.value.response.status_code == 500
    fake_hub.hub.inject_failure("commit", status=429, retry_after=0)
    with pytest.raises(HfHubHTTPError) as err:
        publish(api, REPO, {"b.txt": "b"})
    assert err.value.response.status_code == 429  # the commit POST is not retried by huggingface_hub
    assert fake_hub.hub.count("commit") == 3
    assert fake_hub.hub.get_repo(REPO).head.oid == base
    with pytest.raises(HfHubHTTPError) as err:  # the Hub refuses a stale parent commit
        api.create_commit(
            REPO, operations=[CommitOperationAdd("b.txt", b"b")], repo_type="dataset", commit_message="x", parent_commit="0" * 40
        )
    assert err.value.response.status_code == 412
    assert fake_hub.hub.list_files(REPO) == [".gitattributes", "a.txt"]


def test_inject_failure_rejects_unknown_routes() -> None:
    with pytest.raises(ValueError, match="unknown route"):
        FakeHub().inject_failure("nope")


# -- environment plumbing ---------------------------------------------------------------------
def test_in_process_patch_is_undone(tmp_path: Path) -> None:
    from datasets import config
    from huggingface_hub import constants

    before = (constants.ENDPOINT, config.HF_ENDPOINT, constants.HF_HUB_CACHE)
    with fake_hub_session(tmp_path) as s:
        assert constants.ENDPOINT == s.url == config.HF_ENDPOINT
        assert constants.HF_HUB_CACHE.startswith(str(tmp_path))
    after = (constants.ENDPOINT, config.HF_ENDPOINT, constants.HF_HUB_CACHE)
    assert after == before


def test_subprocess_uses_the_fake_through_the_environment(fake_hub: HubSession, api: HfApi) -> None:
    publish(api, REPO, {"data/train-00000-of-00001.parquet": parquet([{"n": 1}, {"n": 2}]), "README.md": CARD}, private=True)
    script = textwrap.dedent(
        f"""
        import json
        import datasets
        from huggingface_hub import HfApi, hf_hub_download
        token = {fake_hub.token!r}
        name = HfApi(token=token).whoami()["name"]
        card = open(hf_hub_download({REPO!r}, "README.md", repo_type="dataset", token=token)).read()
        rows = datasets.load_dataset({REPO!r}, split="train", token=token).to_dict()["n"]
        print(json.dumps({{"name": name, "card": card, "rows": rows}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], env=fake_hub.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"name": "tester", "card": CARD, "rows": [1, 2]}
    assert fake_hub.hub.count("whoami") == 1

"""A protocol-level fake of the Hugging Face Hub HTTP API for tests (stdlib only).

A real HTTP/1.1 server on 127.0.0.1, port 0, that speaks enough of the Hub API for the real
`huggingface_hub` client (HfApi, hf_hub_download, snapshot_download, HfFileSystem) and
`datasets.load_dataset` to work against it unchanged:

    with FakeHub() as hub:                       # token "hf_test_token" -> user "tester"
        api = HfApi(endpoint=hub.url, token=hub.token)
        api.create_repo("tester/ds", repo_type="dataset", private=True)
        ...
        hub.inject_failure("preupload", status=429, retry_after=0)   # next preupload call gets a 429
        hub.count("commit")                                          # commit calls seen so far

Repos live in memory: every commit stores a full snapshot {path: bytes}, so any commit sha stays
readable as a revision. Only the "main" branch exists (plus commit shas as revisions); a new repo
gets an "initial commit" with a `.gitattributes`, like the real Hub. The preupload endpoint answers
uploadMode "regular" for every file, so no LFS or Xet transfer is needed, unless the hub is made
with `lfs_suffixes` (e.g. (".parquet",), as the real Hub's .gitattributes does): those files are
"lfs", uploaded through the LFS batch API and a "basic" PUT, and committed as `lfsFile` (what
`datasets.push_to_hub` needs: it deletes its temporary Parquet file after the LFS upload).

Access rules follow the Hub: reads of public repos need no token; a private repo read without a
token gets 401 (X-Error-Code RepoNotFound), with another user's token 404; unknown repos get 404
RepoNotFound with a token and 401 RepoNotFound without; writes need a token whose user owns the
namespace (else 401/403). An invalid token gets 401 "Invalid credentials in Authorization header".

Routes (the names accepted by `inject_failure` and `count`):

    whoami          GET  /api/whoami-v2
    create_repo     POST /api/repos/create
    delete_repo     DELETE /api/repos/delete
    repo_settings   PUT  /api/{type}s/{repo_id}/settings
    repo_info       GET  /api/{type}s/{repo_id}[/revision/{rev}]        (?expand=..., ?blobs=true)
    tree            GET  /api/{type}s/{repo_id}/tree/{rev}[/{path}]     (?recursive=, ?expand=)
    paths_info      POST /api/{type}s/{repo_id}/paths-info/{rev}        (form: paths=..., expand=)
    preupload       POST /api/{type}s/{repo_id}/preupload/{rev}
    commit          POST /api/{type}s/{repo_id}/commit/{rev}            (NDJSON, base64 files)
    refs            GET  /api/{type}s/{repo_id}/refs
    list_commits    GET  /api/{type}s/{repo_id}/commits/{rev}
    validate_yaml   POST /api/validate-yaml
    resolve         HEAD/GET /[datasets/]{repo_id}/resolve/{rev}/{path} (Range supported)
    lfs_batch       POST /[datasets/]{repo_id}.git/info/lfs/objects/batch (only with lfs_suffixes)
    lfs_upload      PUT  /lfs-upload/{sha256}                            (the "basic" transfer)

Anything else answers 404 (e.g. the parquet export under `refs/convert/parquet` is a
RevisionNotFound, like a repo the Hub never converted).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

DEFAULT_TOKEN = "hf_test_token"
DEFAULT_USER = "tester"
REPO_TYPES = ("model", "dataset")
ROUTES = (
    "whoami",
    "create_repo",
    "delete_repo",
    "repo_settings",
    "repo_info",
    "tree",
    "paths_info",
    "preupload",
    "commit",
    "refs",
    "list_commits",
    "validate_yaml",
    "resolve",
    "lfs_batch",
    "lfs_upload",
)
_REPO_ACTIONS = {"revision", "tree", "paths-info", "preupload", "commit", "refs", "commits", "settings", "resolve"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
INITIAL_GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(content: bytes) -> str:
    """The git OID of a blob: what the Hub reports as `oid`/ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    timestamp: float
    files: dict[str, bytes]  # full snapshot of the tree at this commit

    @property
    def date(self) -> str:
        return _iso(self.timestamp)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: float
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else ""

    @property
    def head(self) -> Commit:
        return self.commits[self.branches["main"]]

    def resolve_revision(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)

    def history(self, commit: Commit) -> Iterator[Commit]:
        current: Commit | None = commit
        while current is not None:
            yield current
            current = self.commits.get(current.parent) if current.parent else None

    def last_commit_for(self, commit: Commit, path: str, is_dir: bool) -> Commit:
        """The most recent commit, at or before `commit`, that changed `path` (a file or a folder)."""

        def state(c: Commit) -> Any:
            if is_dir:
                prefix = path + "/"
                return sorted((p, git_blob_sha(b)) for p, b in c.files.items() if p.startswith(prefix))
            return c.files.get(path)

        chain = list(self.history(commit))
        for newer, older in itertools.pairwise(chain):
            if state(newer) != state(older):
                return newer
        return chain[-1]


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    route: str | None
    status: int
    user: str | None


@dataclass
class _Failure:
    route: str
    status: int
    remaining: int
    retry_after: int | None
    method: str | None
    message: str


class HubError(Exception):
    """An HTTP error answer, with the Hub's X-Error-Code / X-Error-Message headers."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body or {}


def _repo_not_found(user: str | None) -> HubError:
    # Like the Hub: 401 when anonymous (does not leak whether the repo exists), 404 when authenticated.
    return HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")


class FakeHub:
    """In-memory Hub server. Use as a context manager, or call start()/stop().

    Args:
        tokens: token -> user name map (default {"hf_test_token": "tester"}).
        orgs: org name -> member user names; members may read/write repos in the org namespace.
        host: interface to bind (default 127.0.0.1); the port is always chosen by the OS.
    """

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        orgs: dict[str, list[str]] | None = None,
        host: str = "127.0.0.1",
        lfs_suffixes: tuple[str, ...] = (),
    ) -> None:
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.lfs_objects: dict[str, bytes] = {}  # sha256 hex -> content, uploaded but maybe not committed yet
        self.tokens: dict[str, str] = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER}
        self.orgs: dict[str, set[str]] = {k: set(v) for k, v in (orgs or {}).items()}
        self.host = host
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []  # tracebacks of bugs in the fake (answered as 500)
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def token(self) -> str:
        """The first configured token (by default "hf_test_token")."""
        return next(iter(self.tokens))

    @property
    def user(self) -> str:
        return self.tokens[self.token]

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        server = ThreadingHTTPServer((self.host, 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections of the clients' pools
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- failure injection and request log ----------------------------------------------------
    def inject_failure(
        self,
        route: str,
        *,
        status: int = 500,
        times: int = 1,
        retry_after: int | None = None,
        method: str | None = None,
        message: str = "Injected failure",
    ) -> None:
        """Make the next `times` calls of `route` (see ROUTES; "*" for any) answer `status`.

        A 429 carries `Retry-After: retry_after` (default 0 seconds; huggingface_hub sleeps that
        plus 1 second before retrying on the routes it retries). `method` restricts it, e.g. "HEAD".
        """
        if route != "*" and route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
        if status == 429 and retry_after is None:
            retry_after = 0
        with self._lock:
            self._failures.append(_Failure(route, status, times, retry_after, method.upper() if method else None, message))

    def fail_next_commit(self, *, status: int = 500, times: int = 1, message: str = "Injected commit failure") -> None:
        """Make the next commit(s) fail; nothing is written to the repo."""
        self.inject_failure("commit", status=status, times=times, message=message)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def count(self, route: str | None = None, method: str | None = None, status: int | None = None) -> int:
        """How many requests were seen, optionally filtered by route, method and answered status."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (route is None or r.route == route)
                and (method is None or r.method == method.upper())
                and (status is None or r.status == status)
            )

    def _take_failure(self, route: str, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.route in (route, "*") and failure.method in (None, method):
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                    return failure
        return None

    # -- direct (non-HTTP) access for seeding and inspecting ----------------------------------
    def add_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Create a repo (with its initial commit) without going through HTTP."""
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {REPO_TYPES}")
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                raise ValueError(f"{repo_type} {repo_id} exists")
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private, created_at=time.time())
            self.repos[key] = repo
            self._commit(repo, "initial commit", "", repo.namespace or DEFAULT_USER, {".gitattributes": INITIAL_GITATTRIBUTES}, [])
            return repo

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        *,
        repo_type: str = "dataset",
        message: str = "Upload files",
        delete: list[str] | tuple[str, ...] = (),
    ) -> str:
        """Commit files to "main" without going through HTTP; returns the commit sha."""
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            blobs = {p: c.encode() if isinstance(c, str) else c for p, c in files.items()}
            return self._commit(repo, message, "", repo.namespace or DEFAULT_USER, blobs, list(delete)).oid

    def get_repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"no {repo_type} repo {repo_id}") from None

    def read_file(self, repo_id: str, path: str, *, repo_type: str = "dataset", revision: str = "main") -> bytes:
        repo = self.get_repo(repo_id, repo_type)
        commit = repo.resolve_revision(revision)
        if commit is None:
            raise KeyError(f"no revision {revision}")
        return commit.files[path]

    def list_files(self, repo_id: str, *, repo_type: str = "dataset", revision: str = "main") -> list[str]:
        commit = self.get_repo(repo_id, repo_type).resolve_revision(revision)
        if commit is None:
            raise KeyError(f"no revision {revision}")
        return sorted(commit.files)

    def commit_history(self, repo_id: str, *, repo_type: str = "dataset") -> list[Commit]:
        """Commits of "main", newest first."""
        repo = self.get_repo(repo_id, repo_type)
        return list(repo.history(repo.head))

    # -- internals ----------------------------------------------------------------------------
    def _commit(self, repo: Repo, title: str, message: str, author: str, adds: dict[str, bytes], deletes: list[str]) -> Commit:
        parent = repo.head if "main" in repo.branches else None
        files = dict(parent.files) if parent else {}
        for path in deletes:
            if path.endswith("/") or (path not in files and any(p.startswith(path + "/") for p in files)):
                prefix = path.rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            else:
                files.pop(path, None)
        files.update(adds)
        ts = max(time.time(), parent.timestamp + 0.001 if parent else 0.0)
        seed = f"{repo.repo_type}/{repo.repo_id}|{parent.oid if parent else ''}|{title}|{ts}|{next(self._counter)}"
        digest = hashlib.sha1(seed.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
        commit = Commit(digest.hexdigest(), parent.oid if parent else None, title, message, author, ts, files)
        repo.commits[commit.oid] = commit
        repo.branches["main"] = commit.oid
        return commit

    def _user_for(self, authorization: str | None) -> str | None:
        """The user of a `Bearer` token; None when there is no authorization header."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _can_write(self, user: str, namespace: str) -> bool:
        return namespace == user or user in self.orgs.get(namespace, set())


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the bound subclass
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections are dropped after this
    server_version = "FakeHub/1.0"

    # -- plumbing -----------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.hub._lock:
            self.hub._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        # Logged before answering, so a client that got its answer always finds its request in the log.
        with self.hub._lock:
            self.hub.requests.append(RequestRecord(self.command, self.path, self._route_name, status, self._user))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"fake-{id(self):x}-{time.monotonic_ns()}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.status, {"error": err.message, **err.body}, headers)

    def _dispatch(self) -> None:
        self._route_name: str | None = None
        self._user: str | None = None
        body = self._read_body()
        try:
            parts = urlsplit(self.path)
            self._query = parse_qs(parts.query, keep_blank_values=True)
            raw_segments = [s for s in parts.path.split("/") if s]
            route, handler, args = self._route(raw_segments)
            self._route_name = route
            if route is None:
                raise HubError(404, f"Not found: {self.command} {parts.path}")
            failure = self.hub._take_failure(route, self.command)
            if failure is not None:
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                raise HubError(failure.status, failure.message, None, headers)
            self._user = self.hub._user_for(self.headers.get("Authorization"))
            handler(self._user, body, *args)
        except HubError as err:
            self._error(err)
        except OSError:  # the client went away mid-answer
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 - a bug in the fake: answer 500 (and keep it) rather than hang the client
            with self.hub._lock:
                self.hub.internal_errors.append(traceback.format_exc())
            self._error(HubError(500, f"FakeHub internal error: {type(err).__name__}: {err}"))

    # -- routing ------------------------------------------------------------------------------
    def _route(self, segs: list[str]) -> tuple[str | None, Any, tuple]:
        m = self.command
        if segs[:2] == ["api", "whoami-v2"] and m == "GET":
            return "whoami", self._whoami, ()
        if segs[:3] == ["api", "repos", "create"] and m == "POST":
            return "create_repo", self._create_repo, ()
        if segs[:3] == ["api", "repos", "delete"] and m == "DELETE":
            return "delete_repo", self._delete_repo, ()
        if segs[:2] == ["api", "validate-yaml"] and m == "POST":
            return "validate_yaml", self._validate_yaml, ()
        if len(segs) >= 3 and segs[0] == "api" and segs[1] in ("models", "datasets"):
            repo_type = segs[1][:-1]
            rest = segs[2:]
            if len(rest) >= 2 and rest[1] not in _REPO_ACTIONS:
                repo_id, rest = f"{rest[0]}/{rest[1]}", rest[2:]
            else:
                repo_id, rest = rest[0], rest[1:]
            action = rest[0] if rest else None
            tail = [unquote(s) for s in rest[1:]]
            if action is None and m == "GET":
                return "repo_info", self._repo_info, (repo_type, repo_id, None)
            if action == "revision" and m == "GET" and tail:
                return "repo_info", self._repo_info, (repo_type, repo_id, "/".join(tail))
            if action == "tree" and m == "GET" and tail:
                rev, path = _split_revision(tail)
                return "tree", self._tree, (repo_type, repo_id, rev, path)
            if action == "paths-info" and m == "POST" and tail:
                return "paths_info", self._paths_info, (repo_type, repo_id, "/".join(tail))
            if action == "preupload" and m == "POST" and tail:
                return "preupload", self._preupload, (repo_type, repo_id, "/".join(tail))
            if action == "commit" and m == "POST" and tail:
                return "commit", self._commit, (repo_type, repo_id, "/".join(tail))
            if action == "refs" and m == "GET" and not tail:
                return "refs", self._refs, (repo_type, repo_id)
            if action == "commits" and m == "GET" and tail:
                return "list_commits", self._list_commits, (repo_type, repo_id, "/".join(tail))
            if action == "settings" and m == "PUT" and not tail:
                return "repo_settings", self._settings, (repo_type, repo_id)
            return None, None, ()
        if m == "POST" and segs[-4:] == ["info", "lfs", "objects", "batch"] and segs[-5].endswith(".git"):
            head = segs[:-4]
            repo_type = "model"
            if head and head[0] in ("datasets", "models"):
                repo_type, head = head[0][:-1], head[1:]
            head[-1] = head[-1][: -len(".git")]
            return "lfs_batch", self._lfs_batch, (repo_type, "/".join(head))
        if m == "PUT" and len(segs) == 2 and segs[0] == "lfs-upload":
            return "lfs_upload", self._lfs_upload, (segs[1],)
        if "resolve" in segs and m in ("GET", "HEAD"):
            idx = segs.index("resolve")
            head = segs[:idx]
            repo_type = "model"
            if head and head[0] in ("datasets", "models"):
                repo_type = head[0][:-1]
                head = head[1:]
            if 1 <= len(head) <= 2 and len(segs) > idx + 2:
                rev, path = _split_revision([unquote(s) for s in segs[idx + 1 :]])
                if path:
                    return "resolve", self._resolve, (repo_type, "/".join(head), rev, path)
        return None, None, ()

    # -- access helpers -----------------------------------------------------------------------
    def _readable_repo(self, user: str | None, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            raise _repo_not_found(user)
        if repo.private and (user is None or not self.hub._can_write(user, repo.namespace)):
            raise _repo_not_found(user)
        return repo

    def _writable_repo(self, user: str | None, repo_type: str, repo_id: str) -> Repo:
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repo", "RepoNotFound")
        repo = self._readable_repo(user, repo_type, repo_id)
        if not self.hub._can_write(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    @staticmethod
    def _revision(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve_revision(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _base(self) -> str:
        return self.hub.url

    def _repo_url(self, repo: Repo) -> str:
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        return f"{self._base()}/{prefix}{repo.repo_id}"

    # -- handlers -----------------------------------------------------------------------------
    def _whoami(self, user: str | None, body: bytes) -> None:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": org, "fullname": org} for org, members in self.hub.orgs.items() if user in members]
        self._json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.title(),
                "email": f"{user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            },
        )

    def _create_repo(self, user: str | None, body: bytes) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Unsupported repo type {repo_type!r} in FakeHub")
        name = payload.get("name") or ""
        namespace = payload.get("organization") or user
        if not _NAME_RE.match(name) or not _NAME_RE.match(namespace):
            raise HubError(400, f"Invalid repo name {namespace}/{name}")
        if not self.hub._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
        private = payload.get("private")
        if "visibility" in payload:
            private = payload["visibility"] != "public"
        repo_id = f"{namespace}/{name}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:
                repo = self.hub.repos[(repo_type, repo_id)]
                raise HubError(409, "You already created this repo", body={"url": self._repo_url(repo)})
            repo = self.hub.add_repo(repo_id, repo_type, bool(private))
        self._json(200, {"url": self._repo_url(repo), "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self, user: str | None, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload.get('name')}"
        with self.hub._lock:
            self._writable_repo(user, repo_type, repo_id)
            del self.hub.repos[(repo_type, repo_id)]
        self._send(200, b"")

    def _settings(self, user: str | None, body: bytes, repo_type: str, repo_id: str) -> None:
        with self.hub._lock:
            repo = self._writable_repo(user, repo_type, repo_id)
            payload = json.loads(body or b"{}")
            if "private" in payload:
                repo.private = bool(payload["private"])
            if "visibility" in payload:
                repo.private = payload["visibility"] != "public"
        self._json(200, {"private": repo.private})

    def _validate_yaml(self, user: str | None, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        content = payload.get("content") or ""
        try:
            _front_matter(content)
        except ValueError as err:
            self._json(400, {"errors": [{"message": str(err)}], "warnings": []})
            return
        self._json(200, {"errors": [], "warnings": []})

    def _repo_info(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str | None) -> None:
        with self.hub._lock:
            repo = self._readable_repo(user, repo_type, repo_id)
            commit = self._revision(repo, revision or "main")
        blobs = self._query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(blobId=git_blob_sha(commit.files[path]), size=len(commit.files[path]))
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo.namespace or None,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(b) for b in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
        card = commit.files.get("README.md")
        if card is not None:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                card_data = _front_matter(card.decode())
                if card_data is not None:
                    info["cardData"] = card_data
        expand = [e for values in (self._query.get("expand", []), self._query.get("expand[]", [])) for e in values]
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        self._json(200, info)

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        if path in commit.files:
            content = commit.files[path]
            entry: dict[str, Any] = {"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path}
            is_dir = False
        else:
            prefix = path + "/"
            children = sorted((p, git_blob_sha(b)) for p, b in commit.files.items() if p.startswith(prefix))
            oid = hashlib.sha1(json.dumps(children).encode()).hexdigest()
            entry = {"type": "directory", "oid": oid, "size": 0, "path": path}
            is_dir = True
        if expand:
            last = repo.last_commit_for(commit, path, is_dir)
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return entry

    def _tree(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            repo = self._readable_repo(user, repo_type, repo_id)
            commit = self._revision(repo, revision)
        recursive = self._query.get("recursive", ["false"])[0].lower() == "true"
        expand = self._query.get("expand", ["false"])[0].lower() == "true"
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        if path and path in commit.files:
            raise HubError(404, f"{path} is a file, not a folder", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        below = [p[len(prefix) :] for p in commit.files if p.startswith(prefix)]
        if path and not below:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        entries: set[str] = set()
        for rel in below:
            parts = rel.split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, depth + 1):
                entries.add(prefix + "/".join(parts[:i]))
        # Like the Hub: folders first, then files, each sorted by path.
        ordered = sorted(entries, key=lambda p: (p in commit.files, p))
        self._json(200, [self._entry(repo, commit, p, expand) for p in ordered], {"X-Repo-Commit": commit.oid})

    def _paths_info(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            repo = self._readable_repo(user, repo_type, repo_id)
            commit = self._revision(repo, revision)
        if "json" in self.headers.get("Content-Type", ""):
            payload = json.loads(body or b"{}")
            paths = payload.get("paths") or []
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() == "true"
        out = []
        for raw in paths:
            path = raw.strip("/")
            if path in commit.files or (path and any(p.startswith(path + "/") for p in commit.files)):
                out.append(self._entry(repo, commit, path, expand))
        self._json(200, out, {"X-Repo-Commit": commit.oid})

    def _preupload(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            repo = self._writable_repo(user, repo_type, repo_id)
            commit = self._revision(repo, revision)
        payload = json.loads(body or b"{}")
        files = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"])
            lfs = item["path"].endswith(self.hub.lfs_suffixes) if self.hub.lfs_suffixes else False
            oid = None if existing is None else hashlib.sha256(existing).hexdigest() if lfs else git_blob_sha(existing)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, user: str | None, body: bytes, repo_type: str, repo_id: str) -> None:
        with self.hub._lock:
            self._writable_repo(user, repo_type, repo_id)
        payload = json.loads(body or b"{}")
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(422, "FakeHub supports only the basic LFS upload transfer")
        objects = []
        for item in payload.get("objects", []):
            oid, size = str(item["oid"]), int(item["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size}
            with self.hub._lock:
                present = oid in self.hub.lfs_objects
            if not present:
                entry["actions"] = {"upload": {"href": f"{self._base()}/lfs-upload/{oid}", "header": {}}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, user: str | None, body: bytes, oid: str) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"the uploaded content does not hash to {oid}")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = body
        self._send(200)

    def _commit(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
        if self._query.get("create_pr", ["0"])[0] not in ("0", "", "false"):
            raise HubError(400, "FakeHub does not support create_pr")
        header: dict[str, Any] = {}
        adds: dict[str, bytes] = {}
        deletes: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                content = value.get("content", "")
                adds[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            elif key == "lfsFile":
                with self.hub._lock:
                    content = self.hub.lfs_objects.get(value.get("oid", ""))
                if content is None:
                    raise HubError(422, f"LFS object {value.get('oid')} of {value.get('path')} was never uploaded")
                adds[value["path"]] = content
            elif key in ("deletedFile", "deletedFolder"):
                deletes.append(value["path"].rstrip("/") + ("/" if key == "deletedFolder" else ""))
            else:
                raise HubError(422, f"FakeHub does not support commit operation {key!r} (only regular uploads)")
        if not header.get("summary"):
            raise HubError(400, "Missing commit summary")
        with self.hub._lock:
            repo = self._writable_repo(user, repo_type, repo_id)
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            parent = header.get("parentCommit")
            if parent and parent != head.oid:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. (parent {parent} != {head.oid})")
            for path in deletes:
                if not path.endswith("/") and path not in head.files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                if path.endswith("/") and not any(p.startswith(path) for p in head.files):
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            commit = self.hub._commit(repo, header["summary"], header.get("description") or "", user or DEFAULT_USER, adds, deletes)
        self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            },
        )

    def _refs(self, user: str | None, body: bytes, repo_type: str, repo_id: str) -> None:
        with self.hub._lock:
            repo = self._readable_repo(user, repo_type, repo_id)
            branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid} for name, oid in repo.branches.items()]
        self._json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _list_commits(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            repo = self._readable_repo(user, repo_type, repo_id)
            commit = self._revision(repo, revision)
            history = list(repo.history(commit))
        items = [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "authors": [{"user": c.author}],
                "date": c.date,
                "parents": [c.parent] if c.parent else [],
            }
            for c in history
        ]
        self._json(200, items)

    def _resolve(self, user: str | None, body: bytes, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            repo = self._readable_repo(user, repo_type, repo_id)
            commit = self._revision(repo, revision)
        content = commit.files.get(path)
        common = {"X-Repo-Commit": commit.oid}
        if content is None:
            raise HubError(404, "Entry not found", "EntryNotFound", common)
        etag = git_blob_sha(content)
        headers = {**common, "ETag": f'"{etag}"', "Accept-Ranges": "bytes", "Vary": "Origin, Accept"}
        content_type = (
            "text/plain; charset=utf-8" if path.endswith((".md", ".txt", ".json", ".yaml", ".yml")) else "application/octet-stream"
        )
        range_header = self.headers.get("Range")
        if range_header:
            span = _parse_range(range_header, len(content))
            if span is None:
                raise HubError(416, "Range Not Satisfiable", headers={**common, "Content-Range": f"bytes */{len(content)}"})
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            self._send(206, content[start : end + 1], headers, content_type)
            return
        self._send(200, content, headers, content_type)


def _split_revision(segments: list[str]) -> tuple[str, str]:
    """(revision, path) from the unquoted segments after /tree/ or /resolve/ ("refs/convert/x" may arrive unencoded)."""
    if not segments:
        return "", ""
    if segments[0] == "refs" and len(segments) >= 3:
        return "/".join(segments[:3]), "/".join(segments[3:])
    return segments[0], "/".join(segments[1:])


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: last N bytes
        n = int(m.group(2))
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _front_matter(content: str) -> dict[str, Any] | None:
    """The YAML front-matter of a card, parsed if PyYAML is importable; ValueError if it is invalid."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
    if not m:
        return None
    try:
        import yaml
    except ImportError:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as err:
        raise ValueError(f"Invalid YAML in front-matter: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ValueError("Front-matter must be a YAML mapping")
    return data or {}


def resolve_url(base: str, repo_id: str, path: str, *, repo_type: str = "dataset", revision: str = "main") -> str:
    """The /resolve URL of a file on the fake (for raw HTTP checks)."""
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{base}/{prefix}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

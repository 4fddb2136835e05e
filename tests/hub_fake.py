"""A small Hugging Face Hub-compatible HTTP server for tests, and the `fake_hub` pytest fixture.

The server runs `http.server` in a thread on 127.0.0.1 (random free port) and keeps everything in memory. It
answers the requests that the real `huggingface_hub` client (2.4) sends for `create_repo`, `create_commit` /
`upload_folder`, `hf_hub_download`, `snapshot_download`, `repo_info` / `resolve_revision`, `ModelCard.load`, and
therefore for transformers' `from_pretrained(repo_id)` and `pipeline(..., model=repo_id)`. The request formats were
read from the installed client (`hf_api.py`, `_commit_api.py`, `file_download.py`, `_snapshot_download.py`).

Endpoints served (model repos only; `{repo}` is `namespace/name`, `{rev}` a branch name or a full 40-hex commit sha,
URL-quoted as the client sends it):

- `POST /api/repos/create`: creates the repo with an initial commit holding `.gitattributes` (as the Hub does),
  so `main` exists at once. 409 if the repo exists (the client's `exist_ok=True` accepts it).
- `POST /api/validate-yaml`: parses the README front matter with PyYAML; 400 with `errors` if it is not valid YAML,
  not a mapping, or has a `model-index` that `huggingface_hub` cannot parse; a `warnings` entry if it is empty.
- `POST /api/models/{repo}/preupload/{rev}`: every file gets `uploadMode: "regular"` (so the client sends the
  content base64-encoded in the commit call: no LFS, no xet) and the git blob sha1 of the file already at `{rev}`
  as `oid` (so unchanged files are skipped, as on the Hub).
- `POST /api/models/{repo}/commit/{rev}`: NDJSON body (`header`, `file`, `deletedFile`, `deletedFolder`). Makes a
  new commit with a new 40-hex sha whose parent is the branch head, then moves the branch. `parentCommit` is
  checked (412 if the branch moved). Old commits stay readable by sha.
- `POST /api/models/{repo}/branch/{branch}`: `create_branch` (from `startingPoint` or `main`); 409 if it exists.
- `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{rev}`: model info with `sha`, `siblings`,
  `private`, `lastModified`.
- `GET /api/models/{repo}/refs`: branches (no tags, converts or PR refs).
- `GET /api/models/{repo}/commits/{rev}`: the history from `{rev}` back to the first commit, one page.
- `GET /api/models/{repo}/tree/{rev}[/{path}]`: files (`oid` = git blob sha1, `size`) and folders, `recursive`
  honoured, one page (no pagination `Link` header).
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: the file with `X-Repo-Commit`, `ETag` (quoted git blob sha1, as the
  Hub sends for non-LFS files) and `Content-Length`. Missing files, revisions and repos answer 404 with the Hub's
  `X-Error-Code` (`EntryNotFound`, `RevisionNotFound`, `RepoNotFound`), so the client raises its usual errors and
  caches "file does not exist".
- `GET /api/whoami-v2` (a fixed user `test-user`) and `GET /api/agent-harnesses` (an empty registry, so the
  client's telemetry lookup is answered instead of failing).

Not modelled: LFS and xet storage (files of any size are stored as regular git blobs; an `lfsFile` commit line is
refused), authentication (any `Bearer` token is accepted, and only its presence is checked, for writes and for
reading private repos), namespaces and permissions, pull requests (`create_pr`), tags, `CommitOperationCopy`,
`.gitignore` handling, gated/disabled repos, dataset/space repos, range requests (resumed downloads), redirects
to a CDN, pagination, rate limits, and most of the metadata the Hub derives from README.md (`cardData`, tags).
"""

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml


FAKE_TOKEN = "hf_fake_token_for_tests"
FAKE_USER = "test-user"
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """Return the git blob id of `content` (what the Hub reports as a regular file's `oid` and `ETag`).

    Args:
        content: the file bytes.

    Returns:
        40 lowercase hex digits: sha1 of `b"blob <size>\\0" + content`.
    """
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    """One commit of a fake repo: the full file tree after the commit, and its place in the history."""

    sha: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, bytes]


@dataclass
class Repo:
    """A fake model repo: branches point at commits; every commit ever made stays in `commits`."""

    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubError(Exception):
    """An HTTP error answer, with the `X-Error-Code` the Hub uses so that the client raises the matching error."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.headers = headers or {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _front_matter(content: str) -> str | None:
    """Return the YAML text between the leading `---` lines of a README, or None when there is none."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    return match.group(1) if match else None


class FakeHub:
    """In-memory Hub state plus the HTTP server that exposes it (see the module docstring for the endpoints).

    Use `start()`/`stop()`, or the `fake_hub` fixture. `url` is the value for `HF_ENDPOINT`. `requests` lists every
    request as `"METHOD /path"` (query string dropped), in arrival order.
    """

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. `http://127.0.0.1:54321`."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        """Bind 127.0.0.1 on a free port and serve in a daemon thread. Returns self."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def head(self, repo_id: str, branch: str = "main") -> str:
        """Commit sha a branch points at. Raises KeyError for an unknown repo or branch."""
        return self.repos[repo_id].branches[branch]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """File tree (`path -> bytes`) of a repo at a branch or commit sha."""
        with self._lock:
            return dict(self._commit(repo_id, revision).files)

    # --- state helpers (called with the lock held) ---------------------------------------------------------

    def _repo(self, repo_id: str, authorized: bool = True) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo_id: str, revision: str, authorized: bool = True) -> Commit:
        repo = self._repo(repo_id, authorized)
        sha = repo.branches.get(revision, revision)
        if sha not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _add_commit(self, repo: Repo, branch: str, title: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = repo.branches.get(branch)
        seed = json.dumps([repo.repo_id, parent, len(repo.commits), title, message, sorted(
            (path, git_blob_sha1(content)) for path, content in files.items())])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, message, _now(), files)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    # --- endpoint implementations: each returns (status, json-able body) -----------------------------------

    def create_repo(self, body: dict) -> tuple[int, dict]:
        if body.get("type", "model") != "model":
            raise HubError(400, "the fake Hub only models model repos")
        repo_id = f"{body['organization'] or FAKE_USER}/{body['name']}"
        if repo_id in self.repos:  # the Hub's 409 answer carries the url, which `exist_ok=True` reads
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = self.repos[repo_id] = Repo(repo_id, private, _now())
        self._add_commit(repo, "main", "initial commit", "", {".gitattributes": _GITATTRIBUTES})
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        text = _front_matter(body.get("content", ""))
        if not text or not text.strip():
            return 200, {"warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            metadata = yaml.safe_load(text)
            if not isinstance(metadata, dict):
                raise ValueError("the YAML metadata must be a mapping")
            if "model-index" in metadata:
                model_index_to_eval_results(metadata["model-index"])
        except Exception as error:  # any parse failure is a validation error, reported like the Hub does
            return 400, {"error": "Invalid metadata", "errors": [{"message": " ".join(str(error).split())}]}
        return 200, {}

    def preupload(self, repo_id: str, revision: str, body: dict) -> tuple[int, dict]:
        existing = self._commit(repo_id, revision).files
        return 200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None}
            for f in body["files"]
        ]}

    def commit(self, repo_id: str, branch: str, lines: list[dict]) -> tuple[int, dict]:
        repo = self._repo(repo_id)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        if header.get("parentCommit") and header["parentCommit"] != repo.branches[branch]:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[repo.branches[branch]].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(prefix)}
            else:
                raise HubError(400, f"the fake Hub does not model commit lines of kind {key!r} (LFS/xet)")
        commit = self._add_commit(repo, branch, header.get("summary", ""), header.get("description", ""), files)
        return 200, {"success": True, "commitOid": commit.sha, "pullRequestUrl": None,
                     "commitUrl": f"{self.url}/{repo_id}/commit/{commit.sha}"}

    def create_branch(self, repo_id: str, branch: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        repo.branches[branch] = self._commit(repo_id, body.get("startingPoint") or "main").sha
        return 200, {}

    def model_info(self, repo_id: str, revision: str, authorized: bool) -> tuple[int, dict]:
        repo = self._repo(repo_id, authorized)
        commit = self._commit(repo_id, revision, authorized)
        return 200, {"_id": repo_id, "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
                     "sha": commit.sha, "private": repo.private, "disabled": False, "gated": False,
                     "createdAt": repo.created_at, "lastModified": commit.date, "downloads": 0, "likes": 0,
                     "tags": [], "siblings": [{"rfilename": path} for path in sorted(commit.files)]}

    def refs(self, repo_id: str, authorized: bool) -> tuple[int, dict]:
        repo = self._repo(repo_id, authorized)
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in repo.branches.items()]
        return 200, {"branches": branches, "tags": [], "converts": [], "pullRequests": []}

    def commits(self, repo_id: str, revision: str, authorized: bool) -> tuple[int, list]:
        repo = self._repo(repo_id, authorized)
        commit, history = self._commit(repo_id, revision, authorized), []
        while commit is not None:
            history.append({"id": commit.sha, "title": commit.title, "message": commit.message,
                            "date": commit.date, "authors": [{"user": FAKE_USER}]})
            commit = repo.commits.get(commit.parent)
        return 200, history

    def tree(self, repo_id: str, revision: str, path: str, recursive: bool, authorized: bool) -> tuple[int, list]:
        commit = self._commit(repo_id, revision, authorized)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries = {}
        for file_path, content in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way to the file
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries[folder] = {"type": "directory", "path": folder, "size": 0,
                                       "oid": hashlib.sha1(folder.encode()).hexdigest()}
            if recursive or len(parts) == 1:
                entries[file_path] = {"type": "file", "path": file_path, "size": len(content),
                                      "oid": git_blob_sha1(content)}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        return 200, list(entries.values())

    def resolve(self, repo_id: str, revision: str, path: str, authorized: bool) -> tuple[bytes, dict]:
        commit = self._commit(repo_id, revision, authorized)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.sha})
        content = commit.files[path]
        return content, {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(content)}"'}


_REPO_API = re.compile(
    r"^/api/models/([^/]+/[^/]+)(?:/(preupload|commit|branch|revision|commits|tree|refs)(?:/(.*))?)?$"
)
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to `FakeHub` and writes the JSON (or file) answer."""

    def log_message(self, format, *args):  # keep pytest output quiet; `FakeHub.requests` is the log
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str):
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        self.hub.requests.append(f"{method} {path}")
        authorized = self.headers.get("authorization", "").startswith("Bearer ")
        try:
            if method == "POST" and not authorized and path != "/api/validate-yaml":
                raise HubError(401, "Invalid username or password.")
            body = self.rfile.read(int(self.headers.get("content-length") or 0)) if method == "POST" else b""
            with self.hub._lock:
                answer = self._route(method, path, query, body, authorized)
        except HubError as error:
            one_line = " ".join(str(error).split()).encode("ascii", "replace").decode()
            headers = {"X-Error-Message": one_line, **error.headers}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            self._send(error.status, json.dumps({"error": str(error)}).encode(), headers, method)
            return
        if isinstance(answer[0], bytes):  # a file from /resolve
            self._send(200, answer[0], {"Content-Type": "application/octet-stream", **answer[1]}, method)
        else:
            self._send(answer[0], json.dumps(answer[1]).encode(), {"Content-Type": "application/json"}, method)

    def _route(self, method, path, query, body, authorized):
        hub = self.hub
        if method == "POST" and path == "/api/repos/create":
            return hub.create_repo(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return hub.validate_yaml(json.loads(body))
        if method == "GET" and path == "/api/whoami-v2":
            return 200, {"type": "user", "name": FAKE_USER, "fullname": "Test User", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"role": "write"}}}
        if method == "GET" and path == "/api/agent-harnesses":
            return 200, {"standardEnvVars": [], "harnesses": {}}
        if (match := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
            repo_id, revision, file_path = (unquote(part) for part in match.groups())
            return hub.resolve(repo_id, revision, file_path, authorized)
        match = _REPO_API.match(path)
        if match is None:
            raise HubError(404, f"the fake Hub does not serve {method} {path}")
        repo_id, action, rest = match.group(1), match.group(2), unquote(match.group(3) or "")
        if query.get("create_pr", ["0"])[0] not in ("0", "false", "False"):
            raise HubError(400, "the fake Hub does not model pull requests")
        revision, _, sub_path = rest.partition("/")
        if method == "POST" and action == "preupload":
            return hub.preupload(repo_id, revision, json.loads(body))
        if method == "POST" and action == "commit":
            return hub.commit(repo_id, revision, [json.loads(line) for line in body.splitlines() if line.strip()])
        if method == "POST" and action == "branch":
            return hub.create_branch(repo_id, rest, json.loads(body or b"{}"))
        if method == "GET" and action in (None, "revision"):
            return hub.model_info(repo_id, rest or "main", authorized)
        if method == "GET" and action == "refs":
            return hub.refs(repo_id, authorized)
        if method == "GET" and action == "commits":
            return hub.commits(repo_id, rest or "main", authorized)
        if method == "GET" and action == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return hub.tree(repo_id, revision or "main", sub_path, recursive, authorized)
        raise HubError(404, f"the fake Hub does not serve {method} {path}")

    def _send(self, status: int, payload: bytes, headers: dict, method: str):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)


def hub_env(hub: FakeHub, hf_home) -> dict[str, str]:
    """Environment variables that point a (sub)process's huggingface_hub at `hub`, online, with a fake token.

    Args:
        hub: a started `FakeHub`.
        hf_home: directory used as `HF_HOME` (the hub cache goes to `HF_HOME/hub`, remote code to `HF_HOME/modules`).

    Returns:
        `HF_ENDPOINT`, `HF_HUB_OFFLINE=0`, `HF_HOME`, `HF_HUB_CACHE`, `HF_MODULES_CACHE`, `HF_TOKEN`, telemetry off.
    """
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_MODULES_CACHE": str(hf_home / "modules"),
        "HF_TOKEN": FAKE_TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A started `FakeHub`, with this process's environment and huggingface_hub pointed at it.

    Sets the variables of `hub_env` (with `HF_HOME = tmp_path / "hf_home"`) with monkeypatch, so subprocesses that
    inherit `os.environ` use the fake Hub. huggingface_hub reads `HF_ENDPOINT`, `HF_HUB_OFFLINE` and
    `HF_HUB_CACHE` once at import, so those `huggingface_hub.constants` are patched too, and transformers' shared
    `HfApi` instance (built with the endpoint of its first use) is reset. Everything is undone after the test.
    In this process, remote-code modules still go to the `HF_MODULES_CACHE` that transformers read at import.
    """
    import sys

    from huggingface_hub import constants

    hub = FakeHub().start()
    hf_home = tmp_path / "hf_home"
    for name, value in hub_env(hub, hf_home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    if "transformers.utils.hub" in sys.modules:
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
    yield hub
    hub.stop()

"""A small fake of the Kaggle API, for running the real `kaggle` client against loopback.

The client is pointed at it with KAGGLE_API_ENVIRONMENT=LOCALHOST (base URL
http://localhost/api) and HTTP_PROXY=http://127.0.0.1:PORT: every request reaches this
server as a proxy request with an absolute URL. It speaks the wire protocol of kagglesdk
0.1.x: `POST /api/v1/competitions.CompetitionApiService/<Method>` with camelCase JSON.

Implemented: DownloadDataFiles (302 to /files/<slug>.zip), StartSubmissionUpload, the PUT of
the file, CreateSubmission, GetSubmissionLimits, ListSubmissions, GetLeaderboard. Failures
are scripted per method (`fail_next`, where None answers normally, so "the listing works, then
fails" is `[None, 503, ...]`) or drawn at random (`fault_rate`, seeded), plus the ways Kaggle
says no: wrong credentials (401), rules not accepted (403 on downloads), the daily limit (400 or
a 200 with only a message), a refused file transfer (`fail_put` with `put_status`) and a "lost
answer" (the submission is recorded but the reply is a 503). Like Kaggle, the leaderboard holds
the user's own team (`team_name`) and, once `private_leaderboard` is set (the competition has
ended), answers with the private one unless asked for `overridePublic`; private scores of the
user's submissions are listed only then.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

SERVICE = "/api/v1/competitions.CompetitionApiService/"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class FakeKaggle:
    """State and behaviour of the fake; tests change the attributes to script a scenario.

    Attributes:
        username, key: The only accepted credentials (HTTP Basic).
        files: slug -> the bytes of `<slug>.zip`.
        rules_accepted: False makes downloads answer 403.
        daily_limit: Submissions allowed per day; CreateSubmission beyond it answers
            `limit_style` ("400": HTTP 400 with a message; "message": HTTP 200 with only a
            message and no ref, as Kaggle sometimes does).
        report_limits: False makes GetSubmissionLimits answer 404 (an older server).
        limits_override: If set, GetSubmissionLimits reports this many remaining.
        scorer: bytes of the uploaded CSV -> (public, private) scores, or None to leave the
            submission pending.
        leaderboard: (team name, score) rows of other teams on the public leaderboard.
        private_leaderboard: The other teams' private scores, or None while the competition
            runs (then there is no private leaderboard and no private score is listed).
        team_name: The user's team; its row (best scores of its submissions) is on both
            leaderboards unless `own_team_on_leaderboard` is False.
        lower_is_better: Which of the user's scores is its team's best.
        metric_names: slug -> the evaluation-metric name its ListCompetitions record carries.
        fail_next: method -> list of HTTP statuses to answer before behaving normally; a None
            entry answers that call normally. "PUT" scripts the file transfer.
        fault_rate: Chance that any API call or PUT is answered with a 5xx from
            `fault_statuses` before any work (random, seeded with `fault_seed`).
        lose_answer: method -> how many times to do the work and then answer 503.
        fail_put: how many PUTs of the file to answer with `put_status` (default 403; the
            client then reports "Could not submit to competition").
        calls: Every method called, in order ("PUT" for file uploads).
    """

    username: str = "tester"
    key: str = "0123456789abcdef0123456789abcdef"
    files: dict[str, bytes] = field(default_factory=dict)
    rules_accepted: bool = True
    daily_limit: int = 5
    limit_style: str = "400"
    report_limits: bool = True
    limits_override: int | None = None
    scorer: Callable[[bytes], tuple[float, float] | None] | None = None
    leaderboard: list[tuple[str, float]] = field(default_factory=list)
    private_leaderboard: list[tuple[str, float]] | None = None
    team_name: str = "Tester's Team"
    own_team_on_leaderboard: bool = True
    lower_is_better: bool = True
    metric_names: dict[str, str] = field(default_factory=dict)
    fail_next: dict[str, list[int | None]] = field(default_factory=dict)
    fault_rate: float = 0.0
    fault_seed: int = 0
    fault_statuses: tuple[int, ...] = (500, 502, 503)
    lose_answer: dict[str, int] = field(default_factory=dict)
    fail_put: int = 0
    put_status: int = 403
    calls: list[str] = field(default_factory=list)
    submissions: list[dict] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    pending_tokens: dict[str, str] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeKaggle:
        fake = self

        class Handler(_Handler):
            state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def client_env(self, home: Path) -> dict[str, str]:
        """Environment for the real client: loopback target, isolated HOME and kaggle.json."""
        config = home / ".kaggle"
        config.mkdir(parents=True, exist_ok=True)
        path = config / "kaggle.json"
        path.write_text(json.dumps({"username": self.username, "key": self.key}))
        path.chmod(0o600)
        proxy = f"http://127.0.0.1:{self.port}"
        return {
            "HOME": str(home),
            "KAGGLE_CONFIG_DIR": str(config),
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
        }

    # ---- behaviour -------------------------------------------------------------------
    def submissions_today(self) -> int:
        return len(self.submissions)

    def _scripted_failure(self, method: str) -> int | None:
        queue = self.fail_next.get(method)
        if queue:
            return queue.pop(0)
        if self.fault_rate:
            if self._random is None:
                self._random = random.Random(self.fault_seed)
            if self._random.random() < self.fault_rate:
                return self._random.choice(self.fault_statuses)
        return None

    def handle(self, method: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        """Answer one API call: (status, JSON body, extra headers)."""
        slug = body.get("competitionName", "")
        if method == "DownloadDataFiles":
            if slug not in self.files:
                return 404, {"code": 404, "message": f"Competition {slug} not found"}, {}
            if not self.rules_accepted:
                return 403, {"code": 403, "message": "You must accept this competition's rules "
                             "before you'll be able to download files."}, {}
            return 302, {}, {"Location": f"http://localhost/files/{slug}.zip"}
        if method == "StartSubmissionUpload":
            token = f"tok{len(self.uploads) + len(self.pending_tokens) + 1}"
            self.pending_tokens[token] = body.get("fileName", "")
            return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}, {}
        if method == "CreateSubmission":
            return self._create_submission(slug, body)
        if method == "GetSubmissionLimits":
            if not self.report_limits:
                return 404, {"code": 404, "message": "Not found"}, {}
            left = max(0, self.daily_limit - self.submissions_today())
            if self.limits_override is not None:
                left = self.limits_override
            return 200, {"numToday": self.submissions_today(), "numTotal": len(self.submissions),
                         "numAllowedNow": left, "limitedByTotal": False}, {}
        if method == "ListSubmissions":
            return 200, self._list_submissions(body), {}
        if method == "GetLeaderboard":
            return 200, self._leaderboard(body), {}
        if method == "ListCompetitions":
            # Kaggle's search matches words of the title and slug; refs are the URLs.
            search = body.get("search", "")
            return 200, {"competitions": [
                {"ref": f"https://www.kaggle.com/competitions/{name}", "title": name.title(),
                 "evaluationMetric": metric}
                for name, metric in self.metric_names.items() if search in name]}, {}
        return 404, {"code": 404, "message": f"fake has no {method}"}, {}

    def _create_submission(self, slug: str, body: dict) -> tuple[int, dict, dict]:
        token = body.get("blobFileTokens", "")
        if token not in self.uploads:
            return 400, {"code": 400, "message": "Invalid blob file token"}, {}
        if self.submissions_today() >= self.daily_limit:
            message = (f"Your team has used its daily Submission allowance ({self.daily_limit}) "
                       "today, please try again tomorrow UTC.")
            if self.limit_style == "message":
                return 200, {"message": message}, {}
            return 400, {"code": 400, "message": message}, {}
        data = self.uploads[token]
        ref = 1000 + len(self.submissions) + 1
        scores = self.scorer(data) if self.scorer else None
        now = datetime.now(UTC).replace(tzinfo=None)
        self.submissions.append({
            "ref": ref, "totalBytes": len(data), "date": _iso(now),
            "description": body.get("submissionDescription", ""),
            "fileName": self.pending_tokens.get(token, ""),
            "status": "COMPLETE" if scores else "PENDING",
            "publicScore": f"{scores[0]:.5f}" if scores else "",
            "privateScore": f"{scores[1]:.5f}" if scores else "",
            "submittedBy": self.username, "teamName": self.team_name,
        })
        return 200, {"message": "Successfully submitted", "ref": ref}, {}

    def _list_submissions(self, body: dict) -> dict:
        ordered = sorted(self.submissions, key=lambda s: s["ref"], reverse=True)
        if self.private_leaderboard is None:  # private scores are hidden until the end
            ordered = [{**s, "privateScore": ""} for s in ordered]
        size = int(body.get("pageSize") or 20)
        start = int(body.get("pageToken") or 0)
        page = ordered[start:start + size]
        token = str(start + size) if start + size < len(ordered) else ""
        return {"submissions": page, "nextPageToken": token}

    def _own_best(self, key: str) -> float | None:
        scores = [float(s[key]) for s in self.submissions if s["status"] == "COMPLETE"]
        if not scores:
            return None
        return min(scores) if self.lower_is_better else max(scores)

    def _leaderboard(self, body: dict) -> dict:
        """The private leaderboard once it exists, unless `overridePublic` (as Kaggle does)."""
        size = int(body.get("pageSize") or 20)
        start = int(body.get("pageToken") or 0)
        private = self.private_leaderboard is not None and not body.get("overridePublic")
        teams = list(self.private_leaderboard if private else self.leaderboard)
        own = self._own_best("privateScore" if private else "publicScore")
        if self.own_team_on_leaderboard and own is not None:
            teams.append((self.team_name, own))
        teams.sort(key=lambda team: team[1], reverse=not self.lower_is_better)
        rows = [{"teamId": i + 1, "teamName": name, "submissionDate": "2017-03-01T00:00:00.000Z",
                 "score": f"{score:.5f}"} for i, (name, score) in enumerate(teams)]
        token = str(start + size) if start + size < len(rows) else ""
        return {"submissions": rows[start:start + size], "nextPageToken": token}


class _Handler(BaseHTTPRequestHandler):
    state: FakeKaggle
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, headers: dict[str, str],
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _authorized(self) -> bool:
        expected = base64.b64encode(f"{self.state.username}:{self.state.key}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self._body()
        if not path.startswith(SERVICE):
            self._send(404, b'{"code":404,"message":"not found"}', {})
            return
        method = path[len(SERVICE):]
        with self.state._lock:
            self.state.calls.append(method)
            if not self._authorized():
                self._send(401, json.dumps({"code": 401, "message": "Unauthenticated"}).encode(),
                           {})
                return
            failure = self.state._scripted_failure(method)
            if failure is not None:
                self._send(failure, json.dumps({"code": failure, "message":
                                                f"scripted {failure}"}).encode(), {})
                return
            status, answer, headers = self.state.handle(method, json.loads(raw or b"{}"))
            if self.state.lose_answer.get(method, 0) > 0 and status < 300:
                self.state.lose_answer[method] -= 1
                status, answer = 503, {"code": 503, "message": "lost answer"}
        self._send(status, json.dumps(answer).encode(), headers)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/files/") and path.endswith(".zip"):
            slug = path[len("/files/"):-len(".zip")]
            with self.state._lock:
                self.state.calls.append("GET " + path)
                data = self.state.files.get(slug)
            if data is not None:
                self._send(200, data, {"Last-Modified": formatdate(946684800, usegmt=True),
                                       "Accept-Ranges": "none"}, "application/zip")
                return
        self._send(404, b"not found", {}, "text/plain")

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        data = self._body()
        with self.state._lock:
            self.state.calls.append("PUT")
            failure = self.state._scripted_failure("PUT")
            if failure is None and self.state.fail_put > 0:
                self.state.fail_put -= 1
                failure = self.state.put_status
            if failure is not None:
                self._send(failure, b"upload refused" if failure == 403 else b"scripted failure",
                           {}, "text/plain")
                return
            token = path.rsplit("/", 1)[-1]
            if token not in self.state.pending_tokens:
                self._send(404, b"no such upload", {}, "text/plain")
                return
            self.state.uploads[token] = data
        self._send(200, b"{}", {})


def running_env_without_proxy_bypass() -> dict[str, str]:
    """The current environment minus what would bypass the proxy or switch auth modes."""
    env = dict(os.environ)
    for name in ("NO_PROXY", "no_proxy", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY",
                 "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    return env


# ---- competition data and scorers for tests and the transcript ---------------------------
def tiny_jpeg(colour: tuple[int, int, int], size: int = 32) -> bytes:
    """A real JPEG of one colour."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip archive holding `entries` (name -> bytes)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


TEST_IDS = ("1", "2", "10")
# Hidden truth of the fake competition: 1 = dog.
TEST_LABELS = {"1": 1, "2": 0, "10": 1}


def redux_zip(test_dir: str = "test", sample: str = "sample_submission.csv",
              sample_value: str = "0.5") -> bytes:
    """A Redux-shaped competition zip: train.zip and test.zip inside, plus the sample."""
    train = zip_bytes({f"train/{kind}.{i}.jpg": tiny_jpeg((200, 40 * i, 0) if kind == "cat"
                                                          else (0, 40 * i, 200))
                       for kind in ("cat", "dog") for i in (1, 2, 10)})
    test = zip_bytes({f"{test_dir}/{i}.jpg": tiny_jpeg((90, 90, 90)) for i in TEST_IDS})
    csv = "id,label\n" + "".join(f"{i},{sample_value}\n" for i in TEST_IDS)
    return zip_bytes({"train.zip": train, f"{test_dir}.zip": test, sample: csv.encode()})


def _rows(data: bytes) -> dict[str, float]:
    lines = data.decode().strip().splitlines()[1:]
    return {line.split(",")[0]: float(line.split(",")[1]) for line in lines}


def logloss_scorer(data: bytes) -> tuple[float, float]:
    """Log loss of an `id,label` CSV against TEST_LABELS: public on ids 1,2, private on 10."""
    import math

    rows = _rows(data)

    def loss(ids: tuple[str, ...]) -> float:
        total = 0.0
        for i in ids:
            p = min(max(rows[i], 1e-15), 1 - 1e-15)
            total -= math.log(p) if TEST_LABELS[i] else math.log(1 - p)
        return total / len(ids)

    return loss(("1", "2")), loss(("10",))


def accuracy_scorer(data: bytes) -> tuple[float, float]:
    """Accuracy of an `id,label` CSV of 0/1 labels: public on ids 1,2, private on 10."""
    rows = _rows(data)

    def accuracy(ids: tuple[str, ...]) -> float:
        return sum(int(rows[i]) == TEST_LABELS[i] for i in ids) / len(ids)

    return accuracy(("1", "2")), accuracy(("10",))

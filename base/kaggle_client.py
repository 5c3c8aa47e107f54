"""One way into the official `kaggle` client: credentials, retries, errors, no leaked secrets.

Every network step of the harness (download, upload, listings) goes through `kaggle_session`
and `call_with_retry`. The client is used in-process (`KaggleApi` and its kagglesdk client),
because it then raises `requests.HTTPError` with the status code instead of printing a message
and exiting 0; what it prints is captured and logged at DEBUG with credentials removed.

Why in-process needs care (kaggle 2.2.x): `KaggleApi` computes its config folder and its
target environment (`--local` for KAGGLE_API_ENVIRONMENT=LOCALHOST) once, at import time, and
`authenticate()` calls `exit(1)` when it finds no credentials. `kaggle_session` therefore sets
both from the current environment on a fresh instance and turns the exit into a HarnessError.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from base.errors import HarnessError

logger = logging.getLogger(__name__)
T = TypeVar("T")

CREDENTIALS_HELP = (
    "set KAGGLE_USERNAME and KAGGLE_KEY, or save kaggle.json "
    "({{\"username\": ..., \"key\": ...}}, from https://www.kaggle.com/settings -> API -> "
    "Create New Token) as {path} with `chmod 600`"
)
# HTTP statuses worth another try: the request may succeed unchanged a moment later.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient failures (5xx, 429, timeouts, resets).

    Attributes:
        attempts: How many times a step is tried in all (>= 1).
        initial_delay: Seconds before the second try.
        multiplier: Each later delay is the previous one times this.
        max_delay: Upper bound of one delay, in seconds.
        jitter: Fraction of random spread added to each delay (0 = deterministic).
    """

    attempts: int = 5
    initial_delay: float = 2.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        return base * (1 + self.jitter * random.random())


@dataclass(frozen=True)
class KaggleFailure:
    """What went wrong in one client call, classified.

    Attributes:
        kind: "auth" (401), "forbidden" (403), "not_found" (404), "transient" (5xx, 429,
            network), or "rejected" (any other answer Kaggle gave).
        status: The HTTP (or JSON `code`) status, None for network errors.
        message: Kaggle's message, credentials removed.
    """

    kind: str
    status: int | None
    message: str

    @property
    def transient(self) -> bool:
        return self.kind == "transient"


DEFAULT_RETRY = RetryPolicy()


def config_dir() -> Path:
    """Where the client looks for kaggle.json, resolved as kaggle 2.2 does."""
    explicit = os.environ.get("KAGGLE_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    home = Path(os.path.expanduser("~"))
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        return Path(xdg) / "kaggle"
    return legacy


def _file_credentials() -> tuple[str | None, str | None]:
    path = config_dir() / "kaggle.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("username"), data.get("key")


def _secrets() -> list[str]:
    """Every credential string this process could send, and its Basic-auth encodings."""
    values = []
    user_file, key_file = _file_credentials()
    token = os.environ.get("KAGGLE_API_TOKEN")
    for user, key in ((os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")),
                      (user_file, key_file)):
        if key:
            values.append(str(key))
            if user:
                values.append(base64.b64encode(f"{user}:{key}".encode()).decode())
    if token:
        values.append(token)
    home = Path(os.path.expanduser("~")) / ".kaggle"
    for path in ([Path(token)] if token else []) + [home / "access_token",
                                                      home / "access_token.txt"]:
        try:
            if path.is_file():
                values.append(path.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            pass
    return [v for v in values if len(v) >= 4]


def scrub(text: str) -> str:
    """`text` with every known credential replaced by `***`."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def has_credentials() -> bool:
    """Whether the client would find an API key or token (without contacting Kaggle)."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    user, key = _file_credentials()
    if user and key:
        return True
    home = Path(os.path.expanduser("~")) / ".kaggle"
    # Access tokens, or OAuth credentials from `kaggle auth login`.
    return any((home / name).is_file()
               for name in ("access_token", "access_token.txt", "credentials.json"))


def credentials_error(detail: str = "no Kaggle credentials found") -> HarnessError:
    """The one message for missing or refused credentials."""
    return HarnessError(f"{detail}; " + CREDENTIALS_HELP.format(path=config_dir() / "kaggle.json"))


def require_credentials() -> None:
    """Fail with the credentials message before any network call when there are none."""
    if not has_credentials():
        raise credentials_error()


def local_only_error(slug: str, what: str) -> HarnessError:
    """The error for download/upload/leaderboard on a competition that is not on Kaggle."""
    return HarnessError(
        f"competition {slug!r} is local only (not on Kaggle), so there is nothing to {what}; "
        "set competition to a Kaggle slug (e.g. dogs-vs-cats-redux-kernels-edition)"
    )


@contextlib.contextmanager
def kaggle_session() -> Iterator[Any]:
    """An authenticated `KaggleApi`, with everything the client prints captured and logged.

    Raises:
        HarnessError: no credentials (the client's own `exit(1)` is turned into this).
    """
    require_credentials()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            # Imported here: `import kaggle` authenticates and prints at import time.
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            folder = config_dir()
            api.config_dir = str(folder)
            api.config = str(folder / "kaggle.json")
            # Never "--verbose": the client would print the Authorization header.
            api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []
            try:
                api.authenticate()
            except SystemExit:
                raise credentials_error("the kaggle client found no usable credentials") from None
            yield api
    finally:
        text = captured.getvalue().strip()
        if text:
            logger.debug("kaggle client said: %s", scrub(text))


def status_failure(status: int, message: str) -> KaggleFailure:
    """The failure that an HTTP status (an API call's, or the file transfer's) stands for."""
    if status == 401:
        kind = "auth"
    elif status == 403:
        kind = "forbidden"
    elif status == 404:
        kind = "not_found"
    elif status in TRANSIENT_STATUSES or status >= 500:
        kind = "transient"
    else:
        kind = "rejected"
    return KaggleFailure(kind, status, scrub(message))


def classify(exc: BaseException) -> KaggleFailure:
    """Sort a client exception into auth / forbidden / not_found / transient / rejected."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        status = response.status_code
        message = str(exc)
        try:
            body = response.json()
            if isinstance(body, dict):
                message = str(body.get("message") or message)
                if isinstance(body.get("code"), int) and body["code"] >= 400:
                    status = body["code"]
        except ValueError:
            pass
        return status_failure(status, message)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)):
        return KaggleFailure("transient", None, scrub(f"{type(exc).__name__}: {exc}"))
    return KaggleFailure("rejected", None, scrub(f"{type(exc).__name__}: {exc}"))


def failure_error(failure: KaggleFailure, slug: str, what: str) -> HarnessError:
    """A one-line HarnessError for a classified failure of step `what` on competition `slug`."""
    if failure.kind == "auth":
        return credentials_error(f"Kaggle refused the credentials (HTTP 401) while trying to {what}")
    if failure.kind == "forbidden":
        return HarnessError(
            f"Kaggle refused to {what} for {slug!r} (HTTP 403: {failure.message}); accept the "
            f"competition's rules at https://www.kaggle.com/c/{slug}/rules and try again"
        )
    if failure.kind == "not_found":
        return HarnessError(
            f"Kaggle has no competition {slug!r} (HTTP 404) to {what}; check the slug in the "
            "config (it is the name in https://www.kaggle.com/c/<slug>)"
        )
    status = f"HTTP {failure.status}: " if failure.status else ""
    return HarnessError(f"could not {what} for {slug!r} ({status}{failure.message})")


def call_with_retry(
    func: Callable[[], T],
    *,
    what: str,
    slug: str,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `func`, retrying transient failures with backoff; other failures raise at once.

    Only for idempotent steps (listings, downloads). Uploads have their own loop, because a
    retry there must first check whether the lost answer had been recorded.

    Raises:
        HarnessError: classified with `failure_error`, after the last try for transient ones.
    """
    for attempt in range(1, max(1, retry.attempts) + 1):
        try:
            return func()
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, nothing swallowed
            failure = classify(exc)
            if not failure.transient or attempt >= retry.attempts:
                if failure.transient:
                    raise HarnessError(
                        f"could not {what} for {slug!r} after {attempt} tries "
                        f"(last: {'HTTP ' + str(failure.status) + ': ' if failure.status else ''}"
                        f"{failure.message}); Kaggle or the network may be down, try again later"
                    ) from None
                raise failure_error(failure, slug, what) from None
            delay = retry.delay(attempt)
            logger.warning("%s for %s failed (%s); retry %d/%d in %.1f s", what, slug,
                           failure.message, attempt, retry.attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover

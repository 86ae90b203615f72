"""The HTTP client of the fine-tuning API (Nebius Token Factory, OpenAI-compatible).

One :class:`httpx.Client` wrapped in :class:`ApiClient`, which returns the pydantic models of
:mod:`sweeper.api.models` and raises only errors of :mod:`sweeper.errors`:

    401 / 403                        -> ApiAuthError
    404                              -> ApiNotFound
    other 4xx (never retried)        -> ApiRejected (``problems``, ``code``, ``status_code``)
    transport error, 408, 409, 429,
    5xx that outlived the retries    -> ApiUnavailable
    a 2xx body of the wrong shape    -> ApiProtocolError

Retry policy (stamina, one request at a time, predicate below): exponential backoff from 0.5 s,
doubling, capped at 16 s, plus up to 1 s of jitter; at most ``retry_attempts`` attempts and
``retry_timeout`` seconds. A ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms`` header
replaces the backoff, capped at 60 s; a wait that would overrun ``retry_timeout`` gives up at once.
``x-should-retry: false`` turns a retry off.

Only requests that are safe to repeat are retried blindly (GET, DELETE, cancel, and file uploads,
whose duplicate is an inert file). Creating a job is not idempotent: when its outcome is unknown
(the request may have reached the server: read/write errors, timeouts after connecting, dropped
connections, 408/409/5xx) the client first looks for the job by its unique ``suffix`` among the
newest jobs and adopts it; only when it is not there is the request sent again. Without a suffix
an unknown outcome raises :class:`ApiUnavailable` and nothing is resent.

The API key is kept in a :class:`SecretStr` inside an :class:`httpx.Auth`; it is never logged,
never part of ``repr`` or of an error message (and is redacted should a server echo it). Logs
(logger ``sweeper.api``) carry the method, the route template and the status only.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import email.utils
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import stamina
from pydantic import BaseModel, SecretStr, ValidationError

from sweeper import __version__
from sweeper.api import is_loopback
from sweeper.api.models import (
    Checkpoint,
    CreateJobRequest,
    Event,
    FileDeleted,
    FileObject,
    Job,
    Page,
)
from sweeper.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiProtocolError,
    ApiRejected,
    ApiUnavailable,
    ConfigError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RETRY_AFTER",
    "ApiClient",
]

_log = logging.getLogger("sweeper.api")

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0, write=300.0)
MAX_RETRY_AFTER = 60.0  # seconds; a server asking for longer is waited on for this long
WAIT_INITIAL = 0.5
WAIT_MAX = 16.0
WAIT_JITTER = 1.0
ADOPT_PAGES = 5  # pages of 100 newest jobs searched for an ambiguous create's suffix
_PAGE_CAP = 1000  # guard against a server whose pages never end
_RETRY_STATUSES = frozenset({408, 409, 429})

_M = TypeVar("_M", bound=BaseModel)
_Item = TypeVar("_Item", Job, Event, Checkpoint)


class _Transient(ApiUnavailable):
    """One failed attempt that may be retried. Internal: converted before it leaves the client.

    ``maybe_processed`` says the server may have acted on the request (so a non-idempotent
    request must not be resent blindly); ``retry_after`` is the wait the server asked for.
    """

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = None,
        maybe_processed: bool,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.maybe_processed = maybe_processed
        self.retry_after = retry_after
        super().__init__(reason, status_code=status_code)


@dataclass
class _Call:
    """One logical API call (possibly several HTTP attempts)."""

    method: str
    route: str  # the template, e.g. "/fine_tuning/jobs/{id}": what stats and logs show
    path: str  # the concrete relative path
    started: float
    attempts: int = 0
    pending_wait: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"


class _BearerAuth(httpx.Auth):
    """Adds the bearer header per request, so the key is not kept in the client's headers."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(**********)"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: httpx.Headers) -> float | None:
    """The wait a 429/5xx asks for (``retry-after-ms``, ``Retry-After``), capped; None if none."""
    seconds: float | None = None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            seconds = float(raw_ms) / 1000.0
        except ValueError:
            seconds = None
    raw = headers.get("retry-after")
    if seconds is None and raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.UTC)
                seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _problem(item: object) -> str:
    """One FastAPI validation item as ``field.path: message`` (a leading "body" dropped)."""
    if isinstance(item, dict):
        loc = item.get("loc")
        msg = item.get("msg")
        message = msg if isinstance(msg, str) else _short(json.dumps(msg))
        parts = [str(p) for p in loc] if isinstance(loc, list) else []
        if parts and parts[0] == "body":
            parts = parts[1:]
        field = ".".join(parts)
        return _short(f"{field}: {message}" if field else message)
    return _short(json.dumps(item))


def _error_details(response: httpx.Response) -> tuple[str, list[str], str | None]:
    """Message, problems and code of an error body: FastAPI ``detail``, OpenAI ``error`` or text."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        text = _short(response.content.decode("utf-8", errors="replace"))
        return text, [], None
    if not isinstance(body, dict):
        return _short(json.dumps(body)), [], None
    error = body.get("error")
    detail = body.get("detail")
    if isinstance(error, dict):
        message = error.get("message")
        message = message if isinstance(message, str) else _short(json.dumps(message))
        raw_code = error.get("code")
        code = None if raw_code is None else _short(str(raw_code), 100)
        param = error.get("param")
        if isinstance(param, str) and param:
            return "invalid request", [_short(f"{param}: {message}")], code
        return _short(message), [], code
    if isinstance(error, str):
        return _short(error), [], None
    if isinstance(detail, str):
        return _short(detail), [], None
    if isinstance(detail, list):
        problems = [_problem(item) for item in detail]
        noun = "problem" if len(problems) == 1 else "problems"
        return f"{len(problems)} {noun}", problems, None
    if detail is not None:
        return _short(json.dumps(detail)), [], None
    message = body.get("message")
    if isinstance(message, str):
        return _short(message), [], None
    return _short(json.dumps(body)), [], None


class ApiClient:
    """A fine-tuning API client: typed models out, :mod:`sweeper.errors` only, retries inside.

    ``transport`` is the seam for tests (:class:`httpx.MockTransport`); ``sleep`` and ``clock``
    are the seams for the waits a server asks for with ``Retry-After``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry_attempts: int = 6,
        retry_timeout: float = 120.0,
        user_agent: str | None = None,
        project: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key or "")
        has_key = bool(key.get_secret_value())
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigError(f"api.base_url: {base_url!r} is not a valid URL") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"api.base_url: {base_url!r} is not an http(s) URL")
        if has_key and url.scheme == "http" and not is_loopback(url.host):
            raise ConfigError(
                f"api.base_url: {base_url!r} is plain http to a host that is not loopback; "
                "refusing to send the API key unencrypted (use https)"
            )
        if retry_attempts < 1 or retry_timeout <= 0:
            raise ConfigError("retry_attempts must be at least 1 and retry_timeout positive")
        self.base_url = base_url
        self.stats: collections.Counter[str] = collections.Counter()
        self.adopt_pages = ADOPT_PAGES
        self._retry_attempts = retry_attempts
        self._retry_timeout = float(retry_timeout)
        self._sleep = sleep
        self._clock = clock
        self._has_key = has_key
        self._secrets: set[str] = {key.get_secret_value()} if has_key else set()
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        self._http = httpx.Client(
            base_url=url,
            auth=_BearerAuth(key) if has_key else None,
            headers={
                "User-Agent": user_agent or f"sweeper/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # a redirect must not carry the key anywhere
            # Nebius scopes files and jobs by an optional ai_project_id query parameter
            params={"ai_project_id": project} if project else None,
        )

    def __repr__(self) -> str:
        key = "set" if self._has_key else "none"
        return f"ApiClient(base_url={self.base_url!r}, api_key={key})"

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- files --------------------------------------------------------------------------------

    def upload_file(self, path: Path, *, purpose: str = "fine-tune") -> FileObject:
        """Upload ``path`` (multipart, filename = its basename) and return the file object."""
        call = self._call("POST", "/files")
        response = self._request(call, upload=(Path(path), purpose))
        return self._parse(FileObject, response, call)

    def retrieve_file(self, file_id: str) -> FileObject:
        call = self._call("GET", "/files/{id}", file_id)
        return self._parse(FileObject, self._request(call), call)

    def list_files(
        self, *, purpose: str | None = None, limit: int | None = None
    ) -> list[FileObject]:
        """The first page only: Nebius documents no cursor for files."""
        params: dict[str, str | int] = {}
        if purpose is not None:
            params["purpose"] = purpose
        if limit is not None:
            params["limit"] = limit
        call = self._call("GET", "/files")
        return self._parse(Page[FileObject], self._request(call, params=params), call).data

    def delete_file(self, file_id: str) -> FileDeleted:
        call = self._call("DELETE", "/files/{id}", file_id)
        try:
            response = self._request(call)
        except ApiNotFound:
            if call.attempts > 1:  # an earlier attempt deleted it; its answer was lost
                return FileDeleted(id=file_id, deleted=True)
            raise
        return self._parse(FileDeleted, response, call)

    # --- jobs ---------------------------------------------------------------------------------

    def create_job(self, request: CreateJobRequest) -> Job:
        """Create a job; never creates a second one for the same ``suffix`` (see module doc)."""
        payload = request.to_payload()
        for integration in request.integrations or ():
            if integration.wandb.api_key is not None:
                self._secrets.add(integration.wandb.api_key.get_secret_value())
        suffix = request.suffix or None
        call = self._call("POST", "/fine_tuning/jobs")
        uncertain = False
        try:
            for attempt in self._retrying(call, retry_ambiguous=suffix is not None):
                with attempt:
                    if uncertain and suffix is not None:
                        self._pause(call)
                        found = self._adopt(call, suffix)
                        if found is not None:
                            return found
                    try:
                        response = self._send(call, json=payload)
                    except _Transient as exc:
                        uncertain = uncertain or exc.maybe_processed
                        raise
                    return self._parse(Job, response, call)
        except _Transient as exc:
            if uncertain and suffix is not None:
                found = self._adopt(call, suffix)
                if found is not None:
                    return found
                raise ApiUnavailable(
                    f"{call.label}: {exc.reason}; gave up after {call.attempts} attempt(s); "
                    f"no job with suffix {suffix!r} was found among the newest jobs",
                    status_code=exc.status_code,
                ) from exc
            if exc.maybe_processed:
                raise ApiUnavailable(
                    f"{call.label}: outcome unknown ({exc.reason}); not resent, because the "
                    "request has no suffix to find the job by",
                    status_code=exc.status_code,
                ) from exc
            raise self._gave_up(call, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def retrieve_job(self, job_id: str) -> Job:
        call = self._call("GET", "/fine_tuning/jobs/{id}", job_id)
        return self._parse(Job, self._request(call), call)

    def list_jobs(self, *, limit: int = 20, after: str | None = None) -> Page[Job]:
        """One page of jobs, newest first."""
        return self._page(Page[Job], "/fine_tuning/jobs", None, limit=limit, after=after)

    def iter_jobs(self, *, page_size: int = 100, max_pages: int | None = None) -> Iterator[Job]:
        """Jobs newest first, following ``after`` while ``has_more`` (each job once)."""
        yield from self._paginate(
            Page[Job], "/fine_tuning/jobs", None, limit=page_size, max_pages=max_pages
        )

    def find_job_by_suffix(self, suffix: str, *, max_pages: int = 20) -> Job | None:
        """The newest job whose suffix is ``suffix`` (OpenAI: ``user_provided_suffix``), or None."""
        if not suffix:
            return None
        for job in self.iter_jobs(page_size=100, max_pages=max_pages):
            if suffix in (job.suffix, job.user_provided_suffix):
                return job
        return None

    def cancel_job(self, job_id: str) -> Job:
        call = self._call("POST", "/fine_tuning/jobs/{id}/cancel", job_id)
        return self._parse(Job, self._request(call), call)  # cancelling twice is harmless

    def list_events(self, job_id: str, *, after: str | None = None) -> list[Event]:
        """All events (every page), oldest first whatever order the provider pages in."""
        events = list(
            self._paginate(
                Page[Event], "/fine_tuning/jobs/{id}/events", job_id, limit=100, after=after
            )
        )
        return sorted(events, key=lambda e: e.created_at)

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """All checkpoints (every page), sorted by ``step_number``."""
        checkpoints = list(
            self._paginate(
                Page[Checkpoint], "/fine_tuning/jobs/{id}/checkpoints", job_id, limit=100
            )
        )
        return sorted(checkpoints, key=lambda c: c.step_number)

    # --- pagination ---------------------------------------------------------------------------

    def _page(
        self,
        page_type: type[Page[_Item]],
        route: str,
        item_id: str | None,
        *,
        limit: int,
        after: str | None,
    ) -> Page[_Item]:
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        call = self._call("GET", route, item_id)
        return self._parse(page_type, self._request(call, params=params), call)

    def _paginate(
        self,
        page_type: type[Page[_Item]],
        route: str,
        item_id: str | None,
        *,
        limit: int,
        after: str | None = None,
        max_pages: int | None = None,
    ) -> Iterator[_Item]:
        """Items of every page, each id once; stops on has_more false, an empty or stale page."""
        seen: set[str] = set()
        pages = 0
        cursor = after
        while max_pages is None or pages < max_pages:
            if pages >= _PAGE_CAP:
                _log.warning("GET %s: stopped after %d pages", route, pages)
                return
            page = self._page(page_type, route, item_id, limit=limit, after=cursor)
            pages += 1
            fresh = [item for item in page.data if item.id not in seen]
            for item in fresh:
                seen.add(item.id)
                yield item
            if page.has_more is False or not fresh:
                return
            cursor = page.data[-1].id

    # --- one request --------------------------------------------------------------------------

    def _call(self, method: str, route: str, item_id: str | None = None) -> _Call:
        path = route
        if item_id is not None:
            if not item_id:
                raise ValueError(f"{method} {route}: empty id")
            path = route.replace("{id}", urllib.parse.quote(item_id, safe=""))
        return _Call(method=method, route=route, path=path, started=self._clock())

    def _retrying(self, call: _Call, *, retry_ambiguous: bool) -> Iterable[stamina.Attempt]:
        """A stamina retry context whose predicate only retries what is safe for ``call``."""

        def should_retry(exc: Exception) -> bool | float:
            if not isinstance(exc, _Transient):
                return False
            if exc.maybe_processed and not retry_ambiguous:
                return False
            wait = exc.retry_after
            if wait is None:
                _log.warning("%s: %s; retrying", call.key, exc)
                return True  # stamina's jittered exponential backoff
            if self._clock() - call.started + wait > self._retry_timeout:
                _log.warning(
                    "%s: the server asks to wait %.1f s, beyond the budget", call.key, wait
                )
                return False
            _log.warning("%s: %s; retrying in %.1f s as the server asks", call.key, exc, wait)
            call.pending_wait = wait
            return 0.0  # we sleep the server's wait ourselves (see _pause), not stamina

        return stamina.retry_context(
            on=should_retry,
            attempts=self._retry_attempts,
            timeout=self._retry_timeout,
            wait_initial=WAIT_INITIAL,
            wait_max=WAIT_MAX,
            wait_jitter=WAIT_JITTER,
        )

    def _request(
        self,
        call: _Call,
        *,
        params: dict[str, str | int] | None = None,
        upload: tuple[Path, str] | None = None,
    ) -> httpx.Response:
        """Send ``call`` with retries (every request but create is safe to repeat)."""
        try:
            for attempt in self._retrying(call, retry_ambiguous=True):
                with attempt:
                    return self._send(call, params=params, upload=upload)
        except _Transient as exc:
            raise self._gave_up(call, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, call: _Call) -> None:
        if call.pending_wait > 0:
            wait, call.pending_wait = call.pending_wait, 0.0
            self._sleep(wait)

    def _send(
        self,
        call: _Call,
        *,
        params: dict[str, str | int] | None = None,
        json: dict[str, Any] | None = None,
        upload: tuple[Path, str] | None = None,
    ) -> httpx.Response:
        """One HTTP attempt: a 2xx response, or :class:`_Transient`, or a final ApiError."""
        self._pause(call)
        with contextlib.ExitStack() as stack:
            kwargs: dict[str, Any] = {"params": params}
            if upload is not None:
                path, purpose = upload
                try:
                    fh = stack.enter_context(path.open("rb"))
                except OSError as exc:
                    raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
                kwargs["files"] = {"file": (path.name, fh)}
                kwargs["data"] = {"purpose": purpose}
            else:
                kwargs["json"] = json
            call.attempts += 1
            self.stats[call.key] += 1
            try:
                response = self._http.request(call.method, call.path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                _log.info("%s -> %s", call.key, type(exc).__name__)
                raise _Transient(
                    self._redact(f"cannot connect ({type(exc).__name__}: {exc})"),
                    maybe_processed=False,
                ) from exc
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                _log.info("%s -> %s", call.key, type(exc).__name__)
                raise _Transient(
                    self._redact(f"connection lost ({type(exc).__name__}: {exc})"),
                    maybe_processed=True,
                ) from exc
            except httpx.HTTPError as exc:
                raise ApiUnavailable(
                    self._redact(f"{call.label}: {type(exc).__name__}: {exc}")
                ) from exc
            except OSError as exc:  # the upload's file failed while being streamed
                raise ConfigError(f"{call.label}: cannot read the file: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            _log.debug("%s -> %d", call.key, status)
            return response
        _log.info("%s -> %d", call.key, status)
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        message, problems, code = _error_details(response)
        message = self._redact(message)
        problems = [self._redact(p) for p in problems]
        if status in _RETRY_STATUSES or status >= 500:
            if response.headers.get("x-should-retry", "").lower() == "false":
                raise ApiUnavailable(f"{call.label}: {reason}: {message}", status_code=status)
            raise _Transient(
                f"{reason}: {message}",
                status_code=status,
                maybe_processed=status != 429,
                retry_after=_retry_after(response.headers),
            )
        if 300 <= status < 400 or status < 200:
            raise ApiProtocolError(
                f"{call.label}: unexpected {reason} (redirects are not followed)",
                status_code=status,
            )
        error_type: type[ApiRejected] = ApiRejected
        if status in (401, 403):
            error_type = ApiAuthError
        elif status == 404:
            error_type = ApiNotFound
        raise error_type(
            f"{call.label}: {reason}: {message}", status_code=status, problems=problems, code=code
        )

    def _gave_up(self, call: _Call, exc: _Transient) -> ApiUnavailable:
        elapsed = self._clock() - call.started
        return ApiUnavailable(
            f"{call.label}: {exc.reason}; gave up after {call.attempts} attempt(s) "
            f"in {elapsed:.1f} s",
            status_code=exc.status_code,
        )

    def _adopt(self, call: _Call, suffix: str) -> Job | None:
        """After a create of unknown outcome: the job it may have made, found by suffix."""
        try:
            job = self.find_job_by_suffix(suffix, max_pages=self.adopt_pages)
        except ApiError as exc:
            raise ApiUnavailable(
                f"{call.label}: outcome unknown, and looking for suffix {suffix!r} failed: {exc}",
                status_code=exc.status_code,
            ) from exc
        if job is not None:
            _log.warning("%s: outcome was unknown; adopted the job found by its suffix", call.key)
        return job

    def _parse(self, model: type[_M], response: httpx.Response, call: _Call) -> _M:
        """A 2xx body as ``model``, or :class:`ApiProtocolError`."""
        try:
            data = json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise ApiProtocolError(
                f"{call.label}: the answer is not JSON ({_short(type(exc).__name__)})",
                status_code=response.status_code,
            ) from exc
        try:
            return model.model_validate(data)
        except (ValidationError, RecursionError) as exc:
            detail = type(exc).__name__
            if isinstance(exc, ValidationError):
                lines = [
                    f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
                    for err in exc.errors(include_url=False, include_input=False)[:3]
                ]
                detail = "; ".join(lines)
            raise ApiProtocolError(
                self._redact(f"{call.label}: unexpected answer: {_short(detail)}"),
                status_code=response.status_code,
            ) from exc

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "**********")
        return text

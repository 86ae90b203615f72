"""ApiClient against a fake API at the transport level (httpx.MockTransport, no patching)."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stamina
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from sweeper.api.client import ApiClient
from sweeper.api.models import CreateJobRequest, Integration, WandbIntegration
from sweeper.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiProtocolError,
    ApiRejected,
    ApiUnavailable,
    ConfigError,
    SweeperError,
)

KEY = "sk-test-9f3b2c71-ZEBRA-distinctive"
WANDB_KEY = "wandb-secret-47aa19-OKAPI"
BASE = "https://api.example.test/v1"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"

Fault = Callable[[httpx.Request, "FakeApi"], httpx.Response]


@pytest.fixture(autouse=True, scope="module")
def _instant_retries() -> Iterator[None]:
    """Retries without waiting, at most 3 attempts (fewer if the client asks for fewer)."""
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


def job_json(job_id: str, *, suffix: str = "", created_at: int = 1_750_000_000) -> dict[str, Any]:
    return {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": created_at,
        "model": MODEL,
        "status": "running",
        "training_file": "file-train",
        "suffix": suffix,
        "organization_id": "",
        "trained_tokens": 0,
    }


class FakeApi:
    """A Nebius-like API in memory. ``script`` injects faults for matching requests, in order."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []  # oldest first; listed newest first
        self.created_bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.checkpoints: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.script: list[tuple[str, str, Fault]] = []
        self.has_more = True  # False: omit has_more from pages (like Nebius files)

    def on(self, method: str, path: str, *faults: Fault) -> None:
        for fault in faults:
            self.script.append((method, "/v1" + path, fault))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for i, (method, path, fault) in enumerate(self.script):
            if request.method == method and request.url.path == path:
                del self.script[i]
                return fault(request, self)
        return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        parts = path.strip("/").split("/")
        if path == "/fine_tuning/jobs" and request.method == "POST":
            body = json.loads(request.content)
            self.created_bodies.append(body)
            job = job_json(f"ftjob-{len(self.jobs):04d}", suffix=body.get("suffix") or "")
            self.jobs.append(job)
            return httpx.Response(200, json=job)
        if path == "/fine_tuning/jobs":
            return self.page(list(reversed(self.jobs)), request)
        if parts[:2] == ["fine_tuning", "jobs"] and len(parts) >= 3:
            job = next((j for j in self.jobs if j["id"] == parts[2]), None)
            if job is None:
                return httpx.Response(404, json={"detail": "Job not found"})
            if len(parts) == 3:
                return httpx.Response(200, json=job)
            if parts[3] == "cancel":
                job["status"] = "cancelled"
                return httpx.Response(200, json=job)
            if parts[3] == "events":
                return self.page(self.events.get(job["id"], []), request)
            if parts[3] == "checkpoints":
                return self.page(self.checkpoints.get(job["id"], []), request)
        if path == "/files" and request.method == "POST":
            file_id = f"file-{len(self.files):03d}"
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(request.content)}
            return httpx.Response(200, json=self.files[file_id])
        if path == "/files":
            return httpx.Response(200, json={"object": "list", "data": list(self.files.values())})
        if parts[0] == "files" and len(parts) == 2:
            file = self.files.get(parts[1])
            if file is None:
                return httpx.Response(404, json={"detail": "File not found"})
            if request.method == "DELETE":
                del self.files[parts[1]]
                return httpx.Response(200, json={"id": parts[1], "object": "file", "deleted": True})
            return httpx.Response(200, json=file)
        return httpx.Response(404, json={"detail": "Not Found"})

    def page(self, items: list[dict[str, Any]], request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", 20))
        after = request.url.params.get("after")
        start = 0
        if after is not None:
            start = next(i for i, item in enumerate(items) if item["id"] == after) + 1
        data = items[start : start + limit]
        body: dict[str, Any] = {"object": "list", "data": data}
        if self.has_more:
            body["has_more"] = start + limit < len(items)
        return httpx.Response(200, json=body)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == "/v1" + path)


# --- faults -----------------------------------------------------------------------------------


def raise_(exc_type: type[httpx.TransportError]) -> Fault:
    def fault(request: httpx.Request, fake: FakeApi) -> httpx.Response:
        raise exc_type("simulated outage", request=request)

    return fault


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Fault:
    def fault(request: httpx.Request, fake: FakeApi) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body if body is not None else {}, headers=headers)

    return fault


def process_then(outcome: int | type[httpx.TransportError]) -> Fault:
    """The server acts on the request, then the answer is lost (a 5xx or a transport error)."""

    def fault(request: httpx.Request, fake: FakeApi) -> httpx.Response:
        fake.handle(request)
        if isinstance(outcome, int):
            return httpx.Response(outcome, text="Bad Gateway")
        raise outcome("connection dropped after the request was processed", request=request)

    return fault


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(fake: FakeApi, sleeps: list[float]) -> Iterator[ApiClient]:
    with ApiClient(BASE, KEY, transport=httpx.MockTransport(fake), sleep=sleeps.append) as c:
        yield c


def create_request(suffix: str | None = "sweep-a-t1-ref42", **extra: Any) -> CreateJobRequest:
    return CreateJobRequest(model=MODEL, training_file="file-train", suffix=suffix, **extra)


# --- construction, auth, secrets --------------------------------------------------------------


def test_sends_bearer_key_and_user_agent(client: ApiClient, fake: FakeApi) -> None:
    """Every request carries `Authorization: Bearer <key>` and a sweeper User-Agent."""
    fake.jobs.append(job_json("ftjob-1"))
    client.retrieve_job("ftjob-1")
    request = fake.requests[0]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"].startswith("sweeper/")


def test_no_key_sends_no_authorization_header(fake: FakeApi) -> None:
    """Without a key no Authorization header is sent (the local service without auth)."""
    fake.jobs.append(job_json("ftjob-1"))
    with ApiClient("http://127.0.0.1:8765/v1", None, transport=httpx.MockTransport(fake)) as c:
        c.retrieve_job("ftjob-1")
    assert "Authorization" not in fake.requests[0].headers


@pytest.mark.parametrize("base", [BASE, BASE + "/"])
def test_routes_are_relative_to_base_url_with_or_without_slash(fake: FakeApi, base: str) -> None:
    """Routes are joined under base_url's path, whether or not it ends with '/'."""
    fake.jobs.append(job_json("ftjob-1"))
    with ApiClient(base, KEY, transport=httpx.MockTransport(fake)) as c:
        c.retrieve_job("ftjob-1")
    assert str(fake.requests[0].url) == "https://api.example.test/v1/fine_tuning/jobs/ftjob-1"


def test_ids_are_quoted_into_one_path_segment(client: ApiClient, fake: FakeApi) -> None:
    """An id with '/' or '..' cannot escape its path segment."""
    with pytest.raises(ApiNotFound):
        client.retrieve_job("../files/x")
    assert fake.requests[0].url.raw_path == b"/v1/fine_tuning/jobs/..%2Ffiles%2Fx"


@pytest.mark.parametrize(
    "base_url", ["http://api.example.test/v1", "http://10.0.0.5:8000/v1", "http://128.0.0.1/v1"]
)
def test_key_over_plain_http_to_remote_host_is_refused(base_url: str) -> None:
    """A bearer key is never sent over plain http to a non-loopback host: ConfigError names it."""
    with pytest.raises(ConfigError) as info:
        ApiClient(base_url, KEY)
    assert base_url in str(info.value)
    assert KEY not in str(info.value)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8765/v1",
        "http://127.8.9.10/v1",
        "http://localhost:1/v1",
        "http://[::1]:9/v1",
    ],
)
def test_key_over_plain_http_to_loopback_is_allowed(base_url: str) -> None:
    """Plain http with a key is fine on loopback (127.0.0.0/8, ::1, localhost)."""
    ApiClient(base_url, KEY).close()


def test_plain_http_without_key_is_allowed() -> None:
    """Without a key there is nothing to leak, so any http host is accepted."""
    ApiClient("http://api.example.test/v1", None).close()


@pytest.mark.parametrize("base_url", ["ftp://example.test/v1", "not a url", ""])
def test_bad_base_url_is_a_config_error(base_url: str) -> None:
    """A base_url that is not http(s) is refused with ConfigError."""
    with pytest.raises(ConfigError):
        ApiClient(base_url, None)


def test_key_never_appears_in_repr_errors_or_logs(
    fake: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    """The API key and the W&B key are absent from repr, error text and every log line."""
    caplog.set_level(logging.DEBUG)
    echo = {"detail": f"bad key {KEY} / {WANDB_KEY}"}
    fake.on("GET", "/fine_tuning/jobs/x", answer(401, echo))
    fake.on("GET", "/fine_tuning/jobs/y", *[answer(503, echo)] * 3)
    fake.on("POST", "/fine_tuning/jobs", answer(422, {"error": {"message": WANDB_KEY}}))
    fake.on("GET", "/files/z", raise_(httpx.ConnectError), raise_(httpx.ConnectError))
    wandb = WandbIntegration(project="p", api_key=SecretStr(WANDB_KEY))
    request = create_request(integrations=[Integration(wandb=wandb)])
    errors: list[ApiError] = []
    with ApiClient(
        BASE, SecretStr(KEY), transport=httpx.MockTransport(fake), retry_attempts=2
    ) as c:
        assert KEY not in repr(c)
        for call in (
            lambda: c.create_job(request),  # the client learns the W&B key here
            lambda: c.retrieve_job("x"),
            lambda: c.retrieve_job("y"),
            lambda: c.retrieve_file("z"),
        ):
            with pytest.raises(ApiError) as info:
                call()
            errors.append(info.value)
    assert [type(e) for e in errors] == [ApiRejected, ApiAuthError, ApiUnavailable, ApiUnavailable]
    for error in errors:
        for text in (str(error), repr(error), *getattr(error, "problems", [])):
            assert KEY not in text
            assert WANDB_KEY not in text
    assert KEY not in caplog.text
    assert WANDB_KEY not in caplog.text
    # ...but the W&B key did reach the wire
    post = next(r for r in fake.requests if r.method == "POST")
    assert WANDB_KEY.encode() in post.content


# --- parsing and error shapes -----------------------------------------------------------------


def test_unknown_fields_ignored_and_openai_fields_optional(
    client: ApiClient, fake: FakeApi
) -> None:
    """A job with unknown extra fields parses; OpenAI-only fields default to None."""
    job = job_json("ftjob-1") | {"brand_new_field": {"x": 1}, "trained_steps": 0}
    fake.on("GET", "/fine_tuning/jobs/ftjob-1", answer(200, job))
    parsed = client.retrieve_job("ftjob-1")
    assert parsed.status == "running" and parsed.fine_tuned_model is None
    assert parsed.suffix == "" and parsed.trained_tokens == 0


@pytest.mark.parametrize(
    ("status", "body", "error_type", "message", "problems", "code"),
    [
        (404, {"detail": "Job not found"}, ApiNotFound, "Job not found", [], None),
        (401, {"detail": "Invalid API key"}, ApiAuthError, "Invalid API key", [], None),
        (
            403,
            {"error": {"message": "forbidden", "type": "x"}},
            ApiAuthError,
            "forbidden",
            [],
            None,
        ),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "hyperparameters", "batch_size"],
                        "msg": "Input should be less than or equal to 64",
                        "type": "less_than_equal",
                        "input": 65,
                    },
                    {"loc": ["query", "limit"], "msg": "bad", "type": "int_parsing"},
                    {"loc": ["body"], "msg": "Field required", "type": "missing"},
                ]
            },
            ApiRejected,
            "3 problems",
            [
                "hyperparameters.batch_size: Input should be less than or equal to 64",
                "query.limit: bad",
                "Field required",
            ],
            None,
        ),
        (
            400,
            {
                "error": {
                    "message": "invalid file",
                    "type": "invalid_request_error",
                    "param": "training_file",
                    "code": "invalid_file",
                }
            },
            ApiRejected,
            "invalid request",
            ["training_file: invalid file"],
            "invalid_file",
        ),
        (
            400,
            {"error": {"message": "quota", "type": "t", "param": None, "code": 7}},
            ApiRejected,
            "quota",
            [],
            "7",
        ),
        (418, b"<html><body>I'm a teapot</body></html>", ApiRejected, "teapot", [], None),
        (400, b"", ApiRejected, "HTTP 400", [], None),
    ],
)
def test_error_bodies_map_to_the_error_tree(
    client: ApiClient,
    fake: FakeApi,
    status: int,
    body: Any,
    error_type: type[ApiRejected],
    message: str,
    problems: list[str],
    code: str | None,
) -> None:
    """FastAPI detail (str and list), OpenAI error and non-JSON bodies become one readable error."""
    fake.on("GET", "/fine_tuning/jobs/j", answer(status, body))
    with pytest.raises(ApiRejected) as info:
        client.retrieve_job("j")
    error = info.value
    assert type(error) is error_type
    assert error.status_code == status
    assert message in str(error)
    assert error.problems == problems
    for problem in problems:
        assert f"\n  {problem}" in str(error)  # one `field: message` line per problem
    assert error.code == code
    assert fake.count("GET", "/fine_tuning/jobs/j") == 1  # a 4xx is never retried


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"id": "x"}', b'{"id": 1, "created_at": "soon"}', b"\xff\xfe"],
)
def test_malformed_2xx_bodies_are_protocol_errors(
    client: ApiClient, fake: FakeApi, body: bytes
) -> None:
    """A 2xx that is not JSON or not a job raises ApiProtocolError."""
    fake.on("GET", "/fine_tuning/jobs/j", answer(200, body))
    with pytest.raises(ApiProtocolError):
        client.retrieve_job("j")


def test_redirect_is_not_followed(client: ApiClient, fake: FakeApi) -> None:
    """A 3xx is not followed (it could carry the key elsewhere) and is a protocol error."""
    fake.on("GET", "/fine_tuning/jobs/j", answer(302, {}, {"Location": "http://evil.test/"}))
    with pytest.raises(ApiProtocolError):
        client.retrieve_job("j")
    assert len(fake.requests) == 1


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        raise_(httpx.ConnectError),
        raise_(httpx.ConnectTimeout),
        raise_(httpx.ReadError),
        raise_(httpx.ReadTimeout),
        raise_(httpx.WriteError),
        raise_(httpx.WriteTimeout),
        raise_(httpx.RemoteProtocolError),
        answer(429),
        answer(500),
        answer(502, b"Bad Gateway"),
        answer(503),
        answer(408),
        answer(409),
    ],
)
def test_transient_failures_of_a_get_are_retried(
    client: ApiClient, fake: FakeApi, fault: Fault
) -> None:
    """Transport errors, timeouts, 408/409/429 and 5xx are retried; the retry succeeds."""
    fake.jobs.append(job_json("ftjob-1"))
    fake.on("GET", "/fine_tuning/jobs/ftjob-1", fault)
    assert client.retrieve_job("ftjob-1").id == "ftjob-1"
    assert client.stats["GET /fine_tuning/jobs/{id}"] == 2


def test_retries_are_bounded_then_unavailable(client: ApiClient, fake: FakeApi) -> None:
    """A failure that outlives the attempts raises ApiUnavailable saying how many were made."""
    fake.on("GET", "/fine_tuning/jobs/j", *[answer(503, {"detail": "overloaded"})] * 5)
    with pytest.raises(ApiUnavailable) as info:
        client.retrieve_job("j")
    assert info.value.status_code == 503
    assert "overloaded" in str(info.value) and "3 attempt(s)" in str(info.value)
    assert client.stats["GET /fine_tuning/jobs/{id}"] == 3


def test_retry_attempts_parameter_bounds_attempts(fake: FakeApi) -> None:
    """retry_attempts=1 means a single attempt."""
    fake.on("GET", "/fine_tuning/jobs/j", raise_(httpx.ConnectError))
    with (
        ApiClient(BASE, KEY, transport=httpx.MockTransport(fake), retry_attempts=1) as c,
        pytest.raises(ApiUnavailable),
    ):
        c.retrieve_job("j")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422])
def test_other_4xx_are_never_retried(client: ApiClient, fake: FakeApi, status: int) -> None:
    """4xx other than 408/409/429 fail at once."""
    fake.on("POST", "/fine_tuning/jobs/j/cancel", answer(status))
    with pytest.raises(ApiRejected):
        client.cancel_job("j")
    assert len(fake.requests) == 1


def test_x_should_retry_false_is_obeyed(client: ApiClient, fake: FakeApi) -> None:
    """A 503 with `x-should-retry: false` is not retried."""
    fake.on("GET", "/fine_tuning/jobs/j", answer(503, {}, {"x-should-retry": "false"}))
    with pytest.raises(ApiUnavailable):
        client.retrieve_job("j")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "3600"}, 60.0),  # capped
        ({"Retry-After": email.utils.formatdate(time.time() + 3600, usegmt=True)}, 60.0),
        ({"Retry-After": email.utils.formatdate(time.time() - 3600, usegmt=True)}, 0.0),
        ({"Retry-After": "-5"}, 0.0),
    ],
)
def test_retry_after_is_honoured(
    client: ApiClient, fake: FakeApi, sleeps: list[float], headers: dict[str, str], expected: float
) -> None:
    """The wait a 429/503 asks for (seconds, HTTP date, ms) is slept before the retry, capped."""
    fake.jobs.append(job_json("ftjob-1"))
    fake.on("GET", "/fine_tuning/jobs/ftjob-1", answer(429, {}, headers))
    client.retrieve_job("ftjob-1")
    assert sum(sleeps) == pytest.approx(expected, abs=2.0 if "GMT" in str(headers) else 1e-9)
    assert len(sleeps) <= 1 and len(fake.requests) == 2


def test_garbage_retry_after_falls_back_to_backoff(
    client: ApiClient, fake: FakeApi, sleeps: list[float]
) -> None:
    """An unparseable Retry-After is ignored: the normal backoff applies (no server wait)."""
    fake.jobs.append(job_json("ftjob-1"))
    fake.on("GET", "/fine_tuning/jobs/ftjob-1", answer(503, {}, {"Retry-After": "soonish"}))
    client.retrieve_job("ftjob-1")
    assert sleeps == []
    assert len(fake.requests) == 2


def test_retry_after_beyond_the_budget_gives_up_at_once(fake: FakeApi, sleeps: list[float]) -> None:
    """A server wait that would overrun retry_timeout is not slept: ApiUnavailable at once."""
    fake.on("GET", "/fine_tuning/jobs/j", answer(429, {}, {"Retry-After": "45"}))
    transport = httpx.MockTransport(fake)
    with (
        ApiClient(BASE, KEY, transport=transport, retry_timeout=30, sleep=sleeps.append) as c,
        pytest.raises(ApiUnavailable) as info,
    ):
        c.retrieve_job("j")
    assert info.value.status_code == 429
    assert sleeps == [] and len(fake.requests) == 1


def test_stats_count_every_request_sent_by_route_template(client: ApiClient, fake: FakeApi) -> None:
    """stats counts each HTTP request actually sent, retries included, by `METHOD route`."""
    fake.jobs.append(job_json("ftjob-1"))
    fake.on("GET", "/fine_tuning/jobs/ftjob-1", raise_(httpx.ReadError))
    client.retrieve_job("ftjob-1")
    client.cancel_job("ftjob-1")
    client.list_events("ftjob-1")
    client.list_checkpoints("ftjob-1")
    client.list_jobs()
    assert client.stats == {
        "GET /fine_tuning/jobs/{id}": 2,
        "POST /fine_tuning/jobs/{id}/cancel": 1,
        "GET /fine_tuning/jobs/{id}/events": 1,
        "GET /fine_tuning/jobs/{id}/checkpoints": 1,
        "GET /fine_tuning/jobs": 1,
    }


# --- create: never a duplicate ----------------------------------------------------------------


def test_create_sends_the_full_payload(client: ApiClient, fake: FakeApi) -> None:
    """create_job posts request.to_payload() (W&B key included) and returns the parsed job."""
    wandb = WandbIntegration(project="p", api_key=SecretStr(WANDB_KEY))
    request = create_request(
        seed=42, tags=["s", "trial-1"], integrations=[Integration(wandb=wandb)]
    )
    job = client.create_job(request)
    assert job.id == "ftjob-0000" and job.suffix == "sweep-a-t1-ref42"
    assert fake.created_bodies == [request.to_payload()]
    assert fake.created_bodies[0]["integrations"][0]["wandb"]["api_key"] == WANDB_KEY


@pytest.mark.parametrize(
    "outcome", [502, 500, 504, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout]
)
def test_ambiguous_create_adopts_the_job_instead_of_duplicating(
    client: ApiClient, fake: FakeApi, outcome: int | type[httpx.TransportError]
) -> None:
    """A create the server recorded but whose answer was lost is found by suffix, not resent."""
    fake.jobs.append(job_json("ftjob-old", suffix="someone-else"))
    fake.on("POST", "/fine_tuning/jobs", process_then(outcome))
    job = client.create_job(create_request())
    assert len(fake.created_bodies) == 1  # exactly one job created
    assert job.id == "ftjob-0001" and job.suffix == "sweep-a-t1-ref42"
    assert client.stats["POST /fine_tuning/jobs"] == 1
    assert client.stats["GET /fine_tuning/jobs"] >= 1


def test_ambiguous_create_finds_openai_user_provided_suffix(
    client: ApiClient, fake: FakeApi
) -> None:
    """On OpenAI the suffix comes back as user_provided_suffix; adoption matches it too."""

    def openai_create(request: httpx.Request, fake: FakeApi) -> httpx.Response:
        body = json.loads(request.content)
        fake.created_bodies.append(body)
        job = job_json("ftjob-oa") | {"suffix": None, "user_provided_suffix": body["suffix"]}
        fake.jobs.append(job)
        return httpx.Response(503)

    fake.on("POST", "/fine_tuning/jobs", openai_create)
    assert client.create_job(create_request()).id == "ftjob-oa"
    assert len(fake.created_bodies) == 1


def test_ambiguous_create_not_found_is_sent_again(client: ApiClient, fake: FakeApi) -> None:
    """When the lookup finds no job with the suffix, the create is sent again, once."""
    fake.on("POST", "/fine_tuning/jobs", answer(502, b"Bad Gateway"))
    job = client.create_job(create_request())
    assert len(fake.created_bodies) == 1 and job.suffix == "sweep-a-t1-ref42"
    assert client.stats["POST /fine_tuning/jobs"] == 2
    assert client.stats["GET /fine_tuning/jobs"] == 1  # looked before resending


@pytest.mark.parametrize("fault", [raise_(httpx.ConnectError), answer(429, {"detail": "slow"})])
def test_create_not_sent_is_retried_directly(
    client: ApiClient, fake: FakeApi, fault: Fault
) -> None:
    """A connect error or 429 (nothing was created) is retried without a lookup."""
    fake.on("POST", "/fine_tuning/jobs", fault)
    client.create_job(create_request())
    assert len(fake.created_bodies) == 1
    assert client.stats == {"POST /fine_tuning/jobs": 2}


@pytest.mark.parametrize("outcome", [502, httpx.ReadError])
def test_ambiguous_create_without_suffix_is_not_resent(
    client: ApiClient, fake: FakeApi, outcome: int | type[httpx.TransportError]
) -> None:
    """Without a suffix an unknown outcome raises ApiUnavailable and nothing is resent."""
    fake.on("POST", "/fine_tuning/jobs", process_then(outcome))
    with pytest.raises(ApiUnavailable) as info:
        client.create_job(create_request(suffix=None))
    assert "no suffix" in str(info.value)
    assert client.stats == {"POST /fine_tuning/jobs": 1}


def test_create_lookup_failure_does_not_resend(client: ApiClient, fake: FakeApi) -> None:
    """If looking for the suffix fails too, ApiUnavailable is raised and the create not resent."""
    fake.on("POST", "/fine_tuning/jobs", process_then(502))
    fake.on("GET", "/fine_tuning/jobs", *[raise_(httpx.ConnectError)] * 3)
    with pytest.raises(ApiUnavailable) as info:
        client.create_job(create_request())
    assert "outcome unknown" in str(info.value)
    assert client.stats["POST /fine_tuning/jobs"] == 1


def test_create_rejected_is_not_retried(client: ApiClient, fake: FakeApi) -> None:
    """A 422 on create is final: ApiRejected with the problems, one POST."""
    detail = {"detail": [{"loc": ["body", "model"], "msg": "unknown model", "type": "x"}]}
    fake.on("POST", "/fine_tuning/jobs", answer(422, detail))
    with pytest.raises(ApiRejected) as info:
        client.create_job(create_request())
    assert info.value.problems == ["model: unknown model"]
    assert client.stats == {"POST /fine_tuning/jobs": 1}


def test_create_failing_every_time_gives_up_after_a_last_lookup(
    client: ApiClient, fake: FakeApi
) -> None:
    """Every create answering 503 (none recorded): bounded attempts, then ApiUnavailable."""
    fake.on("POST", "/fine_tuning/jobs", *[answer(503)] * 3)
    with pytest.raises(ApiUnavailable) as info:
        client.create_job(create_request())
    assert "sweep-a-t1-ref42" in str(info.value)
    assert fake.created_bodies == []
    assert client.stats["POST /fine_tuning/jobs"] == 3
    assert client.stats["GET /fine_tuning/jobs"] == 3  # before attempts 2 and 3, and at the end


def test_adoption_search_is_bounded(client: ApiClient, fake: FakeApi) -> None:
    """The suffix lookup reads at most adopt_pages pages of newest jobs."""
    fake.jobs.extend(job_json(f"ftjob-x{i}") for i in range(1000))
    fake.on("POST", "/fine_tuning/jobs", answer(502), answer(502), answer(502))
    client.adopt_pages = 2
    with pytest.raises(ApiUnavailable):
        client.create_job(create_request())
    assert client.stats["GET /fine_tuning/jobs"] == 3 * 2


# --- pagination -------------------------------------------------------------------------------


def test_iter_jobs_follows_after_and_has_more(client: ApiClient, fake: FakeApi) -> None:
    """iter_jobs pages with after=<last id> until has_more is false, newest first."""
    fake.jobs.extend(job_json(f"ftjob-{i:03d}") for i in range(250))
    ids = [job.id for job in client.iter_jobs(page_size=100)]
    assert ids == [f"ftjob-{i:03d}" for i in reversed(range(250))]
    lists = [r for r in fake.requests if r.url.path == "/v1/fine_tuning/jobs"]
    assert [r.url.params.get("after") for r in lists] == [None, "ftjob-150", "ftjob-050"]


def test_iter_jobs_respects_max_pages(client: ApiClient, fake: FakeApi) -> None:
    """max_pages bounds the pages read."""
    fake.jobs.extend(job_json(f"ftjob-{i:03d}") for i in range(250))
    assert len(list(client.iter_jobs(page_size=10, max_pages=3))) == 30
    assert len(fake.requests) == 3


def test_iter_jobs_without_has_more_stops_on_empty_page(client: ApiClient, fake: FakeApi) -> None:
    """Without has_more, paging stops at the first empty page."""
    fake.has_more = False
    fake.jobs.extend(job_json(f"ftjob-{i:03d}") for i in range(25))
    assert len(list(client.iter_jobs(page_size=10))) == 25
    assert len(fake.requests) == 4


def test_iter_jobs_stops_when_a_page_repeats(client: ApiClient, fake: FakeApi) -> None:
    """A server ignoring `after` (same page again, has_more true) does not loop forever."""
    page = {"object": "list", "data": [job_json("a"), job_json("b")], "has_more": True}
    fake.on("GET", "/fine_tuning/jobs", answer(200, page), answer(200, page), answer(200, page))
    assert [job.id for job in client.iter_jobs()] == ["a", "b"]
    assert len(fake.requests) == 2


def test_list_jobs_returns_one_page(client: ApiClient, fake: FakeApi) -> None:
    """list_jobs sends limit and after and returns that page with has_more."""
    fake.jobs.extend(job_json(f"ftjob-{i}") for i in range(5))
    page = client.list_jobs(limit=2, after="ftjob-4")
    assert [j.id for j in page.data] == ["ftjob-3", "ftjob-2"] and page.has_more is True
    assert fake.requests[0].url.params["limit"] == "2"


def test_find_job_by_suffix(client: ApiClient, fake: FakeApi) -> None:
    """find_job_by_suffix searches page after page; None when absent or beyond max_pages."""
    fake.jobs.append(job_json("ftjob-target", suffix="wanted"))
    fake.jobs.extend(job_json(f"ftjob-{i:03d}") for i in range(150))
    assert client.find_job_by_suffix("wanted") is not None
    assert client.find_job_by_suffix("wanted", max_pages=1) is None
    assert client.find_job_by_suffix("missing") is None
    assert client.find_job_by_suffix("") is None


def event(i: int, created_at: int) -> dict[str, Any]:
    return {"id": f"ftevent-{i}", "created_at": created_at, "level": "info", "message": f"e{i}"}


def test_list_events_nebius_order_all_pages(client: ApiClient, fake: FakeApi) -> None:
    """Events oldest first across pages (Nebius order) come back oldest first, all of them."""
    fake.jobs.append(job_json("ftjob-1"))
    fake.events["ftjob-1"] = [event(i, 1000 + i) for i in range(230)]
    events = client.list_events("ftjob-1")
    assert [e.id for e in events] == [f"ftevent-{i}" for i in range(230)]
    assert client.stats["GET /fine_tuning/jobs/{id}/events"] == 3


def test_list_events_openai_order_is_reversed_stably(client: ApiClient, fake: FakeApi) -> None:
    """Newest-first events (OpenAI) are returned oldest first; equal timestamps keep page order."""
    fake.jobs.append(job_json("ftjob-1"))
    newest_first = [event(i, 2000 - i // 2) for i in range(150)]
    fake.events["ftjob-1"] = newest_first
    events = client.list_events("ftjob-1")
    assert [e.created_at for e in events] == sorted(e["created_at"] for e in newest_first)
    # ties (two events per second) keep the provider's relative order
    assert [e.id for e in events][:2] == ["ftevent-148", "ftevent-149"]


def test_list_events_passes_after(client: ApiClient, fake: FakeApi) -> None:
    """list_events(after=...) starts from that cursor."""
    fake.jobs.append(job_json("ftjob-1"))
    fake.events["ftjob-1"] = [event(i, 1000 + i) for i in range(5)]
    assert [e.id for e in client.list_events("ftjob-1", after="ftevent-2")] == [
        "ftevent-3",
        "ftevent-4",
    ]


def test_list_checkpoints_all_pages_sorted_by_step(client: ApiClient, fake: FakeApi) -> None:
    """Checkpoints served unsorted over several pages come back sorted by step_number."""
    fake.jobs.append(job_json("ftjob-1"))
    steps = [30, 10, 50, 20, 40] * 30
    fake.checkpoints["ftjob-1"] = [
        {
            "id": f"ftckpt_{i}",
            "created_at": 1000 + i,
            "fine_tuning_job_id": "ftjob-1",
            "step_number": step * 1000 + i,
            "metrics": {"train_loss": 1.0 / (i + 1), "valid_loss": None, "extra_metric": 3},
            "fine_tuned_model_checkpoint": "m",
            "result_files": ["file-a"],
        }
        for i, step in enumerate(steps)
    ]
    checkpoints = client.list_checkpoints("ftjob-1")
    assert len(checkpoints) == 150
    numbers = [c.step_number for c in checkpoints]
    assert numbers == sorted(numbers)
    assert client.stats["GET /fine_tuning/jobs/{id}/checkpoints"] == 2


# --- files ------------------------------------------------------------------------------------


def test_upload_is_multipart_with_purpose_and_basename(
    client: ApiClient, fake: FakeApi, tmp_path: Path
) -> None:
    """upload_file sends multipart `file` (filename = basename) and `purpose=fine-tune`."""
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir()
    path.write_text('{"text": "hello"}\n')
    uploaded = client.upload_file(path)
    assert uploaded.id == "file-000"
    request = fake.requests[0]
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="purpose"\r\n\r\nfine-tune\r\n' in request.content
    assert b'name="file"; filename="train.jsonl"' in request.content
    assert b'{"text": "hello"}' in request.content
    assert str(tmp_path).encode() not in request.content


def test_upload_retry_resends_the_whole_file(
    client: ApiClient, fake: FakeApi, tmp_path: Path
) -> None:
    """A retried upload re-reads the file from the start."""
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "hello"}\n')
    fake.on("POST", "/files", answer(503))
    client.upload_file(path, purpose="batch")
    first, second = fake.requests
    assert len(second.content) == len(first.content)  # same parts, only the boundary differs
    assert b'{"text": "hello"}' in second.content
    assert b"\r\n\r\nbatch\r\n" in fake.requests[1].content


def test_upload_missing_file_is_a_config_error(client: ApiClient, tmp_path: Path) -> None:
    """A missing dataset file raises ConfigError naming it, and nothing is sent."""
    with pytest.raises(ConfigError, match=r"nope\.jsonl"):
        client.upload_file(tmp_path / "nope.jsonl")
    assert client.stats == {}


def test_list_retrieve_delete_files(client: ApiClient, fake: FakeApi) -> None:
    """list_files reads the first page (no has_more), passes purpose/limit; retrieve and delete."""
    fake.files["file-1"] = {"id": "file-1", "object": "file", "purpose": "fine-tune", "x": 1}
    files = client.list_files(purpose="fine-tune", limit=5)
    assert [f.id for f in files] == ["file-1"]
    assert dict(fake.requests[0].url.params) == {"purpose": "fine-tune", "limit": "5"}
    assert client.retrieve_file("file-1").purpose == "fine-tune"
    assert client.delete_file("file-1").deleted is True
    with pytest.raises(ApiNotFound):
        client.retrieve_file("file-1")


def test_delete_whose_answer_was_lost_still_reports_deleted(
    client: ApiClient, fake: FakeApi
) -> None:
    """A retried delete meeting 404 (the first attempt worked) reports the file deleted."""
    fake.files["file-1"] = {"id": "file-1"}
    fake.on("DELETE", "/files/file-1", process_then(httpx.ReadError))
    assert client.delete_file("file-1").deleted is True
    with pytest.raises(ApiNotFound):
        client.delete_file("file-1")  # a first-attempt 404 is still an error


# --- fuzz: only sweeper errors ever leave the client ------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "id",
        "created_at",
        "model",
        "status",
        "training_file",
        "data",
        "has_more",
        "step_number",
        "fine_tuning_job_id",
        "metrics",
        "detail",
        "error",
        "message",
        "loc",
        "msg",
        "hyperparameters",
    ]
)
shaped = st.recursive(
    json_values,
    lambda children: (
        st.dictionaries(field_names, children, max_size=6) | st.lists(children, max_size=3)
    ),
    max_leaves=25,
)
bodies = st.one_of(shaped.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))
fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def serve(status: int, body: bytes) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    return ApiClient(BASE, KEY, transport=httpx.MockTransport(handler), retry_attempts=1)


@fuzz
@given(body=bodies)
def test_fuzz_2xx_bodies_yield_models_or_sweeper_errors(body: bytes) -> None:
    """Any 2xx body for a job, a page, events or checkpoints parses or raises a SweeperError."""
    with serve(200, body) as c:
        for call in (
            lambda: c.retrieve_job("j"),
            lambda: c.list_jobs(),
            lambda: list(c.iter_jobs(max_pages=2)),
            lambda: c.list_events("j"),
            lambda: c.list_checkpoints("j"),
            lambda: c.list_files(),
            lambda: c.delete_file("f"),
        ):
            try:
                call()
            except SweeperError as exc:
                assert isinstance(exc, ApiProtocolError)
                assert KEY not in str(exc)


@fuzz
@given(body=bodies, status=st.sampled_from([400, 401, 403, 404, 408, 418, 422, 429, 500, 503]))
def test_fuzz_error_bodies_yield_sweeper_errors(body: bytes, status: int) -> None:
    """Any error body with any error status raises the mapped ApiError with a str message."""
    with serve(status, body) as c, pytest.raises(ApiError) as info:
        c.retrieve_job("j")
    error = info.value
    assert isinstance(error, ApiUnavailable if status in (408, 429, 500, 503) else ApiRejected)
    assert error.status_code == status
    assert isinstance(str(error), str)
    assert all(isinstance(p, str) for p in getattr(error, "problems", []))


def test_ai_project_id_goes_with_every_request() -> None:
    """A configured Nebius project id is sent as the ai_project_id query parameter."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params.get("ai_project_id"))
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    with ApiClient(
        "https://api.example.com/v1", "k", transport=httpx.MockTransport(handler), project="p-1"
    ) as client:
        client.list_jobs(limit=5)
    assert seen == ["p-1"]

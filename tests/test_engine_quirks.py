"""Provider quirks the engine must live with (finetune-api.md): here, no job list at all."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sweeper.config import load_config
from sweeper.engine.service import run_sweep


class _Proxy(BaseHTTPRequestHandler):
    """Forwards to the local service, recording job creations; with ``refuse_list`` it answers
    GET /v1/fine_tuning/jobs (the list) with 404."""

    upstream = ""
    refuse_list = True
    refused: list[str] = []
    created: list[dict[str, Any]] = []

    def _forward(self) -> None:
        path = self.path.split("?", 1)[0]
        if (
            self.refuse_list
            and self.command == "GET"
            and path.rstrip("/") == "/v1/fine_tuning/jobs"
        ):
            self.refused.append(self.path)
            body = b'{"detail": "Not Found"}'
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("content-length") or 0)
        data = self.rfile.read(length) if length else None
        if self.command == "POST" and path.rstrip("/") == "/v1/fine_tuning/jobs" and data:
            self.created.append(json.loads(data))
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        r = httpx.request(self.command, self.upstream + self.path, content=data, headers=headers)
        self.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "content-encoding",
            ):
                self.send_header(k, v)
        self.send_header("content-length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        return None


def _proxy(local_service: Any, refuse_list: bool) -> Iterator[tuple[str, Any]]:
    root = local_service.base_url.rsplit("/v1", 1)[0]
    attrs = {"upstream": root, "refused": [], "created": [], "refuse_list": refuse_list}
    handler = type("P", (_Proxy,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_list_provider(local_service: Any) -> Iterator[tuple[str, Any]]:
    yield from _proxy(local_service, refuse_list=True)


@pytest.fixture
def recording_provider(local_service: Any) -> Iterator[tuple[str, Any]]:
    yield from _proxy(local_service, refuse_list=False)


def test_a_provider_without_a_job_list_is_polled_job_by_job(
    no_list_provider, local_service, service_env, make_config, rows_of
):
    """When listing jobs answers 404, the sweep still finishes by polling each job."""
    url, handler = no_list_provider
    path = make_config(local_service, sweep={"n_trials": 3}, api={"base_url": url})
    result = run_sweep(load_config(path), env=service_env)
    assert result.counts == {"COMPLETE": 3}
    assert handler.refused  # the list really was refused
    assert result.requests.get("GET /fine_tuning/jobs", 0) == 1  # tried once, then not again
    assert all(a.state == "closed" for a in rows_of(path))


def test_openai_dialect_sends_openai_fields(
    recording_provider, local_service, service_env, make_config, rows_of
):
    """provider = "openai": learning_rate_multiplier is searched and sent, sweep and trial go
    in metadata (OpenAI has no tags), and the sweep runs to the end."""
    url, handler = recording_provider
    path = make_config(
        local_service,
        sweep={"n_trials": 2},
        api={"base_url": url, "provider": "openai"},
        job__hyperparameters=None,
        search__learning_rate=None,
        search__lora_r=None,
        search__learning_rate_multiplier={"type": "float", "low": 0.5, "high": 2.0},
        search__n_epochs={"type": "int", "low": 1, "high": 2},
    )
    with path.open("a") as f:  # W&B: OpenAI holds the key itself, so no env var is needed
        f.write('\n[[job.integrations]]\ntype = "wandb"\nwandb = { project = "p" }\n')
    result = run_sweep(load_config(path), env=service_env)
    assert result.counts == {"COMPLETE": 2}
    assert len(handler.created) == 2
    for body in handler.created:
        wandb = {"project": "p", "name": body["suffix"]}  # and no api_key
        assert body["integrations"] == [{"type": "wandb", "wandb": wandb}]
    for body, row in zip(handler.created, rows_of(path), strict=True):
        assert set(body["hyperparameters"]) == {"learning_rate_multiplier", "n_epochs"}
        assert "tags" not in body
        assert body["metadata"]["sweep"] == "t" and body["metadata"]["launch"] == row.launch_ref
        assert body["suffix"] == row.suffix


def test_each_dialect_refuses_the_others_hyperparameters(make_config):
    """Nebius configs refuse learning_rate_multiplier; OpenAI configs refuse lora_r."""
    from sweeper.errors import ConfigError

    nebius = make_config(None, job__hyperparameters={"learning_rate_multiplier": 1.0})
    with pytest.raises(ConfigError, match="learning_rate_multiplier: unknown hyperparameter"):
        load_config(nebius)
    openai = make_config(
        None,
        name="o.toml",
        api={"provider": "openai"},
        job__hyperparameters=None,
        search__learning_rate=None,
    )
    with pytest.raises(
        ConfigError, match=r"search.lora_r: unknown hyperparameter, the provider \(openai\)"
    ):
        load_config(openai)

"""Provider quirks the engine must live with (finetune-api.md): here, no job list at all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sweeper.config import load_config
from sweeper.engine.service import run_sweep


class _Proxy(BaseHTTPRequestHandler):
    """Forwards to the local service, except GET /v1/fine_tuning/jobs (the list): 404."""

    upstream = ""
    refused: list[str] = []

    def _forward(self) -> None:
        path = self.path.split("?", 1)[0]
        if self.command == "GET" and path.rstrip("/") == "/v1/fine_tuning/jobs":
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


@pytest.fixture
def no_list_provider(local_service: Any) -> Iterator[str]:
    root = local_service.base_url.rsplit("/v1", 1)[0]
    handler = type("P", (_Proxy,), {"upstream": root, "refused": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


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

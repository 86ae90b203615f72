"""Fault injection and the request gate in front of the API: stats, faults, then auth.

:class:`Gate` is a pure ASGI middleware. For every ``/v1`` request, in this order, it
counts the request by route, sleeps ``latency``, answers 429 beyond ``rate_limit`` requests per
second (with ``Retry-After``), closes the connection without answering with probability
``drop_rate``, answers 500 with probability ``error_rate``, and finally checks the bearer token.
All draws come from one ``random.Random(seed)``, so a seeded run injects the same faults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class FaultConfig:
    """What `sweep serve`'s fault flags inject; everything is off by default."""

    error_rate: float = 0.0  # P(answer 500)
    drop_rate: float = 0.0  # P(close the connection without answering)
    rate_limit: float | None = None  # requests per second beyond which the answer is 429
    latency: float = 0.0  # seconds added to every answer
    job_failure_rate: float = 0.0  # P(a job fails mid-training with internal_error)
    step_delay: float = 0.0  # seconds slept per training step
    seed: int | None = None  # makes every injected fault reproducible

    def job_failure_step(self, job_id: str, total_steps: int) -> int | None:
        """The step at which this job will fail, or None; a function of (seed, job id)."""
        if self.job_failure_rate <= 0:
            return None
        rng = random.Random(f"{self.seed}:{job_id}")
        if rng.random() >= self.job_failure_rate:
            return None
        return 1 + rng.randrange(max(1, total_steps))


class _Bucket:
    """A token bucket holding at most one second's worth of requests."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when the request may pass, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


async def _json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


class Gate:
    """ASGI middleware: per-route counters, injected faults, bearer auth."""

    def __init__(self, app: ASGIApp, api_key: str, faults: FaultConfig) -> None:
        self.app = app
        self.api_key = api_key
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.bucket = _Bucket(faults.rate_limit) if faults.rate_limit else None
        self.counts: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # faults served, by kind (429, drop, 500)
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def _count_fault(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def _route(self, scope: Scope) -> str:
        for route in getattr(self.app, "routes", []):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return f"{scope['method']} {route.path}"
        return f"{scope['method']} (unmatched)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.counts[self._route(scope)] += 1
        f = self.faults
        if f.latency > 0:
            await asyncio.sleep(f.latency)
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                headers = {
                    "retry-after": str(max(1, math.ceil(wait))),
                    "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                }
                self._count_fault("429")
                await _json(send, 429, {"detail": "Rate limit exceeded"}, headers)
                return
        if f.drop_rate > 0 and self.rng.random() < f.drop_rate:
            self._count_fault("drop")
            _drop(send)
            return
        if f.error_rate > 0 and self.rng.random() < f.error_rate:
            self._count_fault("500")
            await _json(send, 500, {"detail": "Internal Server Error"})
            return
        if not self._authorized(scope):
            await _json(
                send, 401, {"detail": "Invalid or missing API key"}, {"www-authenticate": "Bearer"}
            )
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and secrets.compare_digest(
                    token.strip().encode(), self.api_key.encode()
                )
        return False


class QuietDrops(logging.Filter):
    """Hide uvicorn's complaint about the answers :func:`_drop` withholds on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without starting response."


def _drop(send: Send) -> None:
    """Abort the TCP connection without a byte of answer (uvicorn's h11 protocol).

    ``send`` is a bound method of uvicorn's per-request cycle, which holds the asyncio transport;
    ``abort()`` resets the connection and makes later writes (uvicorn's fallback 500) no-ops.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise ConnectionAbortedError("injected drop")  # uvicorn then closes the connection
    transport.abort()

"""Run the local service in-process: uvicorn in a daemon thread on a free loopback port.

    with start_embedded(tmp_path / "local") as svc:
        client = OpenAI(base_url=svc.base_url, api_key=svc.api_key)

``sweep serve`` uses the same machinery (:func:`serve_forever`), so the subprocess and the
embedded service behave alike. Stopping is prompt: uvicorn is told to exit, training threads
stop within a step, and jobs left ``running`` resume when a service starts on the same folder.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from sweeper.local.faults import FaultConfig

DEFAULT_MAX_RUNNING = 4
LISTENING = "sweeper local service listening on {url}"


class EmbeddedService:
    """A running local service; use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        api_key: str | None = None,
        faults: FaultConfig | None = None,
        max_running: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        import uvicorn

        from sweeper.local.app import create_app
        from sweeper.local.faults import Gate
        from sweeper.local.runner import Runner
        from sweeper.local.state import State

        self.api_key = api_key or f"sk-local-{secrets.token_hex(16)}"
        self.faults = faults or FaultConfig()
        self.state = State(Path(state_dir))
        self.runner = Runner(self.state, self.faults, max_running or DEFAULT_MAX_RUNNING)
        app = create_app(self.state, self.runner)
        self.gate = Gate(app, self.api_key, self.faults)
        app.get("/_stats", include_in_schema=False)(self.stats)
        config = uvicorn.Config(
            self.gate,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(config)
        if self.faults.drop_rate > 0:
            _quiet_drops()
        self._thread = threading.Thread(target=self._server.run, name="local-http", daemon=True)
        self._stopped = False
        self.base_url = ""

    def start(self, timeout: float = 10.0) -> EmbeddedService:
        self.runner.start()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the local service did not start listening")
            time.sleep(0.005)
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}/v1"
        return self

    def stats(self) -> dict[str, int]:
        """Requests received so far, by ``METHOD /route/{template}``."""
        return self.gate.stats()

    def stop(self) -> None:
        """Stop serving and training within about a second; the state stays consistent."""
        if self._stopped:
            return
        self._stopped = True
        self._server.should_exit = True
        self.runner.stop(timeout=0.8)
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.state.close()

    def __enter__(self) -> EmbeddedService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _quiet_drops() -> None:
    import logging

    from sweeper.local.faults import QuietDrops

    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietDrops) for f in logger.filters):
        logger.addFilter(QuietDrops())


def start_embedded(
    state_dir: Path,
    *,
    api_key: str | None = None,
    faults: FaultConfig | None = None,
    max_running: int | None = None,
) -> EmbeddedService:
    """Start the service on a free loopback port and return once it accepts connections."""
    return EmbeddedService(
        state_dir, api_key=api_key, faults=faults, max_running=max_running
    ).start()


def serve_forever(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    faults: FaultConfig | None = None,
    max_running: int | None = None,
    port_file: Path | None = None,
    out: TextIO | None = None,
) -> None:
    """What ``sweep serve`` runs: serve until SIGINT/SIGTERM, announcing the URL once listening."""
    out = out or sys.stdout
    done = threading.Event()

    def _exit(signum: int, frame: Any) -> None:
        done.set()

    previous = signal.signal(signal.SIGTERM, _exit)
    service = EmbeddedService(
        state_dir, api_key=api_key, faults=faults, max_running=max_running, host=host, port=port
    )
    try:
        service.start()
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(service.base_url + "\n", encoding="utf-8")
            tmp.replace(port_file)
        out.write(LISTENING.format(url=service.base_url) + "\n")
        out.flush()
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        signal.signal(signal.SIGTERM, previous)

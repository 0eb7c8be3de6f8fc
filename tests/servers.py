"""Servers the heavy tests start on 127.0.0.1: one Prefect server for the session (tests/conftest.py's
``prefect_server``), and a webhook receiver that records what a Prefect notification block POSTs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(what: str, check: Callable[[], Any], timeout: float = TIMEOUT_S, logs: Path | None = None) -> Any:
    """``check()``'s first truthy result; AssertionError with the logs' tail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    tail = logs.read_text(errors="replace")[-6000:] if logs and logs.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this test started, SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class PrefectServer:
    """A Prefect server on 127.0.0.1 and the environment its clients need; ``logs`` collects every
    process the tests start against it."""

    api_url: str
    env: dict[str, str]
    logs: Path

    def start(
        self, command: list[str], cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own process group, its output appended to the logs."""
        with self.logs.open("ab") as sink:
            return subprocess.Popen(
                command,
                env=env or self.env,
                cwd=cwd,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


@contextmanager
def prefect_server(folder: Path) -> Iterator[PrefectServer]:
    """``prefect server start`` with its state in ``folder``, until the context ends."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = PrefectServer(api_url, env, folder / "logs.txt")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    process = server.start(command, folder)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll("the Prefect server", healthy, logs=server.logs)
        yield server
    finally:
        stop(process)


@dataclass
class Webhook:
    """What the receiver got: one JSON body per POST."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    """An HTTP server on 127.0.0.1 that records every POSTed JSON body and answers 200."""
    port = free_port()
    received = Webhook(f"http://127.0.0.1:{port}/hook")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                received.posts.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        httpd.shutdown()
        httpd.server_close()

"""The Prefect API an evaluation talks to: the server ``PREFECT_API_URL`` names, else posteval's local server
(``posteval server start``), else a temporary one that posteval starts before it resolves the inputs.

Prefect starts its own temporary server only when the flow is called, and then waits ~10 s for it (the
server process imports Prefect's API and migrates its database) while posteval does nothing. Started
here first thing, the server boots while posteval resolves the inputs and imports the model libraries,
and the flow finds it ready. It is the same server Prefect starts (its uvicorn app factory, the UI off,
PREFECT_HOME's database), in its own session (the terminal's Ctrl-C reaches only posteval) and on Linux
told to die with posteval; it stops when posteval exits.

The local server is the same app with the UI, started once and reused by every later run until
``posteval server stop``: runs then skip the server's start altogether and every flow run stays in the
UI. Its address and process id are kept in ``POSTEVAL_HOME/prefect-server.json``.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posteval.cli.interrupts import die_with_parent
from posteval.errors import PostevalError
from posteval.settings import get_settings

STARTUP_TIMEOUT_S = 180.0
HEARTBEAT_VARIABLES = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
PREFECT_DEFAULT_HEARTBEAT_S = 180  # flows.heartbeat_frequency's default since Prefect 3.6


class ServerError(PostevalError):
    """Prefect's API server did not come up (exit 3)."""

    exit_code = 3


@dataclass
class Server:
    """A Prefect API server process this machine runs: its address and process."""

    url: str  # the API's base URL, ".../api"
    pid: int
    process: subprocess.Popen[bytes] | None = None  # set in the process that started it

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Return once the API answers; raise ServerError if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(
                    f"the Prefect server exited with code {self.process.returncode} while starting"
                )
            if time.monotonic() > deadline:
                raise ServerError(f"the Prefect server at {self.url} did not answer within {timeout:.0f} s")
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(*, ui: bool, log: Path | None = None) -> Server:
    """Prefect's server app under uvicorn on a free local port, as Prefect starts its temporary one."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "1" if ui else "0",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if not ui:
        env |= {"PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    args = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 - the child holds it
    try:
        process = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            # The death signal is tied to the forking thread: only from the main thread, only if temporary.
            preexec_fn=die_with_parent
            if not ui and threading.current_thread() is threading.main_thread()
            else None,
        )
    finally:
        if out is not None:
            out.close()
    return Server(url=f"http://127.0.0.1:{port}/api", pid=process.pid, process=process)


def configured_api_url() -> str | None:
    """The API URL Prefect's settings name (environment or profile), if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


# The local server --------------------------------------------------------------------------------------


def _state_file() -> Path:
    return get_settings().home / "prefect-server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_server() -> Server | None:
    """posteval's local server, if one was started and its process still runs."""
    try:
        state = json.loads(_state_file().read_text())
        server = Server(url=str(state["url"]), pid=int(state["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return server if _alive(server.pid) else None


def start_local_server() -> tuple[Server, bool]:
    """Start the local server (or find the running one); returns it and whether this call started it."""
    running = local_server()
    if running is not None:
        return running, False
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    server = _spawn(ui=True, log=home / "prefect-server.log")
    server.wait()
    _state_file().write_text(json.dumps({"url": server.url, "pid": server.pid}))
    return server, True


def stop_local_server() -> Server | None:
    """Stop the local server; returns what was stopped (None when none ran)."""
    server = local_server()
    if server is not None:
        os.kill(server.pid, 15)
        deadline = time.monotonic() + 10
        while _alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(server.pid):
            os.kill(server.pid, 9)
    _state_file().unlink(missing_ok=True)
    return server


# One evaluation's API --------------------------------------------------------------------------------


def _stop(server: Server) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


class PreparedApi:
    """One evaluation's Prefect API: call it for the URL to use (None: Prefect's settings already name one),
    as late as possible; ``close()`` stops a temporary server it started (otherwise stopped at exit)."""

    def __init__(self, server: Server | None = None, url: str | None = None) -> None:
        self.server, self.url = server, url

    def __call__(self) -> str | None:
        if self.server is None:
            return self.url
        if configured_api_url():  # a profile names the API: use it, as Prefect would
            self.close()
            return None
        self.server.wait()
        return self.server.url

    def close(self) -> None:
        if self.server is not None:
            _send_pending()
            _stop(self.server)


def _send_pending(timeout_s: float = 10.0) -> None:
    """Let Prefect send what it still holds for the server (a failed flow run's last logs and events)
    before the server stops; else the process ends printing "Error logging to API" for each batch."""
    for module, worker in (
        ("prefect.logging.handlers", "APILogWorker"),
        ("prefect.events.worker", "EventsWorker"),
    ):
        if module in sys.modules:  # nothing to send where Prefect never ran
            getattr(sys.modules[module], worker).drain_all(timeout=timeout_s, at_exit=False)


def prepare_api() -> PreparedApi:
    """Find or start the API for one evaluation. Call it as early as possible, the result just before the
    flow, and its ``close()`` when the evaluation fails before or in the flow (a refused input included: an
    in-process caller such as a test or a notebook must not collect one idle server per call).

    The temporary server is spawned before Prefect is even imported (reading Prefect's settings takes a
    second); should the profile turn out to name an API, it is stopped again unused.
    """
    if os.environ.get("PREFECT_API_URL"):
        return PreparedApi()
    local = local_server()
    if local is not None:
        return PreparedApi(url=local.url)
    server = _spawn(ui=False)
    atexit.register(_stop, server)
    return PreparedApi(server)


@contextmanager
def using_api(url: str | None) -> Iterator[None]:
    """Prefect's client talks to ``url`` inside the block (nothing changes for None: a configured API).

    ``url`` is a server posteval started (temporary, or its local one): there the flow run sends no
    heartbeats unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set. Heartbeats let a server notice a flow run
    whose process died; a temporary server dies with that process, and posteval marks an interrupted run
    failed itself. The engine joins the heartbeat thread's one-second sleep at the end of every flow
    run, half a second on average. A configured API (a team's server) keeps Prefect's default.
    """
    if url is None:
        yield
        return
    import prefect.settings
    from prefect.settings import PREFECT_API_URL, temporary_settings

    updates: dict[Any, Any] = {PREFECT_API_URL: url}
    # Prefect names the setting flows.heartbeat_frequency from 3.6 on (runner.heartbeat_frequency before,
    # off by default); the user sets it in the environment, or in a profile to another value than 180.
    heartbeats = getattr(prefect.settings, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
    set_by_user = any(os.environ.get(name) for name in HEARTBEAT_VARIABLES)
    if heartbeats is not None and not set_by_user and heartbeats.value() == PREFECT_DEFAULT_HEARTBEAT_S:
        updates[heartbeats] = None
    with temporary_settings(updates=updates):
        yield

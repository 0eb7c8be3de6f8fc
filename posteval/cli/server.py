"""`posteval server start|stop|status`: a local Prefect server that posteval starts once and every later
evaluation on this machine reuses (no temporary server per run; every flow run stays in its UI)."""

from __future__ import annotations

import typer

from posteval.cli.common import guard
from posteval.views.render import console


def server_start() -> None:
    """Start the local Prefect server (UI included) for later evaluations; say where it is."""
    from posteval.cli.prefect_server import start_local_server

    server, started = guard(start_local_server)
    verb = "started" if started else "already running"
    console.print(
        f"Prefect server {verb} at {server.url} (UI {server.url.removesuffix('/api')}, pid {server.pid})"
    )


def server_stop() -> None:
    """Stop the local Prefect server (evaluations then start a temporary one each)."""
    from posteval.cli.prefect_server import stop_local_server

    stopped = guard(stop_local_server)
    console.print(
        f"Prefect server stopped (pid {stopped.pid})" if stopped else "no Prefect server was running"
    )


def server_status() -> None:
    """Say whether the local Prefect server runs, and where; exit 1 when it does not."""
    from posteval.cli.prefect_server import local_server

    server = local_server()
    if server is None or not server.healthy():
        console.print("no Prefect server running" if server is None else f"pid {server.pid} does not answer")
        raise typer.Exit(1)
    console.print(f"Prefect server running at {server.url} (pid {server.pid})")

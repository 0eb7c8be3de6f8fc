"""The two deployments, built in code for `posteval serve`: the event-triggered post-training one and the
nightly one. prefect.yaml declares the same two for `prefect deploy`; a test keeps them in step.

Whatever names a flow lives here, with the flows, so the core never imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from prefect import serve as prefect_serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron

from posteval.automation import EVENT, RESOURCE_PREFIX, TRIGGER_PARAMETERS, prefect_api_url
from posteval.db.migrate import upgrade
from posteval.flows.nightly import nightly
from posteval.flows.training_completed import on_training_completed
from posteval.inputs.suite import load_suite
from posteval.pipeline import check_task_runner

EVENT_DEPLOYMENT = "on-training-completed"
NIGHTLY_DEPLOYMENT = "nightly"


def deployments(
    suites: Sequence[str] = (),
    *,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    task_runner: str = "default",
    dask_address: str | None = None,
) -> list[RunnerDeployment]:
    """The event-triggered post-training deployment and, given suites, the nightly cron deployment.

    ``task_runner`` and ``dask_address`` become both deployments' default parameters. The database URL
    never does: parameters are stored and shown by the Prefect server, and a URL may hold a password, so
    flow runs read POSTEVAL_DATABASE_URL from the worker's environment.
    """
    trigger = DeploymentEventTrigger(
        name="posteval: evaluate a trained checkpoint",
        expect={EVENT},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        parameters=dict(TRIGGER_PARAMETERS),
    )
    given = {"task_runner": task_runner, "dask_address": dask_address}
    defaults = {name: value for name, value in given.items() if value not in (None, "default")}
    # to_deployment returns the deployment itself when called outside an event loop, as here.
    built = [on_training_completed.to_deployment(EVENT_DEPLOYMENT, triggers=[trigger], parameters=defaults)]
    if suites:
        parameters = {"suites": [str(Path(s).resolve()) for s in suites], **defaults}
        schedule = Cron(cron, timezone=timezone)
        built.append(nightly.to_deployment(NIGHTLY_DEPLOYMENT, schedule=schedule, parameters=parameters))
    return cast("list[RunnerDeployment]", built)


def prepare_serving(
    suites: Sequence[str] = (),
    *,
    database_url: str | None = None,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> None:
    """What serving needs, checked before it starts: a Prefect server, valid suites and task runner, the
    database schema at head."""
    prefect_api_url()
    check_task_runner(task_runner, dask_address)
    for suite in suites:
        load_suite(suite)
    upgrade(database_url)


def serve(
    suites: Sequence[str] = (),
    *,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    limit: int | None = 1,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> None:
    """Serve the deployments from this process until it is stopped (call :func:`prepare_serving` first).

    ``limit`` flow runs at a time (default one: a single machine usually has one accelerator).
    """
    built = deployments(
        suites,
        cron=cron,
        timezone=timezone,
        task_runner=task_runner,
        dask_address=dask_address,
    )
    prefect_serve(*built, limit=limit, print_starting_message=False)

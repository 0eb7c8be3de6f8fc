"""`posteval trigger` (emit the training-completed event) and `posteval serve` (the deployments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posteval import automation
from posteval.cli.common import DaskAddressOpt, TaskRunnerOpt, VerboseOpt, guard, quiet
from posteval.views.render import console


def trigger(
    checkpoint: Annotated[
        str, typer.Argument(help="The checkpoint folder (it may still be being written: the run waits).")
    ],
    suite: Annotated[Path, typer.Option("--suite", "-s", help="The suite YAML file.")],
    model_name: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the folder's).")
    ] = None,
    step: Annotated[int | None, typer.Option(help="Training step (default: from checkpoint-<step>).")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="The base model of an adapter checkpoint.")
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="The Prefect API (default: PREFECT_API_URL).", envvar="PREFECT_API_URL")
    ] = None,
) -> None:
    """Emit posteval.training.completed for CHECKPOINT, as the TrainerCallback does after training."""
    quiet(False)
    event = automation.training_completed(
        checkpoint, suite, model_name=model_name, step=step, base_model=base
    )
    event_id = guard(lambda: automation.emit_training_completed(event, api_url=api_url))
    console.print(f"emitted {automation.EVENT} for {event.checkpoint} (event {event_id})", highlight=False)


def serve(
    suite: Annotated[
        list[Path] | None,
        typer.Option("--suite", "-s", help="A suite for the nightly run (repeat for several)."),
    ] = None,
    cron: Annotated[str, typer.Option(help="When the nightly run starts (cron syntax).")] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(help="The cron schedule's time zone (IANA name).")] = "UTC",
    limit: Annotated[int, typer.Option(help="Flow runs at a time on this machine.")] = 1,
    task_runner: TaskRunnerOpt = "default",
    dask_address: DaskAddressOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the post-training (event) and nightly (cron) deployments from this process until stopped.

    Without --suite only the event deployment is served: the nightly run needs the suites to run.
    """
    quiet(verbose)
    from posteval.flows import deployments

    suites = [str(path) for path in suite or []]
    guard(lambda: deployments.prepare_serving(suites, task_runner=task_runner, dask_address=dask_address))
    nightly = f" and {deployments.NIGHTLY_DEPLOYMENT} ({cron}, {timezone})" if suites else ""
    console.print(f"serving {deployments.EVENT_DEPLOYMENT}{nightly}; stop with Ctrl+C", highlight=False)
    guard(
        lambda: deployments.serve(
            suites,
            cron=cron,
            timezone=timezone,
            limit=limit,
            task_runner=task_runner,
            dask_address=dask_address,
        )
    )

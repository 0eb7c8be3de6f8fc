"""`posteval trigger` (emit the training-completed event), `posteval serve` (the deployments) and
`posteval notify` (the automation that tells the team about failed flow runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from posteval import automation
from posteval.cli.common import DaskAddressOpt, TaskRunnerOpt, VerboseOpt, fail, guard, quiet
from posteval.errors import InputError
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
    check: Annotated[
        bool,
        typer.Option(
            help="Check the suite and the checkpoint's parent folder here before emitting. --no-check when "
            "the paths are the workers' and this machine does not see them (the flow run still fails, and "
            "is recorded as failed, if they are wrong).",
        ),
    ] = True,
) -> None:
    """Emit posteval.training.completed for CHECKPOINT, as the TrainerCallback does after training.

    The suite must load and validate and the checkpoint's parent folder must exist (exit 2 otherwise), so
    a typo never costs a flow run.
    """
    quiet(False)
    event = automation.training_completed(
        checkpoint, suite, model_name=model_name, step=step, base_model=base
    )
    url = guard(lambda: automation.prefect_api_url(api_url))
    if check:
        guard(lambda: automation.check_trigger(event))
    event_id = guard(lambda: automation.emit_training_completed(event, api_url=url))
    console.print(f"emitted {automation.EVENT} for {event.checkpoint} (event {event_id})", highlight=False)


NotifyWebhookOpt = Annotated[
    str | None,
    typer.Option(
        help="Notify this webhook (POST, JSON subject/body) when a posteval flow run fails, a failed gate "
        "included: a Prefect automation with a Custom Webhook block.",
        envvar="POSTEVAL_NOTIFY_WEBHOOK",
    ),
]
NotifyBlockOpt = Annotated[
    str | None,
    typer.Option(
        help="Notify through this saved Prefect notification block instead (TYPE/NAME, e.g. "
        "slack-webhook/team-alerts; Slack, email, Teams...).",
        envvar="POSTEVAL_NOTIFY_BLOCK",
    ),
]


def flow_run_logging() -> None:
    """Flow runs started from this process log posteval's lines at INFO and Prefect's own at WARNING
    (unless the environment already says otherwise); set before Prefect is imported."""
    for name, value in automation.FLOW_RUN_LOGGING.items():
        os.environ.setdefault(name, value)


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
    notify_webhook: NotifyWebhookOpt = None,
    notify_block: NotifyBlockOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the post-training (event) and nightly (cron) deployments from this process until stopped.

    Without --suite only the event deployment is served: the nightly run needs the suites to run.
    """
    if not verbose:
        flow_run_logging()
    quiet(verbose)
    from posteval.flows import deployments, notifications

    suites = [str(path) for path in suite or []]
    guard(lambda: deployments.prepare_serving(suites, task_runner=task_runner, dask_address=dask_address))
    if guard(lambda: notifications.setup_notifications(notify_webhook, notify_block)) is not None:
        console.print(f"failed flow runs notify: {notifications.AUTOMATION_NAME}", highlight=False)
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


def notify(
    webhook: Annotated[
        str | None,
        typer.Option("--webhook", help="The webhook URL to POST to.", envvar="POSTEVAL_NOTIFY_WEBHOOK"),
    ] = None,
    block: Annotated[
        str | None,
        typer.Option(
            "--block", help="A saved notification block, TYPE/NAME.", envvar="POSTEVAL_NOTIFY_BLOCK"
        ),
    ] = None,
) -> None:
    """Create the Prefect automation that notifies the team of failed posteval flow runs (for deployments
    made with `prefect deploy`; `posteval serve --notify-webhook` does the same when it starts)."""
    quiet(False)
    from posteval.flows import notifications

    guard(automation.prefect_api_url)
    if not webhook and not block:
        fail(InputError("posteval notify: give --webhook URL or --block TYPE/NAME"))
    guard(lambda: notifications.setup_notifications(webhook, block))
    console.print(f"created the automation {notifications.AUTOMATION_NAME!r}", highlight=False)

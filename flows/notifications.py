"""Telling a team that an evaluation failed, the way Prefect users are told: an automation on the Failed
state of posteval's flow runs (a failed regression gate fails the flow run) that sends a notification
block's message (a webhook, Slack, email: any of Prefect's notification blocks).

`posteval serve --notify-webhook URL` and `posteval notify` create both through the Prefect API; the
notification itself is sent by the Prefect server, so it works for served and worker flow runs alike.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import timedelta
from typing import cast
from uuid import UUID

from prefect.automations import Automation, EventTrigger, Posture, SendNotification
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from posteval.errors import InputError

FAILED_EVENT = "prefect.flow-run.Failed"
# The flows a deployment starts; their post-training subflow fails with them, so one message per failure.
WATCHED_FLOWS = ("posteval-training-completed", "posteval-nightly")
AUTOMATION_NAME = "posteval: notify on a failed evaluation"
WEBHOOK_BLOCK = "posteval-failures"
SUBJECT = "posteval: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}"
BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} is {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n"
    "checkpoint: {{ flow_run.parameters.checkpoint }}\n"
    "suite: {{ flow_run.parameters.suite }}"
)


def save_webhook_block(url: str, *, name: str = WEBHOOK_BLOCK) -> UUID:
    """A Custom Webhook notification block that POSTs ``{"subject", "body", "name"}`` as JSON to ``url``;
    saved (or replaced) under ``name``; returns its block document id."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"webhook URL {url!r}: expected an http:// or https:// URL")
    block = CustomWebhookNotificationBlock(
        name=name, url=url, json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"}
    )
    return cast(UUID, block.save(name, overwrite=True))


def saved_block_id(slug: str) -> UUID:
    """The document id of a saved notification block named ``TYPE/NAME`` (e.g. ``slack-webhook/team``)."""
    if "/" not in slug:
        raise InputError(
            f"notification block {slug!r}: expected BLOCK-TYPE/NAME, e.g. slack-webhook/team-alerts"
        )
    try:
        block = cast(Block, Block.load(slug))  # the sync call (async_dispatch): a Block, not a coroutine
    except ValueError as exc:
        raise InputError(f"notification block {slug!r}: no such block on the Prefect server ({exc})") from exc
    block_id = block._block_document_id
    if block_id is None or not hasattr(block, "notify"):
        raise InputError(f"block {slug!r}: not a notification block")
    return block_id


def notify_on_failure(block_id: UUID, *, name: str = AUTOMATION_NAME) -> Automation:
    """Create (or replace) the automation: a flow run of a posteval deployment that enters Failed sends a
    notification through the block ``block_id``, naming the flow run, its state and its checkpoint."""
    with suppress(ValueError):  # ValueError: none yet
        cast(Automation, Automation.read(name=name)).delete()
    trigger = EventTrigger(
        expect={FAILED_EVENT},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(WATCHED_FLOWS)},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )
    action = SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)
    automation = Automation(
        name=name,
        description="Sends posteval's failed evaluations (a failed gate included) to the team.",
        trigger=trigger,
        actions=[action],
    )
    return cast(Automation, automation.create())


def setup_notifications(webhook: str | None = None, block: str | None = None) -> Automation | None:
    """The automation for ``webhook`` (a URL, saved as a Custom Webhook block) or ``block`` (a saved
    notification block's TYPE/NAME); None when neither is given."""
    if webhook and block:
        raise InputError("give a webhook URL or a notification block, not both")
    if webhook:
        return notify_on_failure(save_webhook_block(webhook))
    if block:
        return notify_on_failure(saved_block_id(block))
    return None

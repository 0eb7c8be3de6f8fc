"""Evaluation without a person: the training-completed event and waiting for a checkpoint folder to be
complete. The deployments that answer the event live with the flows (posteval.flows.deployments).

Prefect is imported only inside the function that sends the event, so the core still imports without it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from posteval.errors import CheckpointError, InputError, PostevalError
from posteval.inputs.checkpoint import (
    HUB_PREFIX,
    INDEX_FILES,
    OPENAI_PREFIX,
    content_files,
    default_model_name,
)
from posteval.inputs.hub import split_revision
from posteval.inputs.suite import load_suite
from posteval.settings import get_settings

log = logging.getLogger(__name__)

EVENT = "posteval.training.completed"
RESOURCE_PREFIX = "posteval.inputs.checkpoint."
PAYLOAD_FIELDS = {
    "checkpoint": "the checkpoint folder's path",
    "suite": "the suite YAML file's path",
    "model_name": "the model's name",
    "step": "the training step",
    "base_model": "the base model's path",
}
# Each payload field becomes the flow parameter of the same name; a missing one renders as None
# (not as a template error that would drop the event), so the flow run can fail naming it.
TRIGGER_PARAMETERS = {name: f"{{{{ event.payload.{name} | default(none) }}}}" for name in PAYLOAD_FIELDS}
WAIT_ENV = "POSTEVAL_CHECKPOINT_WAIT_S"
IDLE_ENV = "POSTEVAL_CHECKPOINT_IDLE_S"
# What a served or worker flow run logs: posteval's lines (Prefect's flow run logger) at INFO, Prefect's own
# loggers at WARNING. `posteval serve` sets these unless set; prefect.yaml's job variables set the same.
FLOW_RUN_LOGGING = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",
}


# --- the event ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingCompleted:
    """The payload of a ``posteval.training.completed`` event: which checkpoint, on which suite."""

    checkpoint: str
    suite: str
    model_name: str
    step: int | None = None
    base_model: str | None = None

    def resource(self) -> dict[str, str]:
        """The Prefect resource the event is about: the checkpoint folder."""
        return {
            "prefect.resource.id": RESOURCE_PREFIX + self.checkpoint,
            "prefect.resource.name": self.model_name,
        }


def _step_from(folder: Path) -> int | None:
    match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
    return int(match.group(1)) if match else None


def training_completed(
    checkpoint: str | Path,
    suite: str | Path,
    *,
    model_name: str | None = None,
    step: int | None = None,
    base_model: str | Path | None = None,
) -> TrainingCompleted:
    """The event for ``checkpoint``, with absolute paths (a worker elsewhere resolves them on shared storage).

    The folder need not be complete yet: the flow waits for it (see :func:`wait_for_checkpoint`).
    """
    spec = str(checkpoint)
    if spec.startswith(OPENAI_PREFIX):
        name = model_name or spec.removeprefix(OPENAI_PREFIX).rpartition("@")[0]
        return TrainingCompleted(spec, _absolute(suite), name, step, None)
    if spec.startswith(HUB_PREFIX):  # a Hub repository (hf://ORG/NAME[@REVISION]): no folder to resolve
        repo_id, _ = split_revision(spec.removeprefix(HUB_PREFIX))
        name = model_name or repo_id.split("/")[-1]  # as resolve_checkpoint names a Hub checkpoint
        return TrainingCompleted(
            spec, _absolute(suite), name, step, _absolute(base_model) if base_model else None
        )
    folder = Path(checkpoint).expanduser().resolve()
    return TrainingCompleted(
        checkpoint=str(folder),
        suite=_absolute(suite),
        model_name=model_name or default_model_name(folder),
        step=step if step is not None else _step_from(folder),
        base_model=_absolute(base_model) if base_model else None,
    )


def _absolute(path: str | Path) -> str:
    """A local path made absolute (a worker elsewhere resolves it on shared storage); a Hub spec as given."""
    return str(path) if str(path).startswith(HUB_PREFIX) else str(Path(path).expanduser().resolve())


def check_trigger(event: TrainingCompleted) -> None:
    """What can be checked before the event is sent: the suite loads and validates, and the checkpoint's
    parent folder exists (the checkpoint itself may still be being written). InputError otherwise."""
    load_suite(event.suite)
    if event.checkpoint.startswith((OPENAI_PREFIX, HUB_PREFIX)):  # no folder here: the run resolves them
        return
    parent = Path(event.checkpoint).parent
    if not parent.is_dir():
        raise CheckpointError(
            f"checkpoint {event.checkpoint}: its parent folder {parent} does not exist "
            "(expected the folder the training job writes checkpoints into)"
        )


def prefect_api_url(api_url: str | None = None) -> str:
    """``api_url``, else PREFECT_API_URL; InputError when neither names a server."""
    if api_url:
        return api_url
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")
    if not url:
        raise InputError(
            "PREFECT_API_URL is not set: point it at the Prefect server that serves posteval's deployments, "
            "e.g. http://127.0.0.1:4200/api"
        )
    return str(url)


def emit_training_completed(event: TrainingCompleted, *, api_url: str | None = None) -> str:
    """Send the event to the Prefect server and wait until it is delivered; returns the event id."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient
    from prefect.utilities.asyncutils import run_coro_as_sync

    url = prefect_api_url(api_url)
    sent = Event(event=EVENT, resource=event.resource(), payload=asdict(event))

    async def send() -> None:
        async with PrefectEventsClient(api_url=url, reconnection_attempts=2) as client:
            await client.emit(sent)

    try:
        run_coro_as_sync(send())
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise PostevalError(f"cannot send {EVENT} to the Prefect server at {url}: {exc}") from exc
    except Exception as exc:  # the websockets library's errors have no common base with OSError
        raise PostevalError(f"cannot send {EVENT} to the Prefect server at {url}: {exc!r}") from exc
    return str(sent.id)


def require_fields(checkpoint: str | None, suite: str | None) -> tuple[str, str]:
    """The payload's checkpoint and suite; InputError naming the first one that is missing or empty."""
    for name, value in (("checkpoint", checkpoint), ("suite", suite)):
        if not value:
            raise InputError(f"event {EVENT}: the payload has no {name!r} ({PAYLOAD_FIELDS[name]})")
    return str(checkpoint), str(suite)


# --- a checkpoint folder that is still being written -------------------------------------------------


def checkpoint_wait_s() -> float:
    """How long a triggered run waits for its checkpoint folder: POSTEVAL_CHECKPOINT_WAIT_S, default 600."""
    return get_settings().checkpoint_wait_s


def checkpoint_idle_s() -> float:
    """How long an incomplete folder may sit unchanged before the wait ends: POSTEVAL_CHECKPOINT_IDLE_S."""
    return get_settings().checkpoint_idle_s


def incomplete_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint yet, or None: config, weights and every indexed shard."""
    if not folder.is_dir():
        return "the folder does not exist yet"
    config = folder / ("adapter_config.json" if (folder / "adapter_config.json").is_file() else "config.json")
    if not config.is_file():
        return "config.json is missing"
    try:
        json.loads(config.read_text())
        content_files(folder)
        for index in (folder / name for name in INDEX_FILES):
            if index.is_file():
                shards = set(json.loads(index.read_text())["weight_map"].values())
                missing = sorted(s for s in shards if not (folder / s).is_file())
                if missing:
                    return f"{index.name} names shards not written yet: {', '.join(missing[:3])}"
    except CheckpointError as exc:
        return str(exc).removeprefix(f"checkpoint {folder}: ")
    except (OSError, ValueError, KeyError) as exc:
        return f"a file is not readable yet ({exc})"
    return None


def _sizes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def _activity(folder: Path) -> tuple[object, ...]:
    """What changes while a checkpoint is being written: the parent's and the folder's entries, its files."""
    parent = folder.parent
    return (
        parent.stat().st_mtime_ns if parent.is_dir() else None,
        folder.stat().st_mtime_ns if folder.is_dir() else None,
        _sizes(folder) if folder.is_dir() else None,
    )


def wait_for_checkpoint(
    checkpoint: str,
    *,
    timeout_s: float | None = None,
    idle_s: float | None = None,
    poll_s: float = 1.0,
    settle_s: float = 2.0,
) -> None:
    """Return once the folder is complete and no file in it has changed for ``settle_s`` seconds.

    Training jobs often signal before the last file is flushed. This raises CheckpointError saying what
    is still missing after ``timeout_s`` (default POSTEVAL_CHECKPOINT_WAIT_S), or sooner when the folder
    cannot be completing: neither it nor its parent folder changed for ``idle_s`` seconds (default
    POSTEVAL_CHECKPOINT_IDLE_S), as with a mistyped path.
    """
    if checkpoint.startswith((OPENAI_PREFIX, HUB_PREFIX)):  # served, or downloaded by the run itself
        return
    folder = Path(checkpoint).expanduser()
    timeout = checkpoint_wait_s() if timeout_s is None else timeout_s
    idle = checkpoint_idle_s() if idle_s is None else idle_s
    deadline = time.monotonic() + timeout
    stable_since, last = time.monotonic(), None
    active_since, activity = stable_since, _activity(folder)
    while True:
        reason = incomplete_reason(folder)
        now = time.monotonic()
        if reason is None:
            sizes = _sizes(folder)
            if sizes != last:
                stable_since, last = now, sizes
            elif now - stable_since >= settle_s:
                return
            reason = "files are still being written"
        else:
            last = None
            if (current := _activity(folder)) != activity:
                active_since, activity = now, current
            elif now - active_since >= idle:
                raise CheckpointError(
                    f"checkpoint {folder} is not complete and neither it nor its parent folder changed for "
                    f"{idle:g}s: {reason} (set {IDLE_ENV} to wait longer for a slow writer)"
                )
        if now >= deadline:
            raise CheckpointError(
                f"checkpoint {folder} is not complete after waiting {timeout:g}s: {reason} "
                f"(set {WAIT_ENV} to wait longer)"
            )
        log.info("waiting for checkpoint %s: %s", folder, reason)
        time.sleep(min(poll_s, max(deadline - now, 0.05)))

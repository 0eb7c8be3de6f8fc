"""`posteval demo`: the whole story on a laptop, offline, on the default SQLite database."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from posteval.settings import get_settings
from posteval.toymodel import EXAMPLES_DIR, build_base_model, finetune

DEMO_SUITE = EXAMPLES_DIR / "suite.yaml"


def _built(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def run_demo(
    workdir: Path | None,
    *,
    console: Console,
    evaluate: Callable[..., str],
    show: Callable[[str], None],
) -> str:
    """Build a base model, fine-tune it, evaluate the checkpoint through the flow; returns the run id.

    Models already built in ``workdir`` are reused, so a second demo only re-evaluates (from the cache).
    """
    workdir = (workdir or get_settings().home / "demo").expanduser()
    base, tuned = workdir / "base", workdir / "contracts-ft"
    console.rule("[bold]posteval demo")
    console.print(f"models in {workdir}, results in {get_settings().database_url}", highlight=False)
    started = time.perf_counter()
    if not _built(base):
        with console.status("building a tiny GPT-2 base model and its tokenizer"):
            build_base_model(base)
    console.print(f"[green]✓[/] base model      {base}", highlight=False)
    if not _built(tuned):
        with console.status("fine-tuning on the bundled contract clauses (transformers.Trainer)"):
            finetune(base, tuned)
    console.print(f"[green]✓[/] fine-tuned      {tuned}", highlight=False)
    run_id = evaluate(str(tuned), str(DEMO_SUITE), trigger="demo", model_name="contracts-demo")
    show(run_id)
    console.print(
        f"done in {time.perf_counter() - started:.0f}s; `posteval runs list` shows every run", highlight=False
    )
    return run_id

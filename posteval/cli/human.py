"""`posteval human export | import`: blinded items for raters, and their labels back as human metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posteval.cli.common import guard, quiet, with_schema
from posteval.db import queries
from posteval.numbers import ci, num
from posteval.views.render import console

human_app = typer.Typer(help="Human evaluation: blinded exports and label imports.", no_args_is_help=True)


@human_app.command("export")
def export_command(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for items.csv, items.jsonl and key.json.")],
    pairs: Annotated[
        str | None,
        typer.Option("--pairs", help="A base run: export pairs (this run's output and its) to prefer."),
    ] = None,
    sample: Annotated[int | None, typer.Option("--sample", help="Export N examples drawn at random.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample, the order and the sides.")] = 0,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset (datasets with different rubrics).")
    ] = None,
) -> None:
    """Write a run's outputs as blinded, shuffled items to score (or pairs to prefer); the key apart."""
    quiet(False)
    from posteval.human.blind import export

    def run_export() -> object:
        run_id = queries.resolve_run_id(run)
        base_id = queries.resolve_run_id(pairs) if pairs else None
        return export(run_id, out, base_run_id=base_id, sample=sample, seed=seed, dataset=dataset)

    written = guard(lambda: with_schema(run_export))
    console.print(
        f"{written.n} items: {written.items_csv} and {written.items_jsonl} for the raters; "
        f"keep {written.key} from them (import needs it)",
        highlight=False,
    )


@human_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="The filled-in items.csv or items.jsonl.")],
    rater: Annotated[str, typer.Option("--rater", help="Who labelled the file.")],
    key: Annotated[
        Path | None, typer.Option("--key", help="The export's key.json (default: beside FILE).")
    ] = None,
) -> None:
    """Check a rater's labels against the export, un-blind them and store them; all or nothing."""
    quiet(False)
    from posteval.human.store import import_labels

    imported = guard(lambda: with_schema(lambda: import_labels(file, rater=rater, key_path=key)))
    console.print(f"run {imported.run[:12]}: {imported.labels} labels from {imported.rater}", highlight=False)
    for dataset, result in imported.metrics.items():
        alpha = result.details.get("krippendorff_alpha")
        agreement = f", alpha {num(alpha)}" if alpha is not None else ""
        console.print(
            f"  {dataset}/{result.name} = {num(result.value)} {ci(result.ci_low, result.ci_high)} "
            f"n={result.n}, {len(result.details['raters'])} rater(s){agreement}",
            highlight=False,
        )

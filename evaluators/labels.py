"""Label extraction: generated text mapped onto a dataset's label set, or onto ``<invalid>``.

Averaged metrics work over the dataset's declared label set (scikit-learn's ``labels=``): an output outside
it is ``<invalid>``, wrong for its true class (a false negative) and a false positive of no label-set class,
so one unparseable answer costs what one wrong answer costs, and ``invalid_rate`` reports how many there
were. The confusion matrix shows the labels that occur, with ``<invalid>`` as a column of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs
from posteval.evaluators.common import require_references

INVALID = "<invalid>"

Extraction = Literal["first_line", "strip", "casefold", "regex"]


def extract_label(
    text: str,
    labels: Sequence[str],
    *,
    rule: Extraction = "first_line",
    pattern: str | None = None,
) -> str:
    """Map generated ``text`` to one of ``labels``, or to ``<invalid>``.

    ``strip`` compares the stripped text; ``first_line`` the stripped first non-empty line; ``casefold``
    the first line compared without case; ``regex`` the first capture group (or whole match) of ``pattern``.
    """
    if rule == "regex":
        if pattern is None:
            raise MetricError("label extraction rule 'regex' needs a 'pattern'")
        match = re.search(pattern, text)
        candidate = "" if match is None else (match.group(1) if match.groups() else match.group(0))
        candidate = (candidate or "").strip()
    elif rule == "strip":
        candidate = text.strip()
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        candidate = lines[0] if lines else ""
    if rule == "casefold":
        folded = {label.casefold(): label for label in labels}
        return folded.get(candidate.casefold(), INVALID)
    return candidate if candidate in labels else INVALID


def check_extraction(options: Mapping[str, Any]) -> None:
    """Refuse ``extract: regex`` without a ``pattern``, and a ``pattern`` another rule would ignore."""
    extract, pattern = options.get("extract"), options.get("pattern")
    if extract == "regex" and pattern is None:
        raise ValueError("option 'extract' is 'regex' but option 'pattern' is not set")
    if extract != "regex" and pattern is not None:
        raise ValueError(f"option 'pattern' is only used with extract: regex (extract is {extract!r})")


@dataclass(frozen=True)
class Labelled:
    """Reference and extracted labels of a dataset, in example order; the declared label set (what the
    averages run over) and the order of the labels that occur, ``<invalid>`` last (the confusion matrix's)."""

    references: list[str]
    predicted: list[str]
    order: list[str]
    labels: list[str]

    @property
    def invalid(self) -> int:
        """How many predictions fell outside the label set."""
        return self.predicted.count(INVALID)


def labelled(inputs: EvalInputs, metric: str, extract: Extraction, pattern: str | None) -> Labelled:
    """Extract every prediction's label; a reference outside the label set is a MetricError naming it."""
    references = [str(r) for r in require_references(inputs, metric)]
    if not inputs.labels:
        raise MetricError(f"metric {metric!r} needs the dataset's 'labels' (the label set)")
    declared = list(dict.fromkeys(str(label) for label in inputs.labels))
    known = set(declared)
    for i, reference in enumerate(references):
        if reference not in known:
            raise MetricError(
                f"metric {metric!r}: the reference of example {i}, {reference!r}, is not in the label set "
                f"{declared}"
            )
    predicted = [extract_label(p, declared, rule=extract, pattern=pattern) for p in inputs.predictions]
    occurring = set(references) | set(predicted)
    order = [label for label in [*declared, INVALID] if label in occurring]
    return Labelled(references=references, predicted=predicted, order=order, labels=declared)

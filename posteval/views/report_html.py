"""HTML building blocks of the run report: every value is escaped unless it is markup built here."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from string import Template

CLIP = 500  # characters of an input, output or reference shown
GOOD, BAD = {"healthy", "none", "passed", "succeeded"}, {"overfitting", "forgetting", "failed"}


class Html(str):
    """Markup built here from escaped parts: inserted as is, where any other value is escaped."""


def esc(value: object) -> Html:
    """``value`` as HTML text: escaped unless it is already :class:`Html`; None shows as a dash."""
    return value if isinstance(value, Html) else Html(html.escape("-" if value is None else str(value)))


def join(parts: Iterable[object]) -> Html:
    """Parts, each escaped unless it is markup, concatenated."""
    return Html("".join(esc(part) for part in parts))


def tag(name: str, content: object, cls: str = "") -> Html:
    """``<name class=cls>content</name>`` with ``content`` escaped unless it is markup."""
    attr = f' class="{cls}"' if cls else ""
    return Html(f"<{name}{attr}>{esc(content)}</{name}>")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    cls: str = "",
    table_id: str = "",
    bad: Sequence[bool] = (),
) -> Html:
    """A table of escaped cells (no header row without ``headers``); rows flagged in ``bad`` highlighted."""
    head = f"<thead><tr>{join(tag('th', h) for h in headers)}</tr></thead>" if headers else ""
    body = "".join(
        f"<tr{' class=bad' if i < len(bad) and bad[i] else ''}>{join(tag('td', c) for c in row)}</tr>"
        for i, row in enumerate(rows)
    )
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (f' class="{esc(cls)}"' if cls else "")
    return Html(f"<table{attrs}>{head}<tbody>{body}</tbody></table>")


def matrix(labels: Sequence[object], counts: Sequence[Sequence[int]]) -> Html:
    """A confusion matrix: rows are true labels, columns predicted ones, the diagonal marked."""
    head = "".join(f"<th>{esc(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><th>{esc(label)}</th>"
        + "".join(f"<td{' class=hit' if i == j else ''}>{int(n)}</td>" for j, n in enumerate(row))
        + "</tr>"
        for i, (label, row) in enumerate(zip(labels, counts, strict=False))
    )
    return Html(
        f'<table class="matrix"><thead><tr><th>true \\ predicted</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def when(value: datetime | None) -> str:
    """A stored time to the second, or a dash."""
    return "-" if value is None else value.isoformat(sep=" ", timespec="seconds")


def text(value: object) -> Html:
    """Data or model text: clipped to CLIP characters, whitespace kept, the empty string shown as such."""
    if value is None:
        return esc(None)
    full = str(value)
    if not full:
        return Html('<span class="text"><i>(empty)</i></span>')
    return tag("span", full if len(full) <= CLIP else full[:CLIP] + "…", "text")


def badge(verdict: object) -> Html:
    """A verdict or status in green (good), red (bad) or amber (anything else)."""
    kind = "good" if verdict in GOOD else "bad" if verdict in BAD else "warn"
    return tag("span", verdict, f"badge {kind}")


def note(message: str) -> Html:
    """A muted paragraph, or nothing for an empty message."""
    return tag("p", message, "note") if message else Html("")


def png(data: bytes, alt: str) -> Html:
    """An inline PNG image (a data URI: the page stays one file)."""
    return Html(
        f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
    )


def page(title: str, sections: Sequence[tuple[str, str, Html]]) -> str:
    """The whole document: ``sections`` are (anchor, heading, body) under a table of contents."""
    template = Template(resources.files("posteval").joinpath("templates/report.html").read_text("utf-8"))
    return template.substitute(
        title=esc(title),
        nav="".join(f'<a href="#{key}">{esc(heading)}</a>' for key, heading, _ in sections),
        body="".join(f'<section id="{k}"><h2>{esc(h)}</h2>{body}</section>' for k, h, body in sections),
        generated=datetime.now(UTC).isoformat(sep=" ", timespec="seconds"),
    )

"""Scoring token sequences with a causal LM: the items the HF runner scores and one padded forward pass
per batch of them.

A request whose continuation is one token needs the model's next-token distribution after its context
and nothing else, so requests that share a context and each continue it by one token (the choices of a
multiple-choice prompt, usually) become one item: one forward pass over the context scores every
choice. Each choice's numbers are those of its own pass over the same ids (the logits at the context's
last position are the same row either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Scored = tuple[float, int, bool]  # summed log-prob, scored tokens, whether greedy decoding gives them


@dataclass(frozen=True)
class ScoreItem:
    """Token ids whose last ``n_scored`` tokens are scored given everything before them.

    ``alternatives`` (a shared-context item): the single next tokens scored after ``ids[:-1]``, one
    result each, in order; ``ids[-1]`` is the first of them. Empty for an ordinary item (one result).
    """

    ids: list[int]
    n_scored: int
    owner: int  # index of the request (or text) this item belongs to
    alternatives: tuple[int, ...] = ()
    owners: tuple[int, ...] = ()  # with alternatives: the request of each


def share_contexts(items: Sequence[ScoreItem]) -> list[ScoreItem]:
    """``items`` with every group of single-token items over the same context merged into one item.

    Order follows each group's first item; items scoring more (or fewer) than one token stay as they are.
    """
    groups: dict[tuple[int, ...], list[ScoreItem]] = {}
    out: list[ScoreItem | tuple[int, ...]] = []
    for item in items:
        if item.n_scored != 1:
            out.append(item)
            continue
        context = tuple(item.ids[:-1])
        if context not in groups:
            groups[context] = []
            out.append(context)
        groups[context].append(item)
    merged = []
    for entry in out:
        if isinstance(entry, ScoreItem):
            merged.append(entry)
            continue
        group = groups[entry]
        if len(group) == 1:
            merged.append(group[0])
        else:
            merged.append(
                ScoreItem(
                    ids=group[0].ids,
                    n_scored=1,
                    owner=group[0].owner,
                    alternatives=tuple(item.ids[-1] for item in group),
                    owners=tuple(item.owner for item in group),
                )
            )
    return merged


@torch.inference_mode()
def score_batch(
    model: Any, items: list[ScoreItem], pad_id: int, device: torch.device, *, greedy: bool = True
) -> list[list[Scored]]:
    """One forward pass over ``items`` padded on the right to the longest; per item, its results.

    Right padding: a causal model's logits at real positions never see the padding. ``greedy=False``
    skips the argmax over the vocabulary at every scored position (rolling perplexity needs none; every
    result then says not greedy).
    """
    width = max(len(item.ids) for item in items) - 1
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.ids) - 1
        input_ids[row, :n] = torch.tensor(item.ids[:-1])
        attention[row, :n] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    results: list[list[Scored]] = []
    for row, item in enumerate(items):
        if item.n_scored == 0:
            results.append([(0.0, 0, True)])
            continue
        n = len(item.ids) - 1
        # Normalise only the scored positions: a full (batch, width, vocab) float32 softmax would
        # need far more memory than the model itself for long windows and large vocabularies.
        scored = F.log_softmax(logits[row, n - item.n_scored : n].float(), dim=-1)
        if item.alternatives:
            last = scored[-1]
            best = int(last.argmax())
            results.append([(float(last[token]), 1, best == token) for token in item.alternatives])
            continue
        targets = torch.tensor(item.ids[-item.n_scored :], device=scored.device)
        picked = scored.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        is_greedy = greedy and bool((scored.argmax(-1) == targets).all())
        results.append([(float(picked.sum()), item.n_scored, is_greedy)])
    return results

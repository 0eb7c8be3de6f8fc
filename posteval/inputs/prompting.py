"""What a model is shown for one example: the filled prompt, few-shot worked examples, and chat messages.

Few-shot examples are drawn once per dataset (``fewshot: {n, from, seed}``) from a separate file or split,
never from the evaluated rows, so every checkpoint sees the same ones. Without a chat template they are
joined as text (lm-evaluation-harness's layout: each shot's prompt, the target delimiter and its answer,
shots separated by a blank line); with one they become alternating user and assistant turns
(its ``fewshot_as_multiturn``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from posteval.errors import DatasetError
from posteval.inputs.data import LoadedDataset, load_dataset
from posteval.inputs.suite import DatasetSpec

FEWSHOT_DELIMITER = "\n\n"
Message = dict[str, str]


@dataclass(frozen=True)
class Shots:
    """The drawn worked examples: (filled prompt, answer) pairs and the keys of the rows they came from."""

    pairs: tuple[tuple[str, str], ...] = ()
    keys: tuple[str, ...] = ()
    source_fingerprint: str | None = None

    def describe(self) -> dict[str, object] | None:
        """The draw as plain data for the output settings (so a different draw is a new config)."""
        if not self.pairs:
            return None
        return {"source": self.source_fingerprint, "keys": list(self.keys)}


def shot_spec(spec: DatasetSpec) -> DatasetSpec:
    """The spec of the set ``spec``'s few-shot examples are drawn from: its ``from`` file, or a split."""
    assert spec.fewshot is not None
    source = spec.fewshot.source
    update: dict[str, object] = {"name": f"{spec.name}.fewshot", "limit": None, "fewshot": None}
    if spec.fewshot.is_split():
        if spec.split is not None and source == spec.split:
            raise DatasetError(
                f"dataset {spec.name!r}: fewshot draws from split {source!r}, the evaluated split itself; "
                "name another split or a file"
            )
        update["split"] = source
    else:
        update |= {"path": Path(source), "split": None, "config": None, "revision": None}
    return spec.model_copy(update=update)


def draw_shots(spec: DatasetSpec) -> Shots:
    """The dataset's few-shot examples: ``n`` rows of its ``from`` source, sampled with ``seed``."""
    if spec.fewshot is None:
        return Shots()
    source = load_dataset(shot_spec(spec))
    n = spec.fewshot.n
    if n > len(source):
        raise DatasetError(
            f"dataset {spec.name!r}: fewshot asks for {n} examples "
            f"but {spec.fewshot.source} has {len(source)}"
        )
    picked = sorted(random.Random(spec.fewshot.seed).sample(range(len(source)), n))
    prompts, answers = source.prompts(), _answers(source)
    pairs = tuple((prompts[i], answers[i]) for i in picked)
    return Shots(
        pairs=pairs, keys=tuple(source.keys[i] for i in picked), source_fingerprint=source.fingerprint
    )


def _answers(loaded: LoadedDataset) -> list[str]:
    gold = loaded.gold_choices() if loaded.spec.scoring == "loglikelihood" else None
    if gold is not None:
        return gold
    return [str(reference) for reference in loaded.references or []]


def text_prompt(prompt: str, shots: Shots, delimiter: str) -> str:
    """``prompt`` after the worked examples as plain text (no chat template)."""
    worked = [f"{shot}{delimiter}{answer}" for shot, answer in shots.pairs]
    return FEWSHOT_DELIMITER.join([*worked, prompt])


def chat_messages(prompt: str, shots: Shots, system: str | None) -> list[Message]:
    """The conversation for ``prompt``: the system message, each worked example as a user turn and its
    answer as the assistant's, then ``prompt`` as the last user turn."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    for shot, answer in shots.pairs:
        messages += [{"role": "user", "content": shot}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": prompt})
    return messages

"""A dataset's ``judge:`` section in the suite: which judge, its settings, the rubric, the pairwise match."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from posteval.hashing import sha256_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rubric(_Strict):
    """Pointwise judging: each answer scored on every criterion, on the scale's points."""

    criteria: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    scale: Annotated[list[int], Field(min_length=2)] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    instructions: str = "Judge how well the answer responds to the prompt."
    reference: str | None = None  # a row field holding a reference answer shown to the judge

    @model_validator(mode="after")
    def _distinct(self) -> Rubric:
        if len(set(self.scale)) != len(self.scale) or sorted(self.scale) != self.scale:
            raise ValueError(f"'scale' must be increasing distinct integers, got {self.scale}")
        if len(set(self.criteria)) != len(self.criteria):
            raise ValueError("'criteria' repeats a criterion; each once")
        return self

    def digest(self) -> str:
        """The rubric's hash: part of every cached answer's key and of each score's provenance."""
        return sha256_json(self.model_dump(mode="json"))


class Pairwise(_Strict):
    """Pairwise judging: the evaluated answer against another answer to the same prompt.

    ``against`` is ``base`` (the base model's answers, generated once for all its fine-tunes) or a stored
    run's id or unique prefix (that run's stored answers to the same dataset).
    """

    against: Annotated[str, Field(min_length=1)] = "base"
    instructions: str = "Which answer responds better to the prompt?"

    @property
    def named_run(self) -> str | None:
        """The run id (or prefix) whose answers are compared with, or None for the base model's."""
        return None if self.against == "base" else self.against

    def digest(self) -> str:
        """The pairwise instructions' hash (the rubric hash of pairwise verdicts); what is compared with
        is part of each verdict's cache key and provenance instead."""
        return sha256_json(self.model_dump(mode="json", exclude={"against"}))


class JudgeSpec(_Strict):
    """A dataset's judge: ``model`` is ``openai:MODEL@URL``, ``anthropic:MODEL[@URL]`` or a local folder.

    ``api_key_env`` names the environment variable holding the key (default: settings'
    ``judge_api_key_env``, then ``ANTHROPIC_API_KEY`` for Anthropic); the key itself is never stored.
    """

    model: Annotated[str, Field(min_length=1)]
    api_key_env: str | None = None
    temperature: Annotated[float, Field(ge=0)] = 0.0
    max_tokens: Annotated[int, Field(gt=0)] = 512
    timeout: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0)] = 2
    concurrency: Annotated[int, Field(gt=0)] = 4
    rubric: Rubric | None = None
    pairwise: Pairwise | None = None

    @model_validator(mode="after")
    def _something_to_judge(self) -> JudgeSpec:
        if self.rubric is None and self.pairwise is None:
            raise ValueError("a judge needs a 'rubric' (pointwise), 'pairwise', or both")
        return self

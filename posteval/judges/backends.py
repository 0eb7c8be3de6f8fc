"""The judges: an OpenAI-compatible chat endpoint and Anthropic's Messages API through their official SDKs
(whose timeouts, retries with backoff and Retry-After handling are used as they are), and a local
transformers chat model that scores by the likelihood of each allowed verdict.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from posteval.errors import InputError, RunnerError
from posteval.judges.spec import JudgeSpec
from posteval.sdks import sdk
from posteval.settings import get_settings

Messages = list[dict[str, str]]
OPENAI_PREFIX = "openai:"
ANTHROPIC_PREFIX = "anthropic:"
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
ANTHROPIC_URL = "https://api.anthropic.com"


def api_key(env: str | None, what: str) -> str | None:
    """The key held by the environment variable ``env`` (never logged or stored), None without one."""
    if env is None:
        return None
    key = os.environ.get(env, "")
    if not key:
        raise InputError(f"{what}: environment variable {env} (the API key) is not set")
    return key


class Judge(ABC):
    """A judge model. ``identity`` names the model and every setting that changes its answers (never a
    key): it is part of each cached answer's key and of each score's provenance."""

    free_form: bool  # True: answers JSON to a prompt (API judges); False: ranks verdicts by likelihood
    concurrency: int

    @property
    @abstractmethod
    def identity(self) -> str:
        """The judge and its settings, e.g. ``openai:gpt-4o@https://...|temperature=0|max_tokens=512``."""

    def ask(self, messages: Messages) -> str:
        """The judge's answer text to a conversation (free-form judges)."""
        raise NotImplementedError(f"{self.identity} ranks verdicts; it does not answer free-form")

    def rank(self, messages: Messages, verdicts: list[str]) -> list[float]:
        """log P(verdict | conversation) for each verdict (likelihood judges)."""
        raise NotImplementedError(f"{self.identity} answers free-form; it does not rank verdicts")


class OpenAIChatJudge(Judge):
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama, TGI, llama.cpp)."""

    free_form = True

    def __init__(self, model: str, base_url: str, spec: JudgeSpec, key: str | None) -> None:
        openai = sdk("openai")
        self.model, self.base_url, self.spec = model, base_url.rstrip("/"), spec
        self.concurrency = spec.concurrency
        self._errors = (openai.APIError,)
        # A keyless local server still needs a non-empty key for the SDK; it is sent and means nothing.
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=key or "unused",
            timeout=spec.timeout,
            max_retries=spec.max_retries,
        )

    @property
    def identity(self) -> str:
        return (
            f"{OPENAI_PREFIX}{self.model}@{self.base_url}|temperature={self.spec.temperature}"
            f"|max_tokens={self.spec.max_tokens}"
        )

    def ask(self, messages: Messages) -> str:
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=self.spec.temperature,
                max_tokens=self.spec.max_tokens,
            )
        except self._errors as exc:
            raise RunnerError(f"judge {self.model} at {self.base_url}: {type(exc).__name__}: {exc}") from None
        content = response.choices[0].message.content if response.choices else None
        if not isinstance(content, str):
            raise RunnerError(f"judge {self.model} at {self.base_url} answered without message content")
        return content


class AnthropicJudge(Judge):
    """Anthropic's Messages API (``anthropic:MODEL``, or ``anthropic:MODEL@URL`` for another host)."""

    free_form = True

    def __init__(self, model: str, base_url: str, spec: JudgeSpec, key: str | None) -> None:
        anthropic = sdk("anthropic")
        self.model, self.base_url, self.spec = model, base_url.rstrip("/"), spec
        self.concurrency = spec.concurrency
        self._errors = (anthropic.APIError,)
        self._client = anthropic.Anthropic(
            base_url=self.base_url, api_key=key, timeout=spec.timeout, max_retries=spec.max_retries
        )

    @property
    def identity(self) -> str:
        return (
            f"{ANTHROPIC_PREFIX}{self.model}@{self.base_url}|temperature={self.spec.temperature}"
            f"|max_tokens={self.spec.max_tokens}"
        )

    def ask(self, messages: Messages) -> str:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        try:
            response = self._client.messages.create(
                model=self.model,
                max_tokens=self.spec.max_tokens,
                messages=turns,
                # Recent SDKs no longer list sampling parameters; the Messages API still takes temperature.
                extra_body={"temperature": self.spec.temperature},
                **({"system": system} if system else {}),
            )
        except self._errors as exc:
            raise RunnerError(f"judge {self.model} at {self.base_url}: {type(exc).__name__}: {exc}") from None
        texts = [block.text for block in response.content if getattr(block, "type", "") == "text"]
        if not texts:
            raise RunnerError(f"judge {self.model} at {self.base_url} answered without a text block")
        return "".join(texts)


class LocalJudge(Judge):
    """A local transformers chat model (a folder): verdicts ranked by their log-likelihood after the
    conversation rendered through the model's chat template, so even a small model scores reproducibly."""

    free_form = False
    concurrency = 1

    def __init__(self, folder: str) -> None:
        from posteval.inputs.checkpoint import resolve_checkpoint

        self.info = resolve_checkpoint(folder)
        self._runner: Any = None

    @property
    def identity(self) -> str:
        return f"local:{self.info.path.name}@{self.info.fingerprint[:16]}"

    def _loaded(self) -> Any:
        if self._runner is None:
            from posteval.runners import get_runner

            settings = get_settings()
            self._runner = get_runner(self.info, settings.device, settings.dtype)
        return self._runner

    def rank(self, messages: Messages, verdicts: list[str]) -> list[float]:
        from posteval.runners.base import templated_prompts
        from posteval.runners.chat import render

        runner = self._loaded()
        tokenizer = runner.tokenizer
        if getattr(tokenizer, "chat_template", None):
            context = render(tokenizer, messages)
            with templated_prompts():
                scored = [
                    r for _, batch in runner.loglikelihood([(context, v) for v in verdicts]) for r in batch
                ]
        else:
            context = "\n\n".join(m["content"] for m in messages) + "\nVerdict:"
            scored = [
                r for _, batch in runner.loglikelihood([(context, " " + v) for v in verdicts]) for r in batch
            ]
        return [r.logprob for r in scored]


def make_judge(spec: JudgeSpec) -> Judge:
    """The judge ``spec.model`` names; its key comes from the variable the suite or the settings name."""
    name = spec.model
    env = spec.api_key_env or get_settings().judge_api_key_env
    if name.startswith(OPENAI_PREFIX):
        model, at, url = name.removeprefix(OPENAI_PREFIX).rpartition("@")
        if not at or not model or not url.startswith(("http://", "https://")):
            raise InputError(f"judge {name!r}: expected openai:MODEL@URL with an http(s) URL")
        return OpenAIChatJudge(model, url, spec, api_key(env, f"judge {model}"))
    if name.startswith(ANTHROPIC_PREFIX):
        rest = name.removeprefix(ANTHROPIC_PREFIX)
        model, at, url = rest.rpartition("@") if "@" in rest else (rest, "", ANTHROPIC_URL)
        if not model or not url.startswith(("http://", "https://")):
            raise InputError(f"judge {name!r}: expected anthropic:MODEL or anthropic:MODEL@URL")
        return AnthropicJudge(model, url, spec, api_key(env or ANTHROPIC_KEY_ENV, f"judge {model}"))
    if not Path(name).is_dir():
        raise InputError(f"judge {name!r}: not openai:MODEL@URL, anthropic:MODEL or a local model folder")
    return LocalJudge(name)

"""The OpenAI-compatible backend: a model served behind the legacy completions endpoint (vLLM, TGI,
llama.cpp), spoken to through the official openai SDK (an optional extra), whose timeouts and retries
with backoff and Retry-After handling are used as they are.

Scoring uses the trick lm-evaluation-harness uses for such servers: send context + continuation with
``echo=true`` and ``logprobs=1``, then read the prompt tokens' log-probabilities back and keep those of
the tokens the server's ``text_offset`` places inside the continuation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from posteval.errors import InputError, RunnerError
from posteval.runners.base import (
    Batch,
    BatchSize,
    BosMode,
    GenerationOptions,
    Loglikelihood,
    PrefixPolicy,
    truncate_at_stop,
)
from posteval.sdks import sdk

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx: what the openai SDK retries
# Scoring asks for one generated token, as lm-evaluation-harness does: several servers (vLLM among them)
# refuse max_tokens=0. The generated token lies after the prompt and is dropped by its text offset.
SCORE_MAX_TOKENS = 1


@dataclass(frozen=True)
class _Token:
    """One echoed prompt token: its text, where it starts in the prompt, its logprob and the top-1 token."""

    text: str
    offset: int
    logprob: float | None
    top: str | None


class OpenAIRunner:
    """A model behind an OpenAI-compatible ``/completions`` endpoint, prompts sent in batches as a list.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``; requests go to ``{base_url}/completions``.
        model: the served model's name, sent as ``model``.
        api_key_env: the environment variable holding the API key, sent as a Bearer token; the key never
            appears in a log, an error, a warning or the repr.
        timeout: seconds per request (the openai SDK's timeout).
        max_retries: the openai SDK's retries after the first attempt (refused connections, timeouts,
            408, 409, 429 and 5xx), with its exponential backoff and Retry-After handling.
        bos_text: text the server tokenizes to the model's beginning-of-text token (``<|endoftext|>`` for
            GPT-2): the prefix of the tokenization policy, as there is no client-side tokenizer. With it,
            empty contexts and the first token of a rolling text are scored as the Runner protocol says;
            without it they cannot be, as OpenAI gives the first prompt token no logprob.
        bos: the suite's policy (:class:`~posteval.runners.base.PrefixPolicy`): ``auto`` sends contexts
            as they are (the server's tokenizer adds what it adds to any prompt) and ``bos_text`` before
            an empty one; ``always`` sends ``bos_text`` before every prompt; ``never`` sends it nowhere.

    Raises:
        InputError: a bad option, an unset API-key variable, or a request the endpoint cannot score.
        RunnerError: the endpoint refuses, times out or answers 5xx/429 after ``max_retries`` retries,
            answers another 4xx, or answers something that is not an OpenAI completions response; the
            message names the URL.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        bos_text: str | None = None,
        bos: BosMode = "auto",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"openai runner base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0 or timeout <= 0:
            raise InputError(
                f"openai runner needs max_retries >= 0 and timeout > 0, got {max_retries} and {timeout}"
            )
        self.url = base_url.rstrip("/") + "/completions"
        self.chat_url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        if bos == "always" and not bos_text:
            raise InputError("bos: always needs bos_text (POSTEVAL_OPENAI_BOS_TEXT) for a served model")
        self.bos_text = bos_text
        self.policy = served_policy(bos_text, bos)
        self.warnings: list[str] = []
        self._secret = ""
        if api_key_env is not None:
            self._secret = os.environ.get(api_key_env, "")
            if not self._secret:
                raise InputError(
                    f"openai runner: environment variable {api_key_env} (the API key) is not set"
                )
        self._sdk = sdk("openai")
        # A keyless local server still needs a non-empty key for the SDK; without a key variable no
        # Authorization header is sent at all.
        self._client = self._sdk.OpenAI(
            base_url=base_url.rstrip("/"),
            api_key=self._secret or "unused",
            timeout=timeout,
            max_retries=max_retries,
        )
        self._options: dict[str, Any] = (
            {} if self._secret else {"headers": {"Authorization": self._sdk.Omit()}}
        )

    def __repr__(self) -> str:
        return f"OpenAIRunner(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> OpenAIRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self, prompts: Sequence[str], options: GenerationOptions, *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch[str]]:
        """Greedy (temperature 0) continuations; the stop sequences go to the server and are cut here too."""
        payload: dict[str, Any] = {"max_tokens": options.max_new_tokens, "temperature": 0}
        if options.stop:
            payload["stop"] = list(options.stop)
        for indices in _chunks(len(prompts), _batch_size(batch_size)):
            choices = self._complete([self.policy.prefix(prompts[i]) + prompts[i] for i in indices], payload)
            yield indices, [truncate_at_stop(choice["text"], options.stop) for choice in choices]

    def chat_generate(
        self,
        conversations: Sequence[list[dict[str, str]]],
        options: GenerationOptions,
        *,
        batch_size: BatchSize = "auto",
    ) -> Iterator[Batch[str]]:
        """Greedy answers to ``conversations`` through /v1/chat/completions (the server renders its template).

        The endpoint takes one conversation per request; ``batch_size`` only sets how many are yielded
        (and so stored) at a time.
        """
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": options.max_new_tokens,
            "temperature": 0,
        }
        if options.stop:
            payload["stop"] = list(options.stop)
        for indices in _chunks(len(conversations), _batch_size(batch_size)):
            answers = []
            for i in indices:
                body = self._post({**payload, "messages": conversations[i]}, url=self.chat_url)
                answers.append(truncate_at_stop(self._chat_text(body), options.stop))
            yield indices, answers

    def _chat_text(self, body: Any) -> str:
        choices = body.get("choices") if isinstance(body, dict) else None
        message = choices[0].get("message") if isinstance(choices, list) and choices else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise RunnerError(f"{self.chat_url} answered without choices[0].message.content")
        return content

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch[Loglikelihood]]:
        """log P(continuation | context): the logprobs of the echoed tokens starting inside the continuation.

        A token that straddles the context/continuation boundary is left out (and said in ``warnings``):
        end contexts before a space, not after it, as the usual task templates do.
        """
        prefixed = [(self._context(context), continuation) for context, continuation in requests]
        yield from self._score(prefixed, batch_size)

    def rolling_loglikelihood(
        self, texts: Sequence[str], *, batch_size: BatchSize = "auto", stride: int | None = None
    ) -> Iterator[Batch[Loglikelihood]]:
        """log P(text) from one echoed request per text; the server's context must hold the whole text.

        With ``bos_text`` every token is scored, the first conditioned on the beginning-of-text token.
        Without it the first token is not scored (the OpenAI format gives it no logprob) and ``n_tokens``
        counts only the scored tokens, so sums are comparable between runners only with ``bos_text``.
        A text longer than the server's context fails with the server's error as a RunnerError;
        ``stride`` (rolling windows) needs token ids, which this endpoint does not take.
        """
        if stride is not None:
            raise InputError("the openai runner scores each text whole; stride is not supported")
        yield from self._score([(self.policy.prefix(""), text) for text in texts], batch_size)

    def _context(self, context: str) -> str:
        prefixed = self.policy.prefix(context) + context
        if not prefixed:
            raise InputError(
                "the openai runner cannot score a continuation with an empty context without bos_text "
                "(the OpenAI format gives the first prompt token no logprob)"
            )
        return prefixed

    def _score(
        self, requests: Sequence[tuple[str, str]], batch_size: BatchSize
    ) -> Iterator[Batch[Loglikelihood]]:
        payload = {"max_tokens": SCORE_MAX_TOKENS, "temperature": 0, "echo": True, "logprobs": 1}
        straddling = 0
        for indices in _chunks(len(requests), _batch_size(batch_size)):
            prompts = [requests[i][0] + requests[i][1] for i in indices]
            choices = self._complete(prompts, payload)
            results = []
            for i, prompt, choice in zip(indices, prompts, choices, strict=True):
                context, continuation = requests[i]
                tokens = self._echoed_tokens(choice, prompt)
                start = len(context)
                straddling += any(t.offset < start < t.offset + len(t.text) for t in tokens)
                scored = [t for t in tokens if start <= t.offset < len(prompt) and t.logprob is not None]
                results.append(
                    Loglikelihood(
                        logprob=sum(t.logprob for t in scored if t.logprob is not None),
                        n_tokens=len(scored),
                        n_bytes=len(continuation.encode()),
                        is_greedy=bool(scored) and all(t.text == t.top for t in scored),
                    )
                )
            yield indices, results
        if straddling:
            self.warnings.append(
                f"{straddling} request(s) had a token spanning the end of the context and the start of the "
                "continuation; it was left out of the continuation's logprob"
            )

    def _echoed_tokens(self, choice: dict[str, Any], prompt: str) -> list[_Token]:
        logprobs = choice.get("logprobs")
        keys = ("tokens", "token_logprobs", "text_offset", "top_logprobs")
        if not isinstance(logprobs, dict) or not all(isinstance(logprobs.get(k), list) for k in keys):
            raise RunnerError(
                f"{self.url} answered a choice without logprobs.{{{', '.join(keys)}}} lists; does it "
                "support echo and logprobs on /completions?"
            )
        columns = [logprobs[k] for k in keys]
        if len({len(column) for column in columns}) != 1:
            raise RunnerError(f"{self.url} answered logprobs lists of different lengths")
        if not choice["text"].startswith(prompt):
            raise RunnerError(f"{self.url} did not echo the prompt (does it support echo=true?)")
        return [
            _Token(text, offset, logprob, max(top, key=top.get) if top else None)
            for text, logprob, offset, top in zip(*columns, strict=True)
        ]

    def _complete(self, prompts: list[str], payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The choices for ``prompts``, in their order (matched by ``index``)."""
        body = self._post({"model": self.model, "prompt": prompts, **payload})
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list):
            raise RunnerError(f"{self.url} answered without a 'choices' list: {self._scrub(str(body)[:200])}")
        by_index: dict[int, dict[str, Any]] = {}
        for choice in choices:
            if not (isinstance(choice, dict) and isinstance(choice.get("text"), str)):
                raise RunnerError(f"{self.url} answered a choice without a 'text' string")
            index = choice.get("index")
            if not isinstance(index, int) or not 0 <= index < len(prompts) or index in by_index:
                raise RunnerError(f"{self.url} answered a choice with a missing, duplicate or bad 'index'")
            by_index[index] = choice
        if len(by_index) != len(prompts):
            raise RunnerError(f"{self.url} answered {len(by_index)} choices for {len(prompts)} prompts")
        return [by_index[i] for i in range(len(prompts))]

    def _post(self, payload: dict[str, Any], url: str | None = None) -> Any:
        """The JSON answer to ``payload``; the openai SDK retries refused connections, timeouts, 408, 409,
        429 (honouring Retry-After) and 5xx with exponential backoff, up to ``max_retries`` times."""
        target = url or self.url
        path = "/chat/completions" if target == self.chat_url else "/completions"
        errors = self._sdk
        try:
            return self._client.post(path, cast_to=object, body=payload, options=self._options)
        except errors.APIStatusError as exc:
            message = self._scrub(_server_message(exc))
            if exc.status_code in RETRY_STATUSES or exc.status_code >= 500:
                raise RunnerError(
                    f"{target} failed after {self.max_retries + 1} attempts; last error: "
                    f"HTTP {exc.status_code}: {message}"
                ) from None
            raise RunnerError(f"{target} answered HTTP {exc.status_code}: {message}") from None
        except errors.APIConnectionError as exc:  # APITimeoutError included; the cause names the failure
            cause = exc.__cause__ or exc
            last = self._scrub(f"{type(cause).__name__}: {cause}")
            raise RunnerError(
                f"{target} failed after {self.max_retries + 1} attempts; last error: {last}"
            ) from None
        except errors.APIResponseValidationError as exc:
            raise RunnerError(f"{target} answered something that is not JSON: {exc}") from None

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _server_message(exc: Any) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}`` or the body)."""
    body = exc.body  # the SDK hands over the ``error`` object itself where there is one
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or exc.response.text[:500] or exc.response.reason_phrase)


def served_policy(bos_text: str | None, mode: BosMode) -> PrefixPolicy[str]:
    """The tokenization policy of a served model: nothing of its own client-side, ``bos_text`` as bos."""
    return PrefixPolicy(mode=mode, own="", bos=bos_text)


def _batch_size(batch_size: BatchSize) -> int:
    if batch_size == "auto":
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return batch_size


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]

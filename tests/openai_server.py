"""A small OpenAI-compatible completions server for tests, backed by a real transformers causal LM.

It serves ``POST /v1/completions`` (prompt as a string or a list, max_tokens, greedy decoding, stop, echo,
logprobs with the top-k), ``POST /v1/chat/completions`` (messages rendered through the checkpoint's chat
template with ``apply_chat_template``, then the same greedy decoding) and ``GET /v1/models`` on
127.0.0.1 at a free port, from a background thread of the standard library's HTTP server (starts in
milliseconds, stops cleanly). It records every request and can be told to fail: answer an error status
to the next N requests, or sleep before answering.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: Any


@dataclass
class Faults:
    """How the server misbehaves: each request waits ``delay_s``; the next ``fail_next`` requests get
    ``fail_status``; with ``body`` set, every later request gets it with status 200 instead of an answer."""

    fail_next: int = 0
    fail_status: int = 503
    delay_s: float = 0.0
    body: Any = None


class ApiError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message": ..., "type": ...}}`` with a status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Completion:
    """One choice: the (echoed) text and, per token, its text, character offset, logprob and top-k."""

    text: str
    finish_reason: str
    tokens: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    top: list[dict[str, float] | None] = field(default_factory=list)


class CompletionModel:
    """The served model: greedy decoding and per-token log-probabilities, one prompt at a time, unpadded."""

    def __init__(self, checkpoint: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        self.max_length = int(self.model.config.n_positions)
        self.lock = threading.Lock()  # one forward pass at a time: the handler runs a thread per request

    @torch.inference_mode()
    def complete(
        self, prompt: str, *, max_tokens: int, stop: list[str], echo: bool, logprobs: int | None
    ) -> Completion:
        encoded = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        prompt_ids: list[int] = encoded["input_ids"]
        if len(prompt_ids) + max_tokens > self.max_length:
            raise ApiError(
                400,
                f"This model's maximum context length is {self.max_length} tokens. However, you requested "
                f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the prompt, {max_tokens} in "
                "the completion).",
            )
        with self.lock:
            ids = list(prompt_ids)
            finish_reason = "length"
            for _ in range(max_tokens):
                next_id = int(self.model(torch.tensor([ids])).logits[0, -1].argmax())
                if next_id == self.tokenizer.eos_token_id:
                    finish_reason = "stop"
                    break
                ids.append(next_id)
                if stop and any(s in self._decode(ids[len(prompt_ids) :]) for s in stop):
                    finish_reason = "stop"
                    break
            scores = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        generated = ids[len(prompt_ids) :]
        text = self._decode(generated)
        cut = min([text.find(s) for s in stop if s in text] or [len(text)])
        # Honest offsets: the tokenizer's for the prompt, incremental decoding for the completion.
        offsets = [start for start, _ in encoded["offset_mapping"]]
        offsets += [len(prompt) + len(self._decode(generated[:i])) for i in range(len(generated))]
        kept = [i for i, offset in enumerate(offsets) if offset < len(prompt) + cut]
        if not echo:
            kept = [i for i in kept if i >= len(prompt_ids)]
        result = Completion(text=(prompt if echo else "") + text[:cut], finish_reason=finish_reason)
        if logprobs is None:
            return result
        for i in kept:
            result.tokens.append(self._decode([ids[i]]))
            result.offsets.append(offsets[i] - (0 if echo else len(prompt)))
            if i == 0:  # nothing conditions the first token: OpenAI gives it no logprob
                result.logprobs.append(None)
                result.top.append(None)
                continue
            result.logprobs.append(float(scores[i - 1, ids[i]]))
            values, top_ids = scores[i - 1].topk(max(logprobs, 1))
            result.top.append(
                {self._decode([int(t)]): float(v) for v, t in zip(values, top_ids, strict=True)}
            )
        return result

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))


class OpenAIServer:
    """The server: ``with OpenAIServer(checkpoint) as server:`` then ``server.base_url`` (``.../v1``)."""

    def __init__(self, checkpoint: Path, *, model_name: str = "toy") -> None:
        self.model_name = model_name
        self.completion_model = CompletionModel(checkpoint)
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._http = _HTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="openai-test-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def reset(self) -> None:
        """No faults and no recorded requests."""
        self.faults = Faults()
        self.requests.clear()

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on a delay
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        """The status and JSON body for one request."""
        self.requests.append(RecordedRequest(path, headers, body))
        if self.faults.delay_s:
            self._stopping.wait(self.faults.delay_s)
        if self.faults.fail_next > 0:
            self.faults.fail_next -= 1
            return self.faults.fail_status, _error(f"injected failure {self.faults.fail_status}")
        if self.faults.body is not None:
            return 200, self.faults.body
        try:
            if path == "/v1/models":
                return 200, {"object": "list", "data": [{"id": self.model_name, "object": "model"}]}
            if path == "/v1/completions":
                return 200, self._completions(body)
            if path == "/v1/chat/completions":
                return 200, self._chat(body)
            raise ApiError(404, f"no route {path}")
        except ApiError as exc:
            return exc.status, _error(str(exc))

    def _completions(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "prompt" not in body:
            raise ApiError(400, "prompt is required")
        if body.get("model") != self.model_name:
            raise ApiError(404, f"The model `{body.get('model')}` does not exist.")
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if float(body.get("temperature", 1.0)) != 0:
            raise ApiError(400, "this test server decodes greedily only: temperature must be 0")
        choices = []
        for index, prompt in enumerate(prompts):
            done = self.completion_model.complete(
                prompt,
                max_tokens=int(body.get("max_tokens", 16)),
                stop=stop,
                echo=bool(body.get("echo", False)),
                logprobs=body.get("logprobs"),
            )
            choice: dict[str, Any] = {"index": index, "text": done.text, "finish_reason": done.finish_reason}
            choice["logprobs"] = None
            if body.get("logprobs") is not None:
                choice["logprobs"] = {
                    "tokens": done.tokens,
                    "token_logprobs": done.logprobs,
                    "text_offset": done.offsets,
                    "top_logprobs": done.top,
                }
            choices.append(choice)
        # Answer in reverse order: clients must match choices by ``index``, not by position.
        return {
            "id": f"cmpl-{len(self.requests)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices[::-1],
        }

    def _chat(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise ApiError(400, "messages is required")
        if body.get("model") != self.model_name:
            raise ApiError(404, f"The model `{body.get('model')}` does not exist.")
        if float(body.get("temperature", 1.0)) != 0:
            raise ApiError(400, "this test server decodes greedily only: temperature must be 0")
        tokenizer = self.completion_model.tokenizer
        if not tokenizer.chat_template:
            raise ApiError(400, "this model has no chat template")
        prompt = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        stop = body.get("stop") or []
        done = self.completion_model.complete(
            str(prompt),
            max_tokens=int(body.get("max_tokens", 16)),
            stop=[stop] if isinstance(stop, str) else stop,
            echo=False,
            logprobs=None,
        )
        message = {"role": "assistant", "content": done.text}
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": done.finish_reason}],
        }


class _HTTPServer(ThreadingHTTPServer):
    # Do not wait on close for handler threads: a kept-alive connection holds one until the client closes.
    block_on_close = False


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        timeout = 30  # seconds an idle kept-alive connection holds its thread

        def do_GET(self) -> None:
            self._reply(*server.answer(self.path, self._headers(), None))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(400, _error("body is not JSON"))
                return
            self._reply(*server.answer(self.path, self._headers(), body))

        def _headers(self) -> dict[str, str]:
            return {name.lower(): value for name, value in self.headers.items()}

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"

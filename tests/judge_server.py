"""A scripted judge server for tests: OpenAI-compatible ``POST /v1/chat/completions`` and Anthropic-style
``POST /v1/messages`` on 127.0.0.1 at a free port, answering from a script.

Each request takes the next :class:`Reply` of ``script`` (the last one repeats): a status, the judge's
text (wrapped as each API wraps it) or an error body, extra headers (``Retry-After``) and a delay before
answering (a slow answer past the client's timeout). Every request is recorded with its headers and body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def _openai(text: str, model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _anthropic(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


class JudgeServer:
    """``with JudgeServer([Reply(...), ...]) as server:`` then ``server.base_url`` and ``server.requests``.

    ``script`` may also be a function of the request body returning a Reply (a judge that reads the prompt).
    """

    def __init__(self, script: list[Reply] | Callable[[Any], Reply]) -> None:
        self.script = script
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.block_on_close = False
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            index = len(self.requests)
            self.requests.append(Recorded(path, headers, body))
            if callable(self.script):
                reply = self.script(body)
            else:
                reply = self.script[min(index, len(self.script) - 1)]
        if reply.delay_s:
            self._stopping.wait(reply.delay_s)
        if reply.status != 200:
            error = {"type": "error", "error": {"type": "api_error", "message": f"scripted {reply.status}"}}
            return reply.status, reply.headers, error
        model = str(body.get("model", ""))
        wrapped = _anthropic(reply.text, model) if path.endswith("/messages") else _openai(reply.text, model)
        return 200, reply.headers, wrapped


def _handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, extra, body = server.answer(self.path, headers, json.loads(raw))
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler

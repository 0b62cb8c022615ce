"""A scripted OpenAI-compatible HTTP server on loopback, for testing the LLM path through the real client.

It is a real server (``http.server`` in a thread, ephemeral port on 127.0.0.1) that speaks the parts of the
OpenAI protocol lossforge uses: ``POST /v1/chat/completions`` and ``GET /v1/models``. Each chat request
consumes the next item of a script:

- a ``str``: the assistant's reply text (usage counts words, so token accounting is testable);
- ``Reply(text, ...)``: the same with explicit usage, model name or a delay before answering (timeouts);
- ``Error(status, ...)``: an error status with an OpenAI-style error body and optional headers;
  helpers ``rate_limited(retry_after)``, ``server_error()``;
- ``Malformed(body)``: a 200 whose body is not the JSON the protocol promises;
- a callable ``(request_body) -> item``: decides from the request (e.g. from the prompt).

Server-level settings model endpoint behaviour that does not depend on the script: ``api_key`` (a wrong
bearer token gets 401), ``models`` (an unknown model gets 404 ``model_not_found``) and
``reject_response_format`` (a request carrying ``response_format`` gets 400, as llama.cpp builds without
JSON-mode support do). Those answers do not consume the script. Every request received is recorded in
``server.requests`` (method, path, headers, parsed body), so tests can assert on prompts.

Usage::

    with OpenAIServer(["first reply", rate_limited(0.01), "second"]) as server:
        client = LLMClient("fake-model", base_url=server.base_url, api_key="sk-test")

or, in a test module, ``from tests.openai_server import openai_server`` and take the ``openai_server``
fixture, a factory that starts servers and stops them at the end of the test.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pytest


@dataclass(frozen=True)
class Reply:
    """A successful completion. Token counts default to the number of whitespace-separated words."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    delay: float = 0.0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Error:
    """An error response with an OpenAI-style ``{"error": {...}}`` body."""

    status: int
    message: str = "scripted error"
    code: str | None = None
    type: str = "invalid_request_error"
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Malformed:
    """A 200 response whose body breaks the protocol (not JSON, or JSON without ``choices``)."""

    body: str = "<html>upstream proxy error</html>"
    content_type: str = "application/json"


ScriptItem = str | Reply | Error | Malformed | Callable[[dict[str, Any]], Any]


def rate_limited(retry_after: float | None = 1.0) -> Error:
    """429 with a ``Retry-After`` header in seconds (omitted when ``retry_after`` is None)."""
    headers = {} if retry_after is None else {"Retry-After": _format_seconds(retry_after)}
    return Error(429, "Rate limit reached", code="rate_limit_exceeded", type="requests", headers=headers)


def server_error(status: int = 500) -> Error:
    return Error(status, "The server had an error while processing your request.", type="server_error")


@dataclass
class RecordedRequest:
    """One request as received; ``headers`` names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


class OpenAIServer:
    """Loopback OpenAI-compatible server driven by a script; a context manager (``start``/``stop``)."""

    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        reject_response_format: bool = False,
        default: ScriptItem | None = None,
    ) -> None:
        self._script: deque[ScriptItem] = deque(script)
        self.api_key = api_key
        self.models = None if models is None else list(models)
        self.reject_response_format = reject_response_format
        # Answer given when the script is exhausted; None answers 500 "script exhausted" so a test that
        # makes more calls than it scripted fails visibly instead of hanging or passing by accident.
        self.default = default
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # access ----------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *items: ScriptItem) -> None:
        with self._lock:
            self._script.extend(items)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat-completion requests received, in arrival order."""
        with self._lock:
            return [r.body or {} for r in self.requests if r.path.endswith("/chat/completions")]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_item(self, body: dict[str, Any]) -> ScriptItem:
        with self._lock:
            item: ScriptItem | None = self._script.popleft() if self._script else self.default
        if item is None:
            return Error(500, "fake server: script exhausted", type="server_error")
        while callable(item) and not isinstance(item, (str, Reply, Error, Malformed)):
            item = item(body)
        return item


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """Request headers with lower-case names (HTTP names are case-insensitive; clients differ)."""
    return {key.lower(): value for key, value in handler.headers.items()}


def _word_count(text: str) -> int:
    return max(1, len(text.split()))


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt_text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else _word_count(prompt_text)
    completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else _word_count(reply.text)
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": 0,
        "model": reply.model or body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def _send(
            self,
            status: int,
            payload: str,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            data = payload.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test); nothing to answer

        def _send_error(self, err: Error) -> None:
            payload = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
            self._send(err.status, json.dumps(payload), err.headers)

        def _authorized(self) -> bool:
            if server.api_key is None:
                return True
            if self.headers.get("Authorization", "") == f"Bearer {server.api_key}":
                return True
            self._send_error(Error(401, "Incorrect API key provided.", code="invalid_api_key"))
            return False

        def do_GET(self) -> None:
            server._record(RecordedRequest("GET", self.path, _headers(self), None))
            if not self._authorized():
                return
            if self.path.rstrip("/").endswith("/models"):
                ids = server.models if server.models is not None else ["fake-model"]
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ids]
                self._send(200, json.dumps({"object": "list", "data": data}))
            else:
                self._send_error(Error(404, f"no route {self.path}", code="not_found"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length else b""
            try:
                body: dict[str, Any] | None = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = None
            server._record(RecordedRequest("POST", self.path, _headers(self), body))
            if not self._authorized():
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_error(Error(404, f"no route {self.path}", code="not_found"))
                return
            if body is None:
                self._send_error(Error(400, "request body is not JSON"))
                return
            model = body.get("model")
            if server.models is not None and model not in server.models:
                self._send_error(
                    Error(
                        404,
                        f"The model `{model}` does not exist or you do not have access to it.",
                        code="model_not_found",
                    )
                )
                return
            if server.reject_response_format and "response_format" in body:
                self._send_error(Error(400, "response_format is not supported by this server", param="response_format"))
                return
            item = server._next_item(body)
            delay = getattr(item, "delay", 0.0)
            if delay:
                time.sleep(delay)
            if isinstance(item, str):
                item = Reply(item)
            if isinstance(item, Reply):
                self._send(200, json.dumps(_completion(body, item)))
            elif isinstance(item, Error):
                self._send_error(item)
            elif isinstance(item, Malformed):
                self._send(200, item.body, content_type=item.content_type)
            else:
                self._send_error(Error(500, f"fake server: bad script item {item!r}", type="server_error"))

    return Handler


@pytest.fixture
def openai_server() -> Iterator[Callable[..., OpenAIServer]]:
    """Factory fixture: ``openai_server(script, **settings)`` starts a server, stopped after the test."""
    started: list[OpenAIServer] = []

    def factory(script: Iterable[ScriptItem] = (), **settings: Any) -> OpenAIServer:
        server = OpenAIServer(script, **settings).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()

"""Protocol-level fake model servers on 127.0.0.1 that play scripted conversations.

- `FakeOpenAIServer`: `POST /v1/chat/completions` (JSON; SSE when `stream`), `GET /v1/models`;
  tool calls with JSON-string arguments, `usage` token counts.
- `FakeOllamaServer`: `/api/chat` (JSON or NDJSON stream; tool calls with dict arguments),
  `/api/tags`, `/api/show` (404 for a model it lacks), `/api/version`, `/api/generate` (an empty
  prompt only loads the model, as Ollama's preload), `/api/ps` (loaded models, `size_vram` =
  `vram_share` of `size`), `/api/pull` (NDJSON progress; only names in `pullable`).

Both are driven by a `Script`: for a request, the rule whose `match` text occurs in the first user
message decides the reply; the turn is the number of assistant messages already in the
conversation. A turn can be a tool call, code, plain text, an HTTP error (429 with or without
Retry-After, 500), a delay, a reply that never ends, malformed JSON or a malformed tool call.
The real clients (litellm, ollama, smolagents) talk to them unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFLIGHT_MARKER = "smoltrace preflight"  # what the runner's preflight probe says (smoltrace.preflight.PROBE_PROMPT)


@dataclass
class Turn:
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    content: str | None = None
    status: int = 200  # an HTTP error status instead of a reply
    retry_after: float | None = None
    delay_s: float = 0.0
    hang: bool = False  # accept the request, never finish the reply
    malformed_json: bool = False
    malformed_tool_call: bool = False  # arguments that are not JSON
    times: int = 1  # an error turn repeats this many times before the conversation moves on


def call(name: str, **arguments: Any) -> Turn:
    return Turn(tool_calls=[(name, arguments)])


def calls(*pairs: tuple[str, dict[str, Any]]) -> Turn:
    return Turn(tool_calls=list(pairs))


def final(answer: Any) -> Turn:
    return Turn(tool_calls=[("final_answer", {"answer": answer})])


def code(source: str) -> Turn:
    return Turn(content=f"Thought: I will compute it.\n<code>\n{source}\n</code>")


def error(status: int, retry_after: float | None = None, times: int = 1) -> Turn:
    return Turn(status=status, retry_after=retry_after, times=times)


@dataclass
class Rule:
    match: str
    turns: list[Turn]


class Script:
    """Replies by rule (first user message contains `match`) and turn (assistant messages so far)."""

    def __init__(self, rules: list[Rule] | None = None, default: Turn | None = None, latency_s: float = 0.0) -> None:
        self.rules = list(rules or [])
        self.default = default or Turn(content="I don't know.")
        self.latency_s = latency_s
        self.requests = 0  # the agents' chat requests (the runner's preflight probe is counted apart)
        self.preflight_requests = 0  # the runner's 1-token preflight requests (PREFLIGHT_MARKER in the prompt)
        self.models_seen: list[str] = []  # the `model` of each chat request, in order
        self.auth_seen: set[str] = set()  # Authorization headers received
        self.record_bodies = False  # set True to keep every chat request body (JSON text) in `bodies`
        self.bodies: list[str] = []
        self.completion_tokens_served = 0
        self.prompt_tokens_served = 0
        self._errors_served: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def add(self, match: str, *turns: Turn) -> Script:
        self.rules.append(Rule(match, list(turns)))
        return self

    def next_turn(self, messages: list[dict[str, Any]]) -> Turn:
        first_user = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
        assistant_turns = sum(1 for m in messages if m.get("role") == "assistant")
        for rule in self.rules:
            if rule.match not in first_user:
                continue
            # an error turn is served `times` times when the conversation reaches it (the client
            # never sees an assistant message from it); normal turns are counted by position
            remaining = assistant_turns
            for index, turn in enumerate(rule.turns):
                if turn.status != 200 or turn.hang or turn.malformed_json:
                    key = (id(rule), index)
                    with self._lock:
                        served = self._errors_served.get(key, 0)
                        if served < turn.times:
                            self._errors_served[key] = served + 1
                            return turn
                    continue
                if remaining == 0:
                    return turn
                remaining -= 1
            return rule.turns[-1] if rule.turns else self.default
        return self.default


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(_text(m.get("content")).split()) for m in messages) + 1


class _Server:
    handler: type[BaseHTTPRequestHandler]

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self._httpd.daemon_threads = True
        self._httpd.script = self.script  # type: ignore[attr-defined]
        self._httpd.stop_event = threading.Event()  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> _Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.stop_event.set()  # type: ignore[attr-defined]
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def script(self) -> Script:
        return self.server.script  # type: ignore[attr-defined]

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _record(self, request: dict[str, Any]) -> bool:
        """Count the request; True for the runner's preflight probe (kept out of the agents' counters)."""
        script = self.script
        messages = request.get("messages") or []
        with script._lock:
            if self.headers.get("Authorization"):
                script.auth_seen.add(self.headers["Authorization"])
            if any(PREFLIGHT_MARKER in _text(m.get("content")) for m in messages if isinstance(m, dict)):
                script.preflight_requests += 1
                return True
            script.requests += 1
            script.models_seen.append(str(request.get("model")))
            if script.record_bodies:
                script.bodies.append(json.dumps(request, ensure_ascii=False))
            return False

    def _special(self, turn: Turn) -> bool:
        """Serve an error/hang/malformed turn; True when the request is done."""
        if turn.delay_s:
            time.sleep(turn.delay_s)
        if turn.hang:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b'{"id": "')
            self.wfile.flush()
            self.server.stop_event.wait(600)  # type: ignore[attr-defined]
            return True
        if turn.malformed_json:
            self._send(200, b'{"choices": [ {"message": ', content_type="application/json")
            return True
        if turn.status != 200:
            headers = {"Retry-After": f"{turn.retry_after:g}"} if turn.retry_after is not None else {}
            self._send(turn.status, {"error": {"message": f"fake error {turn.status}", "type": "fake", "code": turn.status}}, headers)
            return True
        return False


class _OpenAIHandler(_Handler):
    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        request = self._body()
        script = self.script
        probe = self._record(request)
        messages = request.get("messages") or []
        turn = script.next_turn(messages)
        if script.latency_s:
            time.sleep(script.latency_s)
        if self._special(turn):
            return
        prompt_tokens = _tokens(messages)
        message: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{script.requests}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": "{not json" if turn.malformed_tool_call else json.dumps(args)},
                }
                for i, (name, args) in enumerate(turn.tool_calls)
            ]
        completion_tokens = len((turn.content or "").split()) + 5 * len(turn.tool_calls) + 1
        with script._lock:
            script.prompt_tokens_served += 0 if probe else prompt_tokens
            script.completion_tokens_served += 0 if probe else completion_tokens
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        reply = {
            "id": f"chatcmpl-{script.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "fake-model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if turn.tool_calls else "stop"}],
            "usage": usage,
        }
        if request.get("stream"):
            chunk = dict(reply, object="chat.completion.chunk", choices=[{"index": 0, "delta": message, "finish_reason": "stop"}])
            body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            self._send(200, body, content_type="text/event-stream")
        else:
            self._send(200, reply)


class _OllamaHandler(_Handler):
    models = ("tiny:latest", "hf.co/kshitijthakkar/loggenix-moe-0.3B-A0.1B-smolagents-v0:f16")
    SIZE = 1_000_000

    @property
    def state(self) -> FakeOllamaServer:
        return self.server.fake  # type: ignore[attr-defined]

    @staticmethod
    def _name(model: Any) -> str:
        name = str(model or "")
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"

    def do_GET(self) -> None:
        state = self.state
        if self.path == "/api/tags":
            self._send(200, {"models": [{"name": m, "model": m, "size": self.SIZE, "details": {"family": "llama"}} for m in state.models]})
        elif self.path == "/api/ps":
            vram = int(self.SIZE * state.vram_share)
            running = [
                {"name": m, "model": m, "size": self.SIZE, "size_vram": vram, "digest": "0" * 64, "expires_at": "2026-12-04T00:00:00Z"}
                for m in sorted(state.loaded)
            ]
            self._send(200, {"models": running})
        elif self.path == "/api/version":
            self._send(200, {"version": "0.6.3"})
        elif self.path == "/":
            self._send(200, b"Ollama is running", content_type="text/plain")
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        request = self._body()
        state = self.state
        if self.path == "/api/pull":
            name = self._name(request.get("model") or request.get("name"))
            total = state.pullable.get(name)
            if total is None:
                self._send(500, {"error": "pull model manifest: file does not exist"})
                return
            state.pulls.append(name)
            digest = "sha256:" + "ab" * 32
            lines = [{"status": "pulling manifest"}]
            lines += [
                {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total, "completed": done}
                for done in (0, total // 2, total)
            ]
            lines += [{"status": "verifying sha256 digest"}, {"status": "success"}]
            state.models = (*state.models, name)
            self._send(200, ("\n".join(json.dumps(line) for line in lines) + "\n").encode(), content_type="application/x-ndjson")
            return
        if self.path == "/api/show":
            if self._name(request.get("model") or request.get("name")) not in state.models:
                self._send(404, {"error": f"model '{request.get('model')}' not found"})
                return
            self._send(
                200,
                {
                    "modelfile": "",
                    "parameters": "",
                    "template": "",
                    "details": {"family": "llama"},
                    "model_info": {},
                    "capabilities": ["completion", "tools"],
                },
            )
            return
        if self.path not in ("/api/chat", "/api/generate"):
            self._send(404, {"error": "not found"})
            return
        state.loaded.add(self._name(request.get("model")))
        if self.path == "/api/generate" and not request.get("prompt") and not request.get("messages"):
            # Ollama's preload: an empty prompt loads the model and generates nothing
            self._send(
                200,
                {"model": request.get("model"), "created_at": "2026-11-26T00:00:00Z", "response": "", "done": True, "done_reason": "load"},
            )
            return
        script = self.script
        probe = self._record(request)
        messages = request.get("messages") or [{"role": "user", "content": request.get("prompt", "")}]
        turn = script.next_turn(messages)
        if script.latency_s:
            time.sleep(script.latency_s)
        if self._special(turn):
            return
        prompt_tokens = _tokens(messages)
        completion_tokens = len((turn.content or "").split()) + 5 * len(turn.tool_calls) + 1
        with script._lock:
            script.prompt_tokens_served += 0 if probe else prompt_tokens
            script.completion_tokens_served += 0 if probe else completion_tokens
        message: dict[str, Any] = {"role": "assistant", "content": turn.content or ""}
        if turn.tool_calls:
            message["tool_calls"] = [{"function": {"name": name, "arguments": args}} for name, args in turn.tool_calls]
        base = {"model": request.get("model", "tiny"), "created_at": "2026-11-26T00:00:00Z"}
        done = {
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": prompt_tokens,
            "eval_count": completion_tokens,
            "total_duration": 1000,
        }
        if self.path == "/api/generate":
            self._send(200, {**base, "response": turn.content or "", **done})
            return
        if request.get("stream", True):
            lines = [
                json.dumps({**base, "message": message, "done": False}),
                json.dumps({**base, "message": {"role": "assistant", "content": ""}, **done}),
            ]
            self._send(200, ("\n".join(lines) + "\n").encode(), content_type="application/x-ndjson")
        else:
            self._send(200, {**base, "message": message, **done})


class FakeOpenAIServer(_Server):
    handler = _OpenAIHandler

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"


class FakeOllamaServer(_Server):
    handler = _OllamaHandler

    def __init__(self, script: Script | None = None) -> None:
        super().__init__(script)
        self.models: tuple[str, ...] = _OllamaHandler.models  # what /api/tags lists and /api/show knows
        self.pullable: dict[str, int] = {}  # name -> size in bytes that /api/pull can fetch
        self.pulls: list[str] = []
        self.loaded: set[str] = set()  # models a chat/generate touched: what /api/ps lists
        self.vram_share = 1.0  # share of each loaded model in GPU memory (0: on the CPU)
        self._httpd.fake = self  # type: ignore[attr-defined]


ScriptFactory = Callable[[], Script]

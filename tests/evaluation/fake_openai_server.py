"""A fake OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1 for judge tests.

The real ``openai`` client talks to it over HTTP, so retries, timeouts and response parsing are
exercised for real. A ``responder(body, n)`` decides each reply (``n`` counts requests from 1).
Bounded: it binds loopback only, answers for at most ``lifetime`` seconds and then stops itself,
and a delayed reply is cut short when the server stops.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    status: int = 200
    body: dict | None = None
    delay: float = 0.0
    headers: dict = field(default_factory=dict)


def chat_body(text: str, top_logprobs: dict[str, float] | None = None, model: str = "fake") -> dict:
    """A chat.completion object; with ``top_logprobs``, one token's logprobs as OpenAI returns them."""
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": text}}
    if top_logprobs is not None:
        tops = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top_logprobs.items()]
        first = max(tops, key=lambda t: t["logprob"])
        choice["logprobs"] = {"content": [dict(first, top_logprobs=tops)]}
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}


class FakeOpenAIServer:
    """``with FakeOpenAIServer(responder) as server: OpenAIJudge(server.url, ...)``."""

    def __init__(self, responder: Callable[[dict, int], Reply], lifetime: float = 60.0):
        self.responder = responder
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with outer._lock:
                    outer.requests.append(body)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    n = len(outer.requests)
                reply = outer.responder(body, n)
                if reply.delay and outer._stop.wait(reply.delay):
                    return                                   # server stopping: drop the request
                payload = json.dumps(reply.body if reply.body is not None
                                     else {"error": {"message": f"status {reply.status}"}}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass                                      # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

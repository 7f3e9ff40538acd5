"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1, for testing the real ``openai`` client.

Each request to ``POST /v1/chat/completions`` takes the next step of the script (the last step
repeats once the script is used up): a reply, an HTTP error, a reply that comes too late, or a
body of raw bytes (malformed JSON, invalid UTF-8). Every
request body and header is kept in ``requests``. The server stops when its ``with`` block ends, or
by itself after ``lifetime`` seconds, whichever comes first.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply(content, prompt_tokens=120, completion_tokens=80, choices=True) -> dict:
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}] if choices else [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
    return {"status": 200, "body": body}


def error(status: int, message: str = "error", headers: dict | None = None) -> dict:
    return {"status": status, "body": {"error": {"message": message, "type": "fake", "code": status}},
            "headers": headers or {}}


def raw(payload: bytes, status: int = 200) -> dict:
    """A response whose body is these exact bytes (malformed JSON, invalid UTF-8, ...)."""
    return {"status": status, "raw": payload}


def slow(step: dict, seconds: float) -> dict:
    return {**step, "delay": seconds}


class FakeOpenAI:
    def __init__(self, script: list[dict], lifetime: float = 60.0):
        self.script, self.lifetime = list(script), lifetime
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
                    step = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                time.sleep(step.get("delay", 0))
                payload = step["raw"] if "raw" in step else json.dumps(step["body"]).encode()
                try:
                    self.send_response(step["status"])
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in step.get("headers", {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.server.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()

    def prompts(self) -> list[str]:
        """The user message of every request, in order."""
        return [r["body"]["messages"][-1]["content"] for r in self.requests]

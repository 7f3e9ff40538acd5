"""An OpenAI-compatible endpoint on 127.0.0.1 whose "model" is the offline ``evolve`` proposer: for
running the ``openai`` proposer's whole path (prompts, replies, lessons requests, token counts)
without a language model, e.g. to read the prompts a campaign writes.

Each ``POST /v1/chat/completions`` is answered from the campaign's archive (``--campaign DIR``, the
folder ``disco run --out`` writes): a proposal request gets the next proposal of
:class:`discovery.evolve.EvolveProposer` on the archive's context, as the JSON object the prompt asks
for (idea, thought, name, code); a lessons request gets the rules' summary
(:func:`discovery.history.rule_lessons`). Usage is reported as the prompt's and the reply's lengths
in characters / 4 (a rough token count). It answers until killed::

    .venv/bin/python discovery/examples/scripted_endpoint.py --campaign runs/p9 --port 8765 &
    .venv/bin/disco run --out runs/p9 --proposer openai --base-url http://127.0.0.1:8765/v1 \\
        --model evolve-as-a-model --candidates 10 --set 'training.seeds=[0,1]'
    cat runs/p9/candidates/0012-*/prompt.md        # the ninth experiment's prompt (rows 1-3: baselines)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def answer(campaign: Path, messages: list[dict]) -> str:
    from discovery import history
    from discovery.archive import Archive
    from discovery.config import CampaignConfig
    from discovery.evolve import EvolveProposer
    from discovery.steering import proposer_context

    with Archive.open(campaign) as archive:
        config = CampaignConfig.from_dict(archive.config, warn=False)
        context = proposer_context(archive, config, config.training.beta or 0.1)
    if "Write the new lessons summary" in messages[-1]["content"]:
        return history.rule_lessons(context.history, history.reference_entry(context), context.noise,
                                    config.fitness.metric)
    p = EvolveProposer.from_config(config).propose(context)
    return json.dumps({"idea": p.thought.split(":")[0][:80], "thought": p.thought, "name": p.name, "code": p.code})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", required=True, help="the campaign folder (disco run --out DIR)")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args(argv)
    campaign = Path(args.campaign)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            messages = body.get("messages") or [{"content": ""}]
            text = answer(campaign, messages)
            prompt_chars = sum(len(m.get("content") or "") for m in messages)
            reply = {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model", "scripted"),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(text) // 4,
                               "total_tokens": (prompt_chars + len(text)) // 4}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"scripted endpoint on http://127.0.0.1:{args.port}/v1 for {campaign}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

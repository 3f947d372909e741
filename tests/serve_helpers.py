"""Pieces the server tests share: tiny runs to serve and uvicorn on a free port."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from lanternlm.chat import ChatTokens, render_for_generation
from lanternlm.checkpoint import save_model
from lanternlm.train.sft import sft

from sft_helpers import make_base, scripted_model, small_sft, train_tokenizer

HI = [{"role": "user", "content": "hi"}]
THOUGHT, ANSWER = "I think é", "Answer: ok"


def make_runs(root: Path) -> dict:
    """A base run, a chat run (2 SFT steps) and a scripted chat run whose reply to HI at
    level high is exactly <|think|>THOUGHT<|/think|>ANSWER<|end|>."""
    tokenizer = train_tokenizer()
    base = make_base(tokenizer, root)
    chat = root / "chat"
    sft(small_sft(base, tasks=["letters"], max_steps=2), chat)
    scripted = root / "thinker"
    shutil.copytree(chat, scripted, ignore=shutil.ignore_patterns("checkpoints"))
    t = ChatTokens.of(tokenizer)
    prompt = render_for_generation(HI, tokenizer, "high")
    script = [0] * (len(prompt) - 1) + [t.think, *tokenizer.encode(THOUGHT), t.end_think, *tokenizer.encode(ANSWER), t.end]
    save_model(scripted, scripted_model(script, tokenizer.vocab_size, block_size=128))
    return {"base": base, "chat": chat, "thinker": scripted, "tokenizer": tokenizer}


class Server:
    """uvicorn serving the app on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = "http://127.0.0.1:%d" % self.server.servers[0].sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join()

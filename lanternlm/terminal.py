"""Terminal front-ends: ``lantern generate`` and ``lantern chat``.

A leaf (nothing in the core imports it): it loads a run, asks :mod:`lanternlm.generate`
for text, and writes to the streams it is given, so tests drive it with scripted input.

``--show-probs`` makes the seed's point visible: a language model outputs a probability
for every token, and sampling picks one. For each step it prints the top candidates
under the model's raw distribution and after the sampling filters, and marks the pick.

The chat is built on a small :class:`ChatFormat` interface, the plug for conversation
templates: :class:`PlainCompletion` treats a base model's chat as one running text it
continues; :class:`ChatTemplate` renders turns with :mod:`lanternlm.chat` for chat models.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Protocol, Sequence, TextIO

import torch

from .engine import Engine, TokenEvent
from .errors import LanternError
from .generate import complete, default_stop_tokens, encode_prompt, stream_text
from .sampling import PRESETS, SamplingParams, preset
from .tokenizer import Tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_engine(run: str, device: str | None = None, dtype: str | None = None) -> tuple[Engine, Tokenizer]:
    """The engine and tokenizer of a run directory (weights cast to ``dtype`` if given)."""
    from .checkpoint import load_run

    if dtype is not None and dtype not in DTYPES:
        raise LanternError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    model, tokenizer = load_run(run, device=device)
    return Engine(model, dtype=DTYPES[dtype] if dtype else None, vocab_limit=tokenizer.vocab_size), tokenizer


# --------------------------------------------------------------------------- probabilities view


def token_label(tokenizer: Tokenizer, token: int) -> str:
    """A token as a quoted literal: text where its bytes are whole characters, else bytes.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>"])
    >>> token_label(tok, 10), token_label(tok, 0xC3), token_label(tok, 256)
    ("'\\\\n'", "b'\\\\xc3'", '<|endoftext|>')
    """
    if token in tokenizer.special_tokens.values():
        return tokenizer.decode([token])
    piece = tokenizer.token_bytes(token)
    try:
        return repr(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(piece)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``fraction * width`` cells, in eighths of a cell.

    >>> bar(0.5, 4), bar(0.53, 4), bar(0.0, 4)
    ('██', '██▏', '')
    """
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[part]


def probs_table(tokenizer: Tokenizer, event: TokenEvent, bar_width: int = 20) -> str:
    """The candidates of one step: raw probability, probability after filters, the pick.

    Rows are the raw top candidates, then filtered ones not among them, then the pick if
    it is in neither list; ``-`` marks a token the filters removed (or not in their top).
    """
    raw = dict(event.raw_top or [])
    filtered = dict(event.filtered_top or [])
    order = list(raw) + [t for t in filtered if t not in raw]
    if event.token not in order:
        order.append(event.token)
    raw[event.token] = math.exp(event.logprob)
    filtered[event.token] = math.exp(event.sampled_logprob)
    labels = {t: token_label(tokenizer, t) for t in order}
    width = max(12, *(len(label) for label in labels.values()))
    status = f"  [{event.finish_reason}]" if event.finish_reason else ""
    lines = [f"step {event.index + 1}: picked {labels[event.token]}  "
             f"(raw {raw[event.token]:.1%}, after filters {filtered[event.token]:.1%}){status}",
             f"    {'token':<{width}}  {'raw':>6}  {'':<{bar_width}}  {'filtered':>8}"]
    for t in order:
        mark = "▶" if t == event.token else " "
        after = (f"{filtered[t]:>8.1%}  {bar(filtered[t], bar_width)}" if filtered.get(t, 0) > 0
                 else f"{'-':>8}")
        lines.append(f"  {mark} {labels[t]:<{width}}  {raw[t]:>6.1%}  "
                     f"{bar(raw[t], bar_width):<{bar_width}}  {after}".rstrip())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- lantern generate


def generate_command(run: str, prompt: str, *, sampling: SamplingParams, max_tokens: int = 200,
                     stop: Sequence[str] = (), num: int = 1, show_probs: bool = False,
                     top: int = 5, truncate: str | None = None, bos: bool = True,
                     device: str | None = None, dtype: str | None = None,
                     out: TextIO | None = None) -> int:
    """``lantern generate``: print the prompt and its completion(s) as they are generated."""
    out = out or sys.stdout
    if num < 1:
        raise LanternError(f"--num {num}: must be >= 1")
    if show_probs and num != 1:
        raise LanternError("--show-probs shows one generation step by step: use it with --num 1")
    engine, tokenizer = load_engine(run, device, dtype)
    ids = encode_prompt(tokenizer, prompt, bos)
    if num > 1:
        results = complete(engine, tokenizer, [ids] * num, max_tokens=max_tokens,
                           sampling=sampling, stop=stop, truncate=truncate)
        for i, result in enumerate(results):
            out.write(f"── sample {i + 1} of {num} ({result.finish_reason}) ──\n{prompt}{result.text}\n")
        return 0
    pieces = stream_text(engine, tokenizer, [ids], max_tokens=max_tokens, sampling=sampling,
                         stop=stop, top_alternatives=top if show_probs else 0, truncate=truncate)
    text = []
    if not show_probs:
        out.write(prompt)
    for piece in pieces:
        text.append(piece.text)
        if show_probs:
            out.write(probs_table(tokenizer, piece.event))
        else:
            out.write(piece.text)
            out.flush()
    if show_probs:
        out.write(f"\n{prompt}{''.join(text)}")
    out.write("\n")
    return 0


# --------------------------------------------------------------------------- lantern chat


class ChatFormat(Protocol):
    """How a conversation becomes prompt ids, and a reply goes back into it."""

    name: str

    def prompt_ids(self, tokenizer: Tokenizer, history: list[dict], user: str) -> list[int]:
        """Ids for the model to continue after the user's new message."""

    def stop_tokens(self, tokenizer: Tokenizer) -> list[int]:
        """Ids that end the model's reply."""

    def remember(self, history: list[dict], user: str, reply: str) -> None:
        """Add the exchange to ``history``."""


class PlainCompletion:
    """Base models: the chat is one running text, which the model continues.

    The user's text is appended to the running text (after a newline unless it ends in
    whitespace); the reply is whatever the model writes next, up to ``<|endoftext|>`` or
    the token limit. ``history`` holds the text pieces in order.
    """

    name = "plain"

    @staticmethod
    def user_piece(history: list[dict], user: str) -> str:
        """The user's text as appended to the running text.

        >>> PlainCompletion.user_piece([{"text": "Hi."}, {"text": " Yo"}], "Bye")
        '\\nBye'
        """
        joint = "\n" if history and not history[-1]["text"][-1:].isspace() else ""
        return joint + user

    def prompt_ids(self, tokenizer: Tokenizer, history: list[dict], user: str) -> list[int]:
        so_far = "".join(part["text"] for part in history)
        return encode_prompt(tokenizer, so_far + self.user_piece(history, user))

    def stop_tokens(self, tokenizer: Tokenizer) -> list[int]:
        return [tokenizer.eot_id]

    def remember(self, history: list[dict], user: str, reply: str) -> None:
        history.append({"text": self.user_piece(history, user)})
        history.append({"text": reply})


class ChatTemplate:
    """Chat models: turns rendered by :mod:`lanternlm.chat` (roles, ``<|end|>``, thinking).

    The reply is shown as generated (thinking markers included); only its answer goes
    into the history, as the format drops earlier turns' thinking anyway.
    """

    name = "chat"

    def __init__(self, system: str | None = None):
        self.system = system

    def messages(self, history: list[dict], user: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + history + [{"role": "user", "content": user}]

    def prompt_ids(self, tokenizer: Tokenizer, history: list[dict], user: str) -> list[int]:
        from .chat import render_for_generation

        return render_for_generation(self.messages(history, user), tokenizer)

    def stop_tokens(self, tokenizer: Tokenizer) -> list[int]:
        return default_stop_tokens(tokenizer)

    def remember(self, history: list[dict], user: str, reply: str) -> None:
        from .chat import parse_assistant

        _, answer = parse_assistant(reply)
        history.append({"role": "user", "content": user})
        history.append({"role": "assistant", "content": answer})


CHAT_FORMATS = {"plain": PlainCompletion, "chat": ChatTemplate}

CHAT_HELP = """commands:
  /reset               forget the conversation
  /temp X              temperature (0 = greedy)
  /top_k N, /top_p X, /min_p X, /penalty X, /seed N   sampling settings
  /max_tokens N        longest reply
  /preset NAME         one of: {presets}
  /settings            show the current settings
  /help                this text
  /quit                leave (so does end of input)
"""


@dataclasses.dataclass
class ChatSession:
    """The state of a terminal chat; :meth:`command` applies one ``/command`` line."""

    engine: Engine
    tokenizer: Tokenizer
    format: ChatFormat
    sampling: SamplingParams
    max_tokens: int = 200
    history: list[dict] = dataclasses.field(default_factory=list)

    SETTINGS = {"/temp": ("temperature", float), "/top_k": ("top_k", int), "/top_p": ("top_p", float),
                "/min_p": ("min_p", float), "/penalty": ("repetition_penalty", float),
                "/seed": ("seed", int)}

    def settings(self) -> str:
        s = self.sampling
        return (f"format={self.format.name} temperature={s.temperature} top_k={s.top_k} "
                f"top_p={s.top_p} min_p={s.min_p} repetition_penalty={s.repetition_penalty} "
                f"seed={s.seed} max_tokens={self.max_tokens}")

    def command(self, line: str) -> str | None:
        """Apply a command; return the text to show, or None to quit."""
        name, _, value = line.strip().partition(" ")
        value = value.strip()
        try:
            if name in ("/quit", "/exit"):
                return None
            if name == "/help":
                return CHAT_HELP.format(presets=", ".join(PRESETS))
            if name == "/reset":
                self.history.clear()
                return "(conversation forgotten)"
            if name == "/settings":
                return self.settings()
            if name == "/preset":
                self.sampling = preset(value).replace(seed=self.sampling.seed)
                return self.settings()
            if name == "/max_tokens":
                if int(value) < 1:
                    raise ValueError
                self.max_tokens = int(value)
                return self.settings()
            if name in self.SETTINGS:
                field, convert = self.SETTINGS[name]
                self.sampling = self.sampling.replace(**{field: convert(value)})
                return self.settings()
        except (ValueError, LanternError) as err:
            detail = str(err) if isinstance(err, LanternError) else f"{value!r} is not a valid value"
            return f"{name}: {detail}"
        return f"unknown command {name}; /help lists them"

    def reply(self, user: str, out: TextIO) -> str:
        """Generate the reply to ``user``, streaming it to ``out``; remember the exchange."""
        ids = self.format.prompt_ids(self.tokenizer, self.history, user)
        text = []
        for piece in stream_text(self.engine, self.tokenizer, [ids], max_tokens=self.max_tokens,
                                 sampling=self.sampling,
                                 stop_tokens=self.format.stop_tokens(self.tokenizer),
                                 truncate="left"):
            text.append(piece.text)
            out.write(piece.text)
            out.flush()
        reply = "".join(text)
        self.format.remember(self.history, user, reply)
        return reply


def chat_loop(session: ChatSession, lines: TextIO, out: TextIO, prompt: str = "> ") -> None:
    """Read lines from ``lines``, answer each on ``out``; ``/commands`` change the session.

    Long conversations keep working: the oldest tokens are dropped from the prompt when
    it outgrows the context window (the engine's ``truncate="left"``).
    """
    out.write(f"lantern chat ({session.format.name} format). /help for commands, /quit to leave.\n")
    while True:
        out.write(prompt)
        out.flush()
        line = lines.readline()
        if not line:
            out.write("\n")
            return
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            answer = session.command(line)
            if answer is None:
                return
            out.write(answer.rstrip("\n") + "\n")
            continue
        session.reply(line, out)
        out.write("\n")


def chat_command(run: str, *, sampling: SamplingParams, max_tokens: int = 200,
                 format: str = "plain", system: str | None = None, device: str | None = None,
                 dtype: str | None = None, lines: TextIO | None = None, out: TextIO | None = None) -> int:
    """``lantern chat``: an interactive chat with a run's model on the terminal (stdin/stdout
    unless other streams are given)."""
    if format not in CHAT_FORMATS:
        raise LanternError(f"--format {format!r}: choose one of {', '.join(CHAT_FORMATS)}")
    if system is not None and format != "chat":
        raise LanternError("--system needs --format chat (a base model has no system turn)")
    engine, tokenizer = load_engine(run, device, dtype)
    fmt = ChatTemplate(system) if format == "chat" else PlainCompletion()
    chat_loop(ChatSession(engine, tokenizer, fmt, sampling, max_tokens), lines or sys.stdin,
              out or sys.stdout)
    return 0

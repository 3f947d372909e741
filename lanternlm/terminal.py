"""Terminal front-ends: ``lantern generate`` and ``lantern chat``.

A leaf (nothing in the core imports it): it loads a run, asks :mod:`lanternlm.generate`
for text, and writes to the streams it is given, so tests drive it with scripted input.

``--show-probs`` makes the seed's point visible: a language model outputs a probability
for every token, and sampling picks one. For each step it prints the top candidates
under the model's raw distribution and after the sampling filters, and marks the pick.

The chat is built on a small :class:`ChatFormat` interface, the plug for conversation
templates: :class:`PlainCompletion` treats a base model's chat as one running text it
continues; :class:`ChatTemplate` renders turns with :mod:`lanternlm.chat` for chat models;
:class:`OwnTemplate` renders them with an imported model's own Hugging Face chat template
(:mod:`lanternlm.interop.hf_chat`).

Thinking (chat models): ``--reasoning`` sets the level (the system turn's ``Reasoning:``
line), ``--thinking-budget N`` makes the engine close a thinking segment after N tokens, and
the thinking is hidden unless ``--show-thinking`` (:class:`ThinkingFilter` does the hiding,
by token id, while the text streams).

Best-of-n (chat models): ``--best-of N --reward-model RM`` samples N answers and shows the
one the reward model scores highest (:func:`lanternlm.reward.best_of_n`), with every score.

Mishaps in a chat do not end it: a line that is not UTF-8 is named (its byte) and can be
typed again; Ctrl-C during a reply stops that reply (it is not kept in the conversation);
a reply that shows nothing (all hidden thinking) says so. Ctrl-C or end of input at the
prompt leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import sys
from typing import Protocol, Sequence, TextIO

from .chat import REASONING_LEVELS, ChatTokens, render_for_generation, split_reply
from .engine import Engine, TokenEvent
from .errors import LanternError
from .generate import TextPiece, complete, default_stop_tokens, encode_prompt, stream_text, thinking_budget
from .inspect.common import bar
from .run import Run
from .sampling import PRESETS, SamplingParams, preset
from .tokenizer import END_THINK, THINK, Tokenizer, check_text


# --------------------------------------------------------------------------- probabilities view


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
    labels = {t: tokenizer.token_label(t) for t in order}
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


# --------------------------------------------------------------------------- thinking display


class ThinkingFilter:
    """What to show of a streamed assistant turn: thinking hidden, or shown set apart.

    Decides by token id (the ``<|think|>`` and ``<|/think|>`` markers), so text that
    merely looks like a marker changes nothing. Shown thinking is bracketed by
    ``[thinking]`` and ``[/thinking]`` lines.

    >>> tok = Tokenizer([], special_tokens=["<|endoftext|>", "<|think|>", "<|/think|>"])
    >>> think, end = tok.special_id("<|think|>"), tok.special_id("<|/think|>")
    >>> pieces = [(think, "<|think|>"), (104, "h"), (end, "<|/think|>"), (111, "ok")]
    >>> hidden, shown = ThinkingFilter(tok, show=False), ThinkingFilter(tok, show=True)
    >>> "".join(hidden.text(t, s) for t, s in pieces)
    'ok'
    >>> "".join(shown.text(t, s) for t, s in pieces)
    '[thinking] h [/thinking]\\nok'
    """

    def __init__(self, tokenizer: Tokenizer, show: bool, inside: bool = False) -> None:
        self.think, self.end_think = tokenizer.special_tokens.get(THINK), tokenizer.special_tokens.get(END_THINK)
        self.show, self.inside = show, inside

    def text(self, token: int, text: str) -> str:
        """The part of ``text`` (decoded after ``token``) to show."""
        if token == self.think:
            self.inside = True
            return "[thinking] " if self.show else ""
        if token == self.end_think:
            self.inside = False
            return " [/thinking]\n" if self.show else ""
        return text if self.show or not self.inside else ""

    def piece(self, piece: TextPiece) -> str:
        return self.text(piece.event.token, piece.text)


# --------------------------------------------------------------------------- lantern generate


def generate_command(run: str, prompt: str, *, sampling: SamplingParams, max_tokens: int = 200,
                     stop: Sequence[str] = (), num: int = 1, show_probs: bool = False,
                     top: int = 5, truncate: str | None = None, bos: bool = True,
                     reasoning: str | None = None, system: str | None = None,
                     thinking_budget_tokens: int | None = None, show_thinking: bool = False,
                     device: str | None = None, dtype: str | None = None, best_of: int = 1,
                     reward_model: str | None = None, out: TextIO | None = None) -> int:
    """``lantern generate``: print the prompt and its completion(s) as they are generated.

    With ``reasoning`` (chat models) the prompt is the user's message of a one-turn chat
    (``system`` before it), the reply stops at ``<|end|>`` and its thinking is hidden
    unless ``show_thinking``; ``thinking_budget_tokens`` caps the thinking. ``best_of``
    answers scored by the ``reward_model`` run: the best one is shown.
    """
    out = out or sys.stdout
    check_best_of(best_of, reward_model)
    if best_of > 1 and (reasoning is None or num != 1 or show_probs or stop):
        raise LanternError("--best-of picks one chat answer: use it with --reasoning, without --num, "
                           "--show-probs or --stop")
    if num < 1:
        raise LanternError(f"--num {num}: must be >= 1")
    if show_probs and num != 1:
        raise LanternError("--show-probs shows one generation step by step: use it with --num 1")
    if reasoning is None and (system is not None or show_thinking):
        raise LanternError("--system and --show-thinking need --reasoning (a chat model's turn)")
    loaded = Run(run)
    engine, tokenizer = loaded.engine(device, dtype), loaded.tokenizer
    budget = thinking_budget(tokenizer, thinking_budget_tokens)
    if reasoning is not None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = render_for_generation(messages, tokenizer, reasoning)
        shown = ThinkingFilter(tokenizer, show_thinking)
        head = f"user: {prompt}\nassistant: "
    else:
        ids = encode_prompt(tokenizer, prompt, bos)
        shown, head = None, prompt
    if best_of > 1:
        session = ChatSession(engine, tokenizer, ChatTemplate(system, reasoning), sampling, max_tokens,
                              thinking_budget=thinking_budget_tokens, show_thinking=show_thinking,
                              best_of=best_of, reward_model=_reward_model(reward_model, device))
        out.write(head)
        session.best_reply(ids, out)
        out.write("\n")
        return 0
    if num > 1:
        results = complete(engine, tokenizer, [ids], n=num, max_tokens=max_tokens,
                           sampling=sampling, stop=stop, truncate=truncate, thinking=budget)
        for i, result in enumerate(results):
            text = result.text
            if shown is not None:
                thinking, answer = (tokenizer.decode(part).strip()
                                    for part in split_reply(result.tokens, ChatTokens.of(tokenizer)))
                text = f"[thinking] {thinking} [/thinking]\n{answer}" if show_thinking and thinking else answer
            out.write(f"── sample {i + 1} of {num} ({result.finish_reason}) ──\n{head}{text}\n")
        return 0
    pieces = stream_text(engine, tokenizer, [ids], max_tokens=max_tokens, sampling=sampling,
                         stop=stop, top_alternatives=top if show_probs else 0, truncate=truncate,
                         thinking=budget)
    text = []
    if not show_probs:
        out.write(head)
    for piece in pieces:
        text.append(piece.text)
        if show_probs:
            out.write(probs_table(tokenizer, piece.event))
        else:
            out.write(shown.piece(piece) if shown is not None else piece.text)
            out.flush()
    if show_probs:
        out.write(f"\n{head}{''.join(text)}")
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

    def remember(self, tokenizer: Tokenizer, history: list[dict], user: str, reply: str,
                 reply_ids: list[int]) -> None:
        """Add the exchange (the reply's text and the ids it came from) to ``history``."""


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

    def remember(self, tokenizer: Tokenizer, history: list[dict], user: str, reply: str,
                 reply_ids: list[int]) -> None:
        history.append({"text": self.user_piece(history, user)})
        history.append({"text": reply})


class ChatTemplate:
    """Chat models: turns rendered by :mod:`lanternlm.chat` (roles, ``<|end|>``, thinking).

    The reply is shown as generated (thinking markers included); only its answer goes
    into the history, as the format drops earlier turns' thinking anyway.
    """

    name = "chat"

    def __init__(self, system: str | None = None, reasoning: str | None = None):
        self.system = system
        self.reasoning = reasoning  # None: the system message's Reasoning line, else medium

    def messages(self, history: list[dict], user: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + history + [{"role": "user", "content": user}]

    def prompt_ids(self, tokenizer: Tokenizer, history: list[dict], user: str) -> list[int]:
        return render_for_generation(self.messages(history, user), tokenizer, self.reasoning)

    def stop_tokens(self, tokenizer: Tokenizer) -> list[int]:
        return default_stop_tokens(tokenizer)

    def remember(self, tokenizer: Tokenizer, history: list[dict], user: str, reply: str,
                 reply_ids: list[int]) -> None:
        _, answer = split_reply(reply_ids, ChatTokens.of(tokenizer))
        history.append({"role": "user", "content": user})
        history.append({"role": "assistant", "content": tokenizer.decode(answer).strip()})


class OwnTemplate:
    """Imported models with a chat template: turns rendered by the model's own template
    (as ``transformers`` renders it), the reply ending at its end-of-turn ids; the history
    holds the messages."""

    name = "template"

    def __init__(self, chat, system: str | None = None):
        self.chat, self.system = chat, system

    def prompt_ids(self, tokenizer: Tokenizer, history: list[dict], user: str) -> list[int]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return self.chat.prompt_ids(tokenizer, head + history + [{"role": "user", "content": user}])

    def stop_tokens(self, tokenizer: Tokenizer) -> list[int]:
        return list(self.chat.stop_ids)

    def remember(self, tokenizer: Tokenizer, history: list[dict], user: str, reply: str,
                 reply_ids: list[int]) -> None:
        history.append({"role": "user", "content": user})
        history.append({"role": "assistant", "content": reply.strip()})


CHAT_FORMATS = {"plain": PlainCompletion, "chat": ChatTemplate, "template": OwnTemplate}

CHAT_HELP = """commands:
  /reset               forget the conversation
  /temp X              temperature (0 = greedy)
  /top_k N, /top_p X, /min_p X, /penalty X, /seed N   sampling settings
  /max_tokens N        longest reply
  /reasoning LEVEL     none, low, medium or high (chat models)
  /budget N            thinking budget in tokens (none = no limit)
  /thinking on|off     show or hide the thinking
  /preset NAME         one of: {presets}
  /settings            show the current settings
  /help                this text
  /quit                leave (so do end of input and Ctrl-C at the prompt; Ctrl-C during a reply stops it)
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
    thinking_budget: int | None = None
    show_thinking: bool = False
    best_of: int = 1  # > 1: sample this many answers, show the one reward_model scores highest
    reward_model: object | None = None  # a lanternlm.reward.RewardModel

    SETTINGS = {"/temp": ("temperature", float), "/top_k": ("top_k", int), "/top_p": ("top_p", float),
                "/min_p": ("min_p", float), "/penalty": ("repetition_penalty", float),
                "/seed": ("seed", int)}

    def settings(self) -> str:
        s = self.sampling
        thinking = ""
        if isinstance(self.format, ChatTemplate):
            thinking = (f" reasoning={self.format.reasoning or 'default'} thinking_budget={self.thinking_budget}"
                        f" show_thinking={'on' if self.show_thinking else 'off'}")
        return (f"format={self.format.name} temperature={s.temperature} top_k={s.top_k} "
                f"top_p={s.top_p} min_p={s.min_p} repetition_penalty={s.repetition_penalty} "
                f"seed={s.seed} max_tokens={self.max_tokens}{thinking}")

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
            if name in ("/reasoning", "/budget", "/thinking"):
                return self.thinking_command(name, value)
            if name in self.SETTINGS:
                field, convert = self.SETTINGS[name]
                self.sampling = self.sampling.replace(**{field: convert(value)})
                return self.settings()
        except (ValueError, LanternError) as err:
            detail = str(err) if isinstance(err, LanternError) else f"{value!r} is not a valid value"
            return f"{name}: {detail}"
        return f"unknown command {name}; /help lists them"

    def thinking_command(self, name: str, value: str) -> str:
        """``/reasoning LEVEL``, ``/budget N|none``, ``/thinking on|off`` (chat format only)."""
        if not isinstance(self.format, ChatTemplate):
            return f"{name}: thinking needs a chat model (this one continues plain text)"
        if name == "/reasoning":
            if value not in REASONING_LEVELS:
                return f"{name}: choose one of {', '.join(REASONING_LEVELS)}"
            self.format.reasoning = value
        elif name == "/budget":
            if value.lower() == "none":
                self.thinking_budget = None
            elif value.isdigit():
                self.thinking_budget = int(value)
            else:
                return f"{name}: {value!r} is not a number of tokens (or none)"
        else:
            if value not in ("on", "off"):
                return f"{name}: say on or off"
            self.show_thinking = value == "on"
        return self.settings()

    def best_reply(self, ids: list[int], out: TextIO) -> list[int]:
        """Sample ``best_of`` answers to the prompt ``ids``, write the best-scored one (its
        thinking only with ``show_thinking``) and every score; return its ids."""
        from .reward import best_of_n

        [(best, scores, completions)] = best_of_n(
            self.engine, self.reward_model, self.tokenizer, [ids], self.best_of, max_tokens=self.max_tokens,
            sampling=self.sampling, thinking=thinking_budget(self.tokenizer, self.thinking_budget), truncate="left")
        thinking, answer = (self.tokenizer.decode(part).strip()
                            for part in split_reply(completions[best].tokens, ChatTokens.of(self.tokenizer)))
        if self.show_thinking and thinking:
            out.write(f"[thinking] {thinking} [/thinking]\n")
        out.write(answer)
        self._say_if_nothing_shown(answer, bool(thinking) and not self.show_thinking, out)
        listed = ", ".join(f"{'*' if i == best else ''}{score:.3f}" for i, score in enumerate(scores))
        out.write(f"\n(best of {len(scores)} by reward; scores {listed})")
        return completions[best].tokens

    def reply(self, user: str, out: TextIO) -> str:
        """Generate the reply to ``user``, streaming it to ``out``; remember the exchange.

        Chat models' thinking is shown only with ``show_thinking`` (the history never keeps it).
        """
        ids = self.format.prompt_ids(self.tokenizer, self.history, user)
        chat = isinstance(self.format, ChatTemplate)
        if chat and self.best_of > 1:
            reply_ids = self.best_reply(ids, out)
            reply = self.tokenizer.decode(reply_ids)
            self.format.remember(self.tokenizer, self.history, user, reply, reply_ids)
            return reply
        shown = ThinkingFilter(self.tokenizer, self.show_thinking) if chat else None
        text, reply_ids, visible = [], [], []
        pieces = stream_text(self.engine, self.tokenizer, [ids], max_tokens=self.max_tokens, sampling=self.sampling,
                             stop_tokens=self.format.stop_tokens(self.tokenizer), truncate="left",
                             thinking=thinking_budget(self.tokenizer, self.thinking_budget) if chat else None)
        with contextlib.closing(pieces):  # Ctrl-C in the middle ends the generation here
            for piece in pieces:
                text.append(piece.text)
                if piece.event.finish_reason != "stop":  # a stop token is not part of the reply
                    reply_ids.append(piece.event.token)
                visible.append(shown.piece(piece) if shown is not None else piece.text)
                out.write(visible[-1])
                out.flush()
        reply = "".join(text)
        hidden = chat and not self.show_thinking and bool(split_reply(reply_ids, ChatTokens.of(self.tokenizer))[0])
        self._say_if_nothing_shown("".join(visible), hidden, out)
        self.format.remember(self.tokenizer, self.history, user, reply, reply_ids)
        return reply

    @staticmethod
    def _say_if_nothing_shown(shown: str, thinking_hidden: bool, out: TextIO) -> None:
        """A reply that shows nothing (all hidden thinking, or empty) says so instead of an empty line."""
        if not shown.strip():
            out.write("(the reply was all thinking, hidden: /thinking on shows it)" if thinking_hidden
                      else "(the model replied nothing)")


def chat_loop(session: ChatSession, lines: TextIO, out: TextIO, prompt: str = "> ") -> None:
    """Read lines from ``lines``, answer each on ``out``; ``/commands`` change the session.

    Long conversations keep working: the oldest tokens are dropped from the prompt when
    it outgrows the context window (the engine's ``truncate="left"``).
    """
    out.write(f"lantern chat ({session.format.name} format). /help for commands, /quit to leave.\n")
    while True:
        out.write(prompt)
        out.flush()
        try:
            line = lines.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt leaves, like end of input
            line = ""
        if not line:
            out.write("\n")
            return
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            check_text(line, "that line")
        except LanternError as err:  # a line that is not UTF-8: say which byte, keep the chat
            out.write(f"{err}; type it again\n")
            continue
        if line.startswith("/"):
            answer = session.command(line)
            if answer is None:
                return
            out.write(answer.rstrip("\n") + "\n")
            continue
        try:
            session.reply(line, out)
        except KeyboardInterrupt:  # Ctrl-C during a reply stops the reply, not the chat
            out.write("\n(reply stopped; it is not kept in the conversation)")
        out.write("\n")


def chat_command(run: str, *, sampling: SamplingParams, max_tokens: int = 200,
                 format: str | None = None, system: str | None = None, reasoning: str | None = None,
                 thinking_budget_tokens: int | None = None, show_thinking: bool = False,
                 device: str | None = None, dtype: str | None = None, best_of: int = 1,
                 reward_model: str | None = None, lines: TextIO | None = None, out: TextIO | None = None) -> int:
    """``lantern chat``: an interactive chat with a run's model on the terminal (stdin/stdout
    unless other streams are given). The format follows the run (chat turns for a chat
    model, one running text for a base model) unless ``format`` says otherwise."""
    from .interop.hf_chat import hf_chat

    loaded = Run(run)
    own = hf_chat(loaded.record, loaded.tokenizer)
    format = format or ("chat" if loaded.chat else "template" if own else "plain")
    if format not in CHAT_FORMATS:
        raise LanternError(f"--format {format!r}: choose one of {', '.join(CHAT_FORMATS)}")
    if format == "template" and own is None:
        raise LanternError(f"--format template: {run} has no chat template of its own (an imported model's, "
                           f"read by jinja2 from the [hf] extra)")
    if format != "chat" and (reasoning is not None or thinking_budget_tokens is not None or show_thinking
                             or (system is not None and format != "template")):
        raise LanternError(f"--system, --reasoning, --thinking-budget and --show-thinking need the chat "
                           f"format (--system also the template format): {run} is a {loaded.stage or 'bare'} "
                           f"model, which {'talks through its own template' if own else 'continues plain text'}")
    if thinking_budget_tokens is not None and thinking_budget_tokens < 0:
        raise LanternError(f"--thinking-budget {thinking_budget_tokens}: must be >= 0 tokens")
    check_best_of(best_of, reward_model)
    if best_of > 1 and format != "chat":
        raise LanternError("--best-of picks among chat answers: it needs the chat format")
    engine, tokenizer = loaded.engine(device, dtype), loaded.tokenizer
    fmt = (ChatTemplate(system, reasoning) if format == "chat" else OwnTemplate(own, system) if format == "template"
           else PlainCompletion())
    chat_loop(ChatSession(engine, tokenizer, fmt, sampling, max_tokens,
                          thinking_budget=thinking_budget_tokens, show_thinking=show_thinking,
                          best_of=best_of, reward_model=_reward_model(reward_model, device) if best_of > 1 else None),
              lines or _stdin_lines(), out or sys.stdout)
    return 0


def _stdin_lines() -> TextIO:
    """Standard input for the chat: a line that is not UTF-8 arrives with its bytes escaped
    (``surrogateescape``) for :func:`chat_loop` to name, instead of ending the session."""
    if not hasattr(sys.stdin, "buffer"):  # already text (a test's StringIO)
        return sys.stdin
    return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")


def check_best_of(best_of: int, reward_model: str | None) -> None:
    """``--best-of N`` needs N >= 1, and a ``--reward-model`` when N > 1 (and only then)."""
    if best_of < 1:
        raise LanternError(f"--best-of {best_of}: must be >= 1")
    if (best_of > 1) != (reward_model is not None):
        raise LanternError("--best-of N (N > 1) and --reward-model RM go together: the reward model "
                           "picks among the N answers")


def _reward_model(run: str | None, device: str | None):
    from .reward import RewardModel

    return RewardModel(run, device) if run is not None else None

"""The conversation format: messages -> token ids + loss mask, and back.

A conversation is a list of messages ``{"role": "system"|"user"|"assistant",
"content": str}``; an assistant message may also carry ``"thinking": str``. On disk
it is one JSON object per line: ``{"messages": [...]}``.

Rendering (``<|x|>`` are the tokenizer's reserved special tokens)::

    <|endoftext|>                                   BOS, as before every pretraining document
                                                    (an imported tokenizer's own begin-of-text)
    <|system|>Reasoning: high\\nBe brief.<|end|>     always present; the level line comes first
    <|user|>How many r's are in strawberry?<|end|>
    <|assistant|><|think|>s t r a w ...<|/think|>The letter r appears 3 times...<|end|>

Rules, decided once and used by training, generation and evaluation alike:

* **Reasoning level.** The system turn always starts with a line ``Reasoning: LEVEL``
  (``none``, ``low``, ``medium`` or ``high``). The level is the ``reasoning`` argument
  if given, else the ``Reasoning:`` line of the conversation's system message, else
  ``medium``. Any ``Reasoning:`` line in the system message is replaced, and the rest
  of the system message follows the level line.
* **Every assistant turn has a thinking segment** ``<|think|>...<|/think|>``. It holds
  the message's thinking only in the *final* assistant turn (the last message) at
  level low/medium/high; everywhere else it is empty: earlier turns' thinking is
  dropped from the history, and level ``none`` means no thinking.
* **Loss mask** (1 = trained): the answer and closing ``<|end|>`` of every assistant
  turn, so the model learns to answer and to stop; plus, in the final assistant turn
  at a thinking level, ``<|think|>``, the thinking and ``<|/think|>`` (so the model
  learns to open, write and close its thinking, even when the thinking is empty).
  An empty segment we force (history, level none) is context, mask 0, like
  ``<|assistant|>`` and every system and user token.
* **Generation** (:func:`render_for_generation`) renders the conversation (ending with a
  user turn) and opens the assistant turn: it ends right after ``<|assistant|>`` at a
  thinking level (the model writes ``<|think|>`` itself), and after
  ``<|assistant|><|think|><|/think|>`` at level ``none`` (thinking closed for it). So the
  prompt is always a prefix of the rendering of the finished conversation.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import atomic_write_text
from .errors import LanternError
from .tokenizer import ASSISTANT, END, END_THINK, SYSTEM, THINK, USER

ROLES = ("system", "user", "assistant")
CHAT_MARKERS = (SYSTEM, USER, ASSISTANT, END, THINK, END_THINK)
"""The special tokens a conversation is rendered with, besides the tokenizer's BOS."""
REASONING_LEVELS = ("none", "low", "medium", "high")
THINKING_LEVELS = REASONING_LEVELS[1:]  # the levels with a thinking segment
DEFAULT_REASONING = "medium"
_REASONING_LINE = re.compile(r"^[ \t]*Reasoning:[ \t]*(\S*)[ \t]*$\n?", re.MULTILINE)


@dataclass(frozen=True)
class ChatTokens:
    """The ids of the chat special tokens in one tokenizer."""

    bos: int
    system: int
    user: int
    assistant: int
    end: int
    think: int
    end_think: int

    @classmethod
    def of(cls, tokenizer) -> "ChatTokens":
        """The ids in ``tokenizer``; BOS is its prompt start (``<|endoftext|>`` in ours, an
        imported tokenizer's own begin-of-text token where it has one)."""
        return cls(tokenizer.bos_id, *(tokenizer.special_id(name) for name in CHAT_MARKERS))


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: token ids and a same-length 0/1 loss mask."""

    ids: list[int]
    mask: list[int]
    reasoning: str

    def targets(self) -> list[int]:
        """Next-token targets for inputs ``ids[:-1]``: ``ids[1:]`` where trained, else -1.

        >>> Rendered([5, 6, 7, 8], [0, 0, 1, 1], "none").targets()
        [-1, 7, 8]
        """
        return [t if m else -1 for t, m in zip(self.ids[1:], self.mask[1:])]


# --------------------------------------------------------------------------- validation


def validate(messages: Any, where: str = "conversation") -> list[dict]:
    """Check a conversation's shape; return it. Errors name ``where`` and the message index.

    An optional system message comes first; then user and assistant alternate, starting
    with the user. Content is a string; ``thinking`` (a string) only on assistant turns.

    >>> validate([{"role": "user", "content": "hi"}])
    [{'role': 'user', 'content': 'hi'}]
    """
    if not isinstance(messages, list) or not messages:
        raise LanternError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}")
    for i, msg in enumerate(messages):
        at = f"{where}: message {i}"
        if not isinstance(msg, dict):
            raise LanternError(f"{at}: expected an object with 'role' and 'content', got {msg!r:.80}")
        unknown = set(msg) - {"role", "content", "thinking"}
        if unknown:
            raise LanternError(f"{at}: unknown fields {sorted(unknown)} (allowed: role, content, thinking)")
        role = msg.get("role")
        if role not in ROLES:
            raise LanternError(f"{at}: unknown role {role!r}; use one of {ROLES}")
        if not isinstance(msg.get("content"), str):
            raise LanternError(f"{at}: 'content' must be a string, got {type(msg.get('content')).__name__}")
        if "thinking" in msg:
            if role != "assistant":
                raise LanternError(f"{at}: only assistant messages may have 'thinking' (this one is {role})")
            if not isinstance(msg["thinking"], str):
                raise LanternError(f"{at}: 'thinking' must be a string, got {type(msg['thinking']).__name__}")
        if role == "system" and i != 0:
            raise LanternError(f"{at}: a system message may only come first")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns:
        raise LanternError(f"{where}: a system message alone is not a conversation; add a user message")
    offset = len(messages) - len(turns)
    for k, msg in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if msg["role"] != expected:
            raise LanternError(f"{where}: message {k + offset}: expected a {expected} message "
                               f"(user and assistant alternate, starting with user), got {msg['role']}")
    return messages


def reasoning_of(messages: Sequence[dict], reasoning: str | None = None) -> str:
    """The level that applies: ``reasoning`` if given, else the system line, else medium.

    >>> reasoning_of([{"role": "system", "content": "Be brief.\\nReasoning: high"}])
    'high'
    >>> reasoning_of([{"role": "user", "content": "hi"}], reasoning="none")
    'none'
    """
    if reasoning is None and messages and messages[0]["role"] == "system":
        found = _REASONING_LINE.findall(messages[0]["content"])
        if found:
            reasoning = found[-1].lower()
            if reasoning not in REASONING_LEVELS:
                raise LanternError(f"message 0: unknown level in 'Reasoning: {found[-1]}'; "
                                   f"use one of {REASONING_LEVELS}")
    reasoning = DEFAULT_REASONING if reasoning is None else reasoning
    if reasoning not in REASONING_LEVELS:
        raise LanternError(f"unknown reasoning level {reasoning!r}; use one of {REASONING_LEVELS}")
    return reasoning


def system_text(messages: Sequence[dict], reasoning: str) -> str:
    """The system turn's text: the level line, then the system message without its own.

    >>> system_text([{"role": "system", "content": "Reasoning: low\\nBe sarcastic."}], "high")
    'Reasoning: high\\nBe sarcastic.'
    """
    rest = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    rest = _REASONING_LINE.sub("", rest).strip()
    return f"Reasoning: {reasoning}" + (f"\n{rest}" if rest else "")


# --------------------------------------------------------------------------- rendering


def render(messages: list[dict], tokenizer, reasoning: str | None = None) -> Rendered:
    """Render a conversation to ids and loss mask (see the module docstring for the rules)."""
    validate(messages)
    level = reasoning_of(messages, reasoning)
    t = ChatTokens.of(tokenizer)
    ids: list[int] = []
    mask: list[int] = []

    def add(tokens: list[int], trained: int) -> None:
        ids.extend(tokens)
        mask.extend([trained] * len(tokens))

    add([t.bos, t.system, *tokenizer.encode(system_text(messages, level)), t.end], 0)
    last = len(messages) - 1
    for i, msg in enumerate(messages):
        if msg["role"] == "user":
            add([t.user, *tokenizer.encode(msg["content"]), t.end], 0)
        elif msg["role"] == "assistant":
            add([t.assistant], 0)
            if i == last and level != "none":
                add([t.think, *tokenizer.encode(msg.get("thinking", "")), t.end_think], 1)
            else:
                add([t.think, t.end_think], 0)
            add([*tokenizer.encode(msg["content"]), t.end], 1)
    return Rendered(ids, mask, level)


def render_for_generation(messages: list[dict], tokenizer, reasoning: str | None = None) -> list[int]:
    """The prompt for the next assistant turn: ends exactly where the model continues.

    ``messages`` must end with a user message. The prompt ends after ``<|assistant|>``
    (thinking levels) or after ``<|assistant|><|think|><|/think|>`` (level ``none``).
    """
    validate(messages)
    if messages[-1]["role"] != "user":
        raise LanternError(f"conversation: message {len(messages) - 1}: generation continues after a "
                           f"user message, but the last message is from the {messages[-1]['role']}")
    rendered = render(messages, tokenizer, reasoning)
    t = ChatTokens.of(tokenizer)
    opening = [t.assistant] + ([t.think, t.end_think] if rendered.reasoning == "none" else [])
    return rendered.ids + opening


def split_reply(ids: Sequence[int], tokens: ChatTokens) -> tuple[list[int], list[int]]:
    """A generated assistant turn as ``(thinking ids, answer ids)``, markers removed: the
    one splitter every reader of a reply uses (terminal, evaluation, glass box, tasks).

    ``ids`` are what the model wrote after the prompt. Everything from ``<|end|>`` on is
    ignored. The thinking ends at the first ``<|/think|>``, which may close a segment the
    prompt opened (level ``none`` closes it in the prompt, so its replies are all answer);
    a ``<|think|>`` never closed (a reply cut off) makes the rest thinking; a reply
    without markers is all answer.

    >>> t = ChatTokens(bos=0, system=1, user=2, assistant=3, end=4, think=5, end_think=6)
    >>> split_reply([5, 10, 11, 6, 12, 4, 99], t)
    ([10, 11], [12])
    >>> split_reply([12, 13], t), split_reply([5, 10, 11], t), split_reply([10, 6, 12], t)
    (([], [12, 13]), ([10, 11], []), ([10], [12]))
    """
    ids = list(ids)
    if tokens.end in ids:
        ids = ids[:ids.index(tokens.end)]
    if tokens.end_think in ids:
        k = ids.index(tokens.end_think)
        thinking, answer = ids[:k], ids[k + 1:]
    elif tokens.think in ids:
        thinking, answer = ids[ids.index(tokens.think):], []
    else:
        thinking, answer = [], ids
    return [t for t in thinking if t != tokens.think], answer


def well_formed(reply: Sequence[int], tokens: ChatTokens, level: str, finished: bool) -> bool:
    """Whether a generated assistant turn has the shape of the format: it ``finished`` at
    ``<|end|>`` (``reply`` without it), holds no other chat marker, has a non-empty answer
    and, at a thinking level (the prompt ends after ``<|assistant|>``), opens with one
    non-empty thinking segment ``<|think|> ... <|/think|>``; at level ``none`` (the prompt
    closed the segment) no thinking marker at all. RL's small format reward reads it.

    >>> t = ChatTokens(bos=0, system=1, user=2, assistant=3, end=4, think=5, end_think=6)
    >>> well_formed([5, 10, 6, 12], t, "high", True), well_formed([12], t, "none", True)
    (True, True)
    >>> well_formed([5, 10, 6, 12], t, "high", False), well_formed([5, 6, 12], t, "high", True)
    (False, False)
    >>> well_formed([10, 6, 12], t, "low", True), well_formed([5, 10, 6], t, "low", True)
    (False, False)
    >>> well_formed([5, 10, 6, 12], t, "none", True), well_formed([5, 10, 6, 5, 12], t, "low", True)
    (False, False)
    """
    reply = list(reply)
    if not finished or any(t in (tokens.bos, tokens.system, tokens.user, tokens.assistant, tokens.end)
                           for t in reply):
        return False
    markers = [i for i, t in enumerate(reply) if t in (tokens.think, tokens.end_think)]
    if level == "none":
        return not markers and bool(reply)
    return (len(markers) == 2 and reply[0] == tokens.think and reply[markers[1]] == tokens.end_think
            and markers[1] > 1 and markers[1] < len(reply) - 1)


# --------------------------------------------------------------------------- viewing


def show(rendered: Rendered, tokenizer, color: bool = True) -> str:
    """The rendered text with the mask over it: trained tokens green, context grey.

    Without colour, trained stretches are wrapped in ``⟦...⟧``.

    >>> from lanternlm.tokenizer import Tokenizer
    >>> tok = Tokenizer([])
    >>> print(show(render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    ...                   tok, reasoning="none"), tok, color=False))
    <|endoftext|><|system|>Reasoning: none<|end|><|user|>hi<|end|><|assistant|><|think|><|/think|>⟦yo<|end|>⟧
    """
    runs: list[tuple[int, list[int]]] = []
    for token, trained in zip(rendered.ids, rendered.mask):
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    out = []
    for trained, tokens in runs:
        text = tokenizer.decode(tokens)
        if color:
            out.append(f"\x1b[{'32' if trained else '90'}m{text}\x1b[0m")
        else:
            out.append(f"⟦{text}⟧" if trained else text)
    return "".join(out)


# --------------------------------------------------------------------------- files


def load_jsonl(path: str | os.PathLike) -> list[list[dict]]:
    """Read a chat JSONL file (one ``{"messages": [...]}`` per line; blank lines skipped).

    Errors name the file, the line and the message index.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise LanternError(f"{path}: cannot read chat data ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise LanternError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    conversations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LanternError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict) or "messages" not in record:
            raise LanternError(f"{where}: expected an object with a 'messages' list")
        conversations.append(validate(record["messages"], where))
    return conversations


def write_jsonl(path: str | os.PathLike, conversations: Sequence[list[dict]]) -> None:
    """Write conversations as chat JSONL (validated first; written atomically)."""
    lines = []
    for k, messages in enumerate(conversations):
        validate(messages, f"conversation {k}")
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))

"""Preference pairs: a prompt, a preferred (chosen) and a non-preferred (rejected) answer.

What DPO and the reward model learn from. One JSON object per line, in any of the layouts
people have:

- **plain text**: ``{"prompt": str, "chosen": str, "rejected": str}``, optionally with
  ``"system": str`` and ``"reasoning": "none"|"low"|"medium"|"high"``;
- **conversational** (TRL's, ultrafeedback_binarized's): ``prompt`` a message list (system
  and earlier turns included, ending with a user message), ``chosen`` and ``rejected``
  lists holding the assistant answer (a message may carry ``"thinking"``); a ``chosen`` list
  that repeats the prompt first is accepted (the shared start is dropped);
- **implicit prompt**: no ``prompt``, ``chosen`` and ``rejected`` full conversations that
  differ only in their last assistant message.

Every pair becomes a :class:`Pair` (the prompt as validated chat messages, the two answers
as assistant messages); :func:`render_pair` renders both with :func:`lanternlm.chat.render`,
so the answer (thinking segment and reply, up to ``<|end|>``) is exactly the masked-in
part, as in fine-tuning. Errors name the file and the line; :func:`write_pairs` writes
atomically, so a bad pair never leaves a half-written file.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..chat import REASONING_LEVELS, Rendered, render, validate
from ..config import atomic_write_text
from ..errors import LanternError

@dataclass(frozen=True)
class Pair:
    """A prompt (chat messages ending with a user turn) and two assistant answers."""

    prompt: list[dict]
    chosen: dict
    rejected: dict
    reasoning: str | None = None  # the level, when not in the prompt's system line

    def record(self) -> dict[str, Any]:
        """The conversational JSON object this pair is written as."""
        out = {"prompt": self.prompt, "chosen": [self.chosen], "rejected": [self.rejected]}
        if self.reasoning is not None:
            out["reasoning"] = self.reasoning
        return out


def _answer(value: Any, where: str) -> dict:
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        message = {"role": value.get("role", "assistant"), **{k: v for k, v in value.items() if k != "role"}}
        validate([{"role": "user", "content": ""}, message], where)
        if message["role"] != "assistant":
            raise LanternError(f"{where}: the answer must be an assistant message, got role {message['role']!r}")
        return message
    raise LanternError(f"{where}: expected a string or one assistant message, got {value!r:.80}")


def _split_implicit(chosen: list, rejected: list, where: str) -> tuple[list[dict], list, list]:
    """The shared start of two conversations as the prompt, and what follows in each."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise LanternError(f"{where}: 'chosen' and 'rejected' share no prompt; give a 'prompt' field")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def parse_pair(record: Any, where: str) -> Pair:
    """A :class:`Pair` from one JSON object in any layout of the module docstring.

    >>> parse_pair({"prompt": "2+2?", "chosen": "4", "rejected": "5", "reasoning": "none"}, "x").chosen
    {'role': 'assistant', 'content': '4'}
    >>> p = parse_pair({"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    ...                 "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}]}, "x")
    >>> p.prompt, p.rejected["content"]
    ([{'role': 'user', 'content': 'hi'}], 'go')
    """
    if not isinstance(record, dict):
        raise LanternError(f"{where}: expected a JSON object with 'prompt', 'chosen' and 'rejected'")
    missing = [key for key in ("chosen", "rejected") if key not in record]
    if missing:
        raise LanternError(f"{where}: missing field(s) {missing}")
    reasoning = record.get("reasoning")
    if reasoning is not None and reasoning not in REASONING_LEVELS:
        raise LanternError(f"{where}: 'reasoning' is {reasoning!r}; use one of {REASONING_LEVELS}")
    chosen, rejected = record["chosen"], record["rejected"]
    if "prompt" not in record:
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise LanternError(f"{where}: without 'prompt', 'chosen' and 'rejected' must be conversations "
                               f"(message lists) that share their start")
        prompt, chosen, rejected = _split_implicit(chosen, rejected, where)
    else:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, list):
            raise LanternError(f"{where}: 'prompt' must be a string or a message list, got {type(prompt).__name__}")

        def after_prompt(answer: Any) -> Any:  # a conversation that repeats the prompt first
            repeats = isinstance(answer, list) and len(answer) > len(prompt) and answer[:len(prompt)] == prompt
            return answer[len(prompt):] if repeats else answer

        chosen, rejected = after_prompt(chosen), after_prompt(rejected)
    system = record.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise LanternError(f"{where}: 'system' must be a string")
        if prompt and isinstance(prompt[0], dict) and prompt[0].get("role") == "system":
            raise LanternError(f"{where}: both a 'system' field and a system message in 'prompt'; keep one")
        prompt = [{"role": "system", "content": system}, *prompt]
    validate(prompt, f"{where}: prompt")
    if prompt[-1]["role"] != "user":
        raise LanternError(f"{where}: the prompt must end with a user message, not {prompt[-1]['role']}")
    return Pair(prompt, _answer(chosen, f"{where}: chosen"), _answer(rejected, f"{where}: rejected"), reasoning)


def _lines(path: Path) -> list[str]:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8").splitlines()
    except OSError as err:
        raise LanternError(f"{path}: cannot read preference pairs ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise LanternError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def load_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read a preference JSONL file (``.gz`` too; blank lines skipped). Errors name the
    file and line; a file without any pair is an error."""
    path = Path(path)
    pairs = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LanternError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
        pairs.append(parse_pair(record, where))
    if not pairs:
        raise LanternError(f"{path}: no preference pair in the file")
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Sequence[Pair]) -> None:
    """Write pairs as conversational preference JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(p.record(), ensure_ascii=False) + "\n" for p in pairs))


def render_pair(pair: Pair, tokenizer) -> tuple[Rendered, Rendered]:
    """The chosen and the rejected conversation rendered (ids + loss mask on the answer)."""
    return (render([*pair.prompt, pair.chosen], tokenizer, pair.reasoning),
            render([*pair.prompt, pair.rejected], tokenizer, pair.reasoning))

"""An imported model's own chat template, rendered as ``transformers`` renders it.

A Hugging Face chat model carries its conversation format as a Jinja template
(``chat_template`` in ``tokenizer_config.json``, or ``chat_template.jinja``); ``lantern
import`` keeps it in the run record with the tokens it names (``bos_token``,
``eos_token``) and the ids that end a reply (``generation_config.json``'s
``eos_token_id``). :class:`HFChat` renders a conversation with it the way
``apply_chat_template`` does — a sandboxed Jinja environment with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception`` and
``strftime_now``, a ``tojson`` that keeps non-ASCII text — and encodes the text with its
special-token strings read as their ids. ``lantern chat`` on an imported run talks through
it; without a template (or without ``jinja2``, which comes with the ``[hf]`` extra) the
chat continues plain text.

>>> chat = HFChat("{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
...               "{% if add_generation_prompt %}<assistant>{% endif %}", {"eos_token": "</s>"}, [2])
>>> chat.render([{"role": "user", "content": "Hi"}])
'<user>Hi</s><assistant>'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from ..errors import LanternError

TEMPLATE_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")  # what templates may name


@dataclass(frozen=True)
class HFChat:
    """A chat template, the special-token strings it may name, and the ids that end a reply."""

    template: str
    tokens: dict[str, str]
    stop_ids: list[int]

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the template writes it (raises :class:`LanternError` on a
        template error or a ``raise_exception`` in it, e.g. roles out of order)."""
        try:
            from jinja2.exceptions import TemplateError
        except ImportError:
            raise LanternError("the model's chat template needs jinja2: pip install 'lanternlm[hf]'") from None
        try:
            return _compile(self.template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                  **self.tokens)
        except TemplateError as err:
            raise LanternError(f"the model's chat template refused this conversation: {err}") from None

    def prompt_ids(self, tokenizer, messages: Sequence[dict]) -> list[int]:
        """The ids of :meth:`render` (its special-token strings become their ids)."""
        return tokenizer.encode(self.render(messages), allowed_special="all")


def hf_chat(record: dict[str, Any], tokenizer) -> HFChat | None:
    """The chat template of an imported run's record (``record["hf"]``), or None without
    one or without ``jinja2``. Stop ids: the source's ``eos_token_id`` s, else the id of its
    ``eos_token``, else the tokenizer's end of text."""
    hf = record.get("hf") or {}
    template = hf.get("chat_template")
    if not isinstance(template, str) or not template.strip():
        return None
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return None
    tokens = {name: hf[name] for name in TEMPLATE_TOKENS if isinstance(hf.get(name), str)}
    stops = [i for i in hf.get("eos_token_ids") or [] if isinstance(i, int) and 0 <= i < tokenizer.vocab_size]
    if not stops and tokens.get("eos_token") in tokenizer.special_tokens:
        stops = [tokenizer.special_tokens[tokens["eos_token"]]]
    return HFChat(template, tokens, stops or [tokenizer.eot_id])


def template_of(tokenizer_config: dict, folder) -> str | None:
    """A model folder's chat template: ``tokenizer_config.json``'s ``chat_template`` (a
    string, or a list of named ones: the ``default``), else ``chat_template.jinja``, else
    ``chat_template.json``'s."""
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return template
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        found = json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
        return found if isinstance(found, str) else None
    return None


def _compile(template: str):
    from jinja2 import ext
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env.from_string(template)

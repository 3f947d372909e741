"""Our conversation format (:mod:`lanternlm.chat`) as a Jinja ``chat_template``.

Hugging Face's ``apply_chat_template`` (and vLLM, llama.cpp, Ollama, LM Studio, which read
the same template) renders text that its tokenizer then encodes; this template renders
exactly the text of :func:`lanternlm.chat.render`, so the ids are ours, at every reasoning
level. The level is the template variable ``reasoning`` (``apply_chat_template(...,
reasoning="high")``; ``reasoning_effort`` is read too, the name OpenAI's API uses), else
the system message's ``Reasoning:`` line, else ``medium``, as in :func:`lanternlm.chat.reasoning_of`.
An assistant message's thinking is its ``thinking`` field (or ``reasoning_content``).

The conversation opens with the tokenizer's BOS (:func:`chat_template`): ``<|endoftext|>``
in ours (:data:`CHAT_TEMPLATE`), an imported tokenizer's own begin-of-text token in a chat
run fine-tuned from it.

The one difference: Hugging Face always reads special-token strings (``<|end|>``) inside
message text as special tokens, where :func:`lanternlm.chat.render` encodes them as text.
"""

from __future__ import annotations

from ..chat import DEFAULT_REASONING, REASONING_LEVELS
from ..tokenizer import ASSISTANT, END, END_THINK, EOT, SYSTEM, THINK, USER


def chat_template(bos: str = EOT) -> str:
    """The Jinja source for a tokenizer whose prompts start with the special token ``bos``."""
    return _TEMPLATE.replace(_BOS, bos.replace("\\", "\\\\").replace("'", "\\'"))


_BOS = "\x00BOS\x00"  # placeholder in the source below
# The system message's "Reasoning:" lines are found as chat._REASONING_LINE finds them: a
# line that is "Reasoning:" and one word, with spaces or tabs around; they are dropped and
# the last one gives the level. Jinja has no regex, so this splits lines and strips.
_TEMPLATE = (
    "{#- lanternlm chat format (lanternlm/chat.py); variable: reasoning = none|low|medium|high -#}\n"
    "{%- set ns = namespace(level=none, kept=[]) -%}\n"
    "{%- if messages and messages[0]['role'] == 'system' -%}\n"
    "  {%- for line in messages[0]['content'].split('\\n') -%}\n"
    "    {%- set stripped = line.strip(' \\t') -%}\n"
    "    {%- set word = stripped[10:].strip(' \\t') -%}\n"
    "    {%- if stripped.startswith('Reasoning:') and (word == '' or word.split() == [word]) -%}\n"
    "      {%- set ns.level = word.lower() -%}\n"
    "    {%- else -%}\n"
    "      {%- set ns.kept = ns.kept + [line] -%}\n"
    "    {%- endif -%}\n"
    "  {%- endfor -%}\n"
    "{%- endif -%}\n"
    "{%- if reasoning is defined and reasoning is not none -%}{%- set level = reasoning -%}\n"
    "{%- elif reasoning_effort is defined and reasoning_effort is not none -%}{%- set level = reasoning_effort -%}\n"
    "{%- elif ns.level is not none -%}{%- set level = ns.level -%}\n"
    f"{{%- else -%}}{{%- set level = '{DEFAULT_REASONING}' -%}}{{%- endif -%}}\n"
    f"{{%- if level not in {list(REASONING_LEVELS)!r} -%}}\n"
    "  {{- raise_exception('unknown reasoning level ' ~ level ~ '; use none, low, medium or high') -}}\n"
    "{%- endif -%}\n"
    "{%- set rest = ns.kept | join('\\n') -%}\n"
    "{%- set rest = rest.strip() -%}\n"
    f"{{{{- '{_BOS}{SYSTEM}Reasoning: ' ~ level -}}}}\n"
    "{%- if rest -%}{{- '\\n' ~ rest -}}{%- endif -%}\n"
    f"{{{{- '{END}' -}}}}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message['role'] == 'user' -%}\n"
    f"    {{{{- '{USER}' ~ message['content'] ~ '{END}' -}}}}\n"
    "  {%- elif message['role'] == 'assistant' -%}\n"
    f"    {{{{- '{ASSISTANT}{THINK}' -}}}}\n"
    "    {%- if loop.last and level != 'none' -%}\n"
    "      {{- message.get('thinking') or message.get('reasoning_content') or '' -}}\n"
    "    {%- endif -%}\n"
    f"    {{{{- '{END_THINK}' ~ message['content'] ~ '{END}' -}}}}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    f"  {{{{- '{ASSISTANT}' -}}}}\n"
    f"  {{%- if level == 'none' -%}}{{{{- '{THINK}{END_THINK}' -}}}}{{%- endif -%}}\n"
    "{%- endif -%}\n"
)

CHAT_TEMPLATE = chat_template(EOT)
"""The Jinja source for our tokenizers; ``lantern export --format hf`` writes it into
``tokenizer_config.json``."""

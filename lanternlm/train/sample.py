"""``lantern sample RUN``: continuations of a prompt from a base (pretrained) checkpoint.

Generation goes through the one engine (:mod:`lanternlm.engine`, text rules in
:mod:`lanternlm.generate`); this module only loads the run and formats the request.
"""

from __future__ import annotations

import os

from ..errors import LanternError
from ..sampling import SamplingParams


def sample(run_dir: str | os.PathLike, prompt: str = "", *, num: int = 3, max_tokens: int = 200,
           temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int | None = 0,
           device: str | None = None) -> list[str]:
    """``num`` continuations of ``prompt`` (each returned with the prompt in front).

    The prompt is encoded as a document start (``[<|endoftext|>] + text``), the way the
    model saw every training document; generation stops at the end-of-text token. The
    run's engine samples the ids its stage allows (:attr:`lanternlm.run.Run.vocab_limit`).
    """
    from ..generate import complete, default_stop_tokens, encode_prompt
    from ..run import Run

    if num < 1 or max_tokens < 1:
        raise LanternError(f"sample: num ({num}) and max_tokens ({max_tokens}) must be >= 1")
    run = Run(run_dir)
    engine, tokenizer = run.engine(device), run.tokenizer
    ids = encode_prompt(tokenizer, prompt)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    outs = complete(engine, tokenizer, [ids], n=num, max_tokens=max_tokens, sampling=params,
                    stop_tokens=default_stop_tokens(tokenizer), truncate="left")
    return [prompt + out.text for out in outs]

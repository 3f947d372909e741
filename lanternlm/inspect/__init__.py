"""The glass box: see inside a model you trained (``lantern inspect``, ``lantern sweep``).

One module per view. Each view is a library function that returns plain data (a
dataclass of lists and numbers, ``dataclasses.asdict`` gives JSON for the web UI), a
terminal rendering (a string, ANSI colour optional) and a PNG writer (matplotlib,
imported lazily inside the plotting functions, so nothing in the core imports it).
Every view reads the same code that generates: logits and attention weights come from
:meth:`lanternlm.model.GPT.forward`, filters from :mod:`lanternlm.sampling`, the loop from
the engine's streaming events. There is no second attention and no second sampler.

- :mod:`.tokens`      how text splits into tokens; two tokenizers side by side
- :mod:`.embeddings`  nearest neighbours in the embedding table; a 2-D PCA map
- :mod:`.attention`   one head's N x N matrix, all heads of a layer, rollout across layers
- :mod:`.next_token`  the next-token distribution and what temperature / top-k / top-p keep
- :mod:`.loop`        the generation loop step by step (table, image strip, animated GIF)
- :mod:`.loss`        loss curves of one or more runs, smoothed, with the plateau mark
- :mod:`.sweep`       model size vs validation loss for the same token budget
- :mod:`.thinking`    accuracy and thinking length per reasoning level (chat models)
- :mod:`.memory`      weights + KV cache + activations, estimated and measured
- :mod:`.report`      all of the above about one run, as Markdown + PNGs
"""

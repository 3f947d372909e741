"""Training: one loop, one module per stage, and the pieces they share.

- :mod:`.loop`         the one training loop every stage runs on (:func:`.loop.train`)
- :mod:`.pretrain`     ``PretrainConfig``, presets; the pretraining stage (``lantern pretrain``)
- :mod:`.sft`          ``SFTConfig``, presets; chat fine-tuning from a base run (``lantern sft``)
- :mod:`.optim`        AdamW / Muon parameter groups
- :mod:`.schedule`     learning-rate schedules (pure functions)
- :mod:`.checkpoint`   atomic training checkpoints and RNG state
- :mod:`.metrics`      bits per byte, MFU, ``metrics.jsonl``, the plateau rule
- :mod:`.plots`        ``loss.png`` (a leaf: imported lazily)
- :mod:`.distributed`  ``torchrun`` / DDP from the outside of the model
- :mod:`.sample`       ``lantern sample``: continuations from a base checkpoint
"""

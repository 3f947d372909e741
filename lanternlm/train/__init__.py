"""Training stages (one module each) over shared pieces.

- :mod:`.pretrain`     ``PretrainConfig``, presets, the pretraining loop (``lantern pretrain``)
- :mod:`.optim`        AdamW / Muon parameter groups
- :mod:`.schedule`     learning-rate schedules (pure functions)
- :mod:`.checkpoint`   atomic training checkpoints and RNG state
- :mod:`.metrics`      bits per byte, MFU, ``metrics.jsonl``, the plateau rule
- :mod:`.plots`        ``loss.png`` (a leaf: imported lazily)
- :mod:`.distributed`  ``torchrun`` / DDP / FSDP2 from the outside of the model
- :mod:`.sample`       ``lantern sample``: continuations from a base checkpoint
"""

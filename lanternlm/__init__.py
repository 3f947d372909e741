"""lanternlm: a complete, readable LLM stack you can build, train, run and see inside."""

__version__ = "0.1.0"

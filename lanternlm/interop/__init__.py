"""Import and export to other ecosystems (Hugging Face ``transformers`` for now).

Nothing here is imported by the core: it needs the optional ``[hf]`` extra.
"""

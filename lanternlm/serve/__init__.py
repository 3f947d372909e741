"""``lantern serve``: the OpenAI-compatible HTTP API (FastAPI + uvicorn, the ``serve`` extra).

- :mod:`.worker` — one thread per run owns its engine; handlers queue requests to it;
- :mod:`.schema` — OpenAI's request and response objects (the OpenAPI document);
- :mod:`.completions` — requests to engine requests, token events back to OpenAI objects;
- :mod:`.app` — the FastAPI app: routes, errors, limits, :func:`~.app.serve`;
- :mod:`.glass` — the glass-box views over HTTP;
- :mod:`.page` — the web page at ``/`` (``static/``: HTML, CSS, JavaScript modules), a client of the API.

:class:`ServeConfig` lives here, free of FastAPI, so that ``lantern --help`` works without
the extra.
"""

from __future__ import annotations

import dataclasses

from ..config import option


@dataclasses.dataclass
class ServeConfig:
    """Settings of ``lantern serve``."""

    host: str = option("127.0.0.1", "address to bind (0.0.0.0 exposes the server to the network)")
    port: int = option(8000, "TCP port")
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' on every endpoint but /health")
    max_batch: int = option(16, "sequences decoded together per model (rows of the engine's batch)")
    max_queue: int = option(64, "requests that may wait for rows; beyond, 429")
    max_body_bytes: int = option(1_000_000, "largest request body accepted; beyond, 413")
    device: str | None = option(None, "cpu, cuda, cuda:N or auto")
    dtype: str | None = option(None, "weights: fp32, bf16, fp16 or int8 (CPU)")

    def __post_init__(self) -> None:
        from ..errors import LanternError

        checks = {"port": 0 <= self.port <= 65535, "max_batch": self.max_batch >= 1,
                  "max_queue": self.max_queue >= 0, "max_body_bytes": self.max_body_bytes >= 1}
        for name, ok in checks.items():
            if not ok:
                raise LanternError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: out of range "
                                   f"(port 0..65535, max-batch >= 1, max-queue >= 0, max-body-bytes >= 1)")
        if self.api_key == "":
            raise LanternError("--api-key: an empty key would let everyone in; give a key or leave it out")

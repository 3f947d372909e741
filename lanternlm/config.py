"""Stage configs as dataclasses, exposed on the command line.

Every stage (pretrain, sft, ...) has one dataclass. Each field is declared with
:func:`option`, whose ``help`` text becomes the ``--help`` of the CLI flag, so the
documentation lives next to the default. :func:`add_arguments` turns a dataclass
into argparse flags; :func:`from_arguments` builds the config back and records
where each value came from (``default``, ``preset:NAME``, ``cli``), which
:func:`save` writes beside the run as readable JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

from .errors import LanternError


def option(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field with a help string (shown by ``--help``)."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(tp: Any):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        conv = _converter(inner[0])
        return lambda s: None if s.lower() in ("none", "null") else conv(s)
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    if origin in (list, tuple):
        conv = _converter(args[0]) if args else str
        return lambda s: [conv(x) for x in s.split(",") if x]
    return str


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (defaults left unset, see below)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        group.add_argument(_flag(f.name), dest=f"cfg_{f.name}", type=_converter(hints[f.name]),
                           default=None, metavar=hints[f.name].__name__.upper()
                           if isinstance(hints[f.name], type) else "VALUE",
                           help=f"{help_text} (default: {default})")


def from_arguments(cls: type, args: argparse.Namespace, base: Any = None,
                   base_source: str = "default") -> tuple[Any, dict[str, str]]:
    """Build a ``cls`` from parsed flags over ``base`` (a preset or a parent's config).

    Returns ``(config, sources)`` where ``sources[field]`` says where the value came from.
    """
    base = base if base is not None else cls()
    values, sources = {}, {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        given = getattr(args, f"cfg_{f.name}", None)
        if given is not None:
            values[f.name], sources[f.name] = given, "cli"
        else:
            values[f.name], sources[f.name] = getattr(base, f.name), base_source
    return cls(**values), sources


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike, format: str | None = None) -> Any:
    """Parse the JSON file ``path``; a missing, non-UTF-8 or malformed file is a
    :class:`LanternError` naming the file (and the line and column of a syntax error).
    With ``format``, the top level must be an object whose ``"format"`` field equals it
    (every lanternlm file format names itself this way)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LanternError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise LanternError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise LanternError(f"{path}: line {err.lineno}, column {err.colno}: invalid JSON ({err.msg}); "
                           "the file is not valid JSON (truncated or corrupt)") from None
    if format is not None and (not isinstance(data, dict) or data.get("format") != format):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise LanternError(f"{path}: field 'format' is {found!r}, expected {format!r}")
    return data


def save(path: str | os.PathLike, cfg: Any, sources: dict[str, str] | None = None, **extra: Any) -> None:
    """Save a config as JSON: ``{"config": {...}, "sources": {...}, ...extra}``."""
    payload = {"config": to_dict(cfg)}
    if sources is not None:
        payload["sources"] = sources
    payload.update(extra)
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def load(path: str | os.PathLike, cls: type) -> Any:
    """Load a config saved by :func:`save`; unknown keys are an error, missing ones take defaults."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    raw = data.get("config", data)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{path}: unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**raw)


def resolve(cls: type, presets: dict[str, Any], args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """The config of a stage command (``lantern pretrain``, ``lantern sft``, ...).

    Starts from ``--preset`` or, with ``--resume`` on a run directory (``--out``) that has a
    ``config.json``, from that saved config; then applies the flags given. Returns
    ``(config, sources)``; a resumed value keeps the source it was first given.
    """
    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists():
        base, source = load(saved, cls), "resumed"
        earlier = json.loads(saved.read_text(encoding="utf-8")).get("sources", {})
    else:
        if args.preset not in presets:
            raise LanternError(f"--preset {args.preset!r}: choose one of {sorted(presets)}")
        base, source, earlier = presets[args.preset], f"preset:{args.preset}", {}
    config, sources = from_arguments(cls, args, base=base, base_source=source)
    sources = {k: earlier.get(k, v) if v == "resumed" else v for k, v in sources.items()}
    return config, sources

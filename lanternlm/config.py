"""Stage configs as dataclasses, exposed on the command line.

Every stage (pretrain, sft, ...) has one dataclass. Each field is declared with
:func:`option`, whose ``help`` text becomes the ``--help`` of the CLI flag, so the
documentation lives next to the default. :func:`add_arguments` turns a dataclass
into argparse flags; :func:`from_arguments` builds the config back and records
where each value came from (``default``, ``preset:NAME``, ``cli``), which the run
record keeps beside the run as readable JSON (:func:`lanternlm.run.write_record`);
:func:`from_dict` reads a saved config back.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Iterator

from .errors import LanternError


def option(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field with a help string (shown by ``--help``); ``path=True`` marks a
    file or directory (or a list of them), which a run record stores relative to the run
    directory (:func:`path_fields`)."""
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
    """Add one ``--flag`` per field of dataclass ``cls``. A flag not given leaves its value
    unset (the preset's or parent's value applies, see below); ``--flag none`` on an
    ``Optional`` field sets it to None, whatever a preset says."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options")
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        group.add_argument(_flag(f.name), dest=f"cfg_{f.name}", type=_converter(hints[f.name]),
                           default=argparse.SUPPRESS, metavar=hints[f.name].__name__.upper()
                           if isinstance(hints[f.name], type) else "VALUE",
                           help=f"{help_text} (default: {default})")


_UNSET = object()  # a flag that was not given (None is a value: ``--max-minutes none``)


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
        given = getattr(args, f"cfg_{f.name}", _UNSET)
        if given is not _UNSET:
            values[f.name], sources[f.name] = given, "cli"
        else:
            values[f.name], sources[f.name] = getattr(base, f.name), base_source
    return cls(**values), sources


def path_fields(cls: type) -> tuple[str, ...]:
    """The fields of dataclass ``cls`` declared with ``option(..., path=True)``."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("path"))


def map_paths(values: dict[str, Any], names: Any, fn) -> dict[str, Any]:
    """``values`` with ``fn`` applied to every non-empty path among the fields ``names``
    (a string, or each string of a list).

    >>> map_paths({"data": "shards", "files": ["a", ""], "lr": 1.0}, ("data", "files"), str.upper)
    {'data': 'SHARDS', 'files': ['A', ''], 'lr': 1.0}
    """
    out = dict(values)
    for name in names:
        value = out.get(name)
        if isinstance(value, str) and value:
            out[name] = fn(value)
        elif isinstance(value, list):
            out[name] = [fn(v) if isinstance(v, str) and v else v for v in value]
    return out


def absolute_paths(config: Any) -> Any:
    """``config`` (a dataclass) with its :func:`path_fields` made absolute (from the working directory)."""
    names = path_fields(type(config))
    given = {name: getattr(config, name) for name in names}
    return dataclasses.replace(config, **map_paths(given, names, lambda p: str(Path(p).resolve())))


def from_dict(cls: type, raw: Any, where: str) -> Any:
    """A ``cls`` from saved values: unknown fields are an error naming ``where``, missing
    ones take their defaults (a config saved before a field existed).

    >>> @dataclasses.dataclass
    ... class Demo:
    ...     lr: float = 0.1
    ...     steps: int = 10
    >>> from_dict(Demo, {"lr": 0.5}, "run/config.json")
    Demo(lr=0.5, steps=10)
    >>> from_dict(Demo, {"lr": 0.5, "momentum": 0.9}, "run/config.json")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: run/config.json: unknown Demo fields ['momentum'] (known: lr, steps)
    """
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if not isinstance(raw, dict):
        raise LanternError(f"{where}: expected an object of {cls.__name__} fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise LanternError(f"{where}: unknown {cls.__name__} fields {unknown} (known: {', '.join(names)})")
    check_types(cls, raw, where)
    return cls(**raw)


def check_types(cls: type, raw: dict[str, Any], where: str) -> None:
    """Raise :class:`LanternError` naming ``where`` and the field when a saved value of
    ``raw`` does not have the type of ``cls``'s field (unknown names are not checked here)."""
    hints = typing.get_type_hints(cls)
    for name, value in raw.items():
        if name in hints and not _is_a(value, hints[name]):
            raise LanternError(f"{where}: field {name!r} is {value!r:.60}, expected {_kind(hints[name])}")


def _is_a(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a field type (int for float fields too; other types unchecked).

    >>> _is_a(3, float), _is_a(True, int), _is_a(None, typing.Optional[int]), _is_a(["a", 1], list[str])
    (True, False, True, False)
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_a(value, arg) for arg in args)
    if tp is type(None):
        return value is None
    if tp in (int, float):
        return isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
    if tp in (bool, str):
        return isinstance(value, tp)
    if origin in (list, tuple):
        return isinstance(value, list) and all(_is_a(v, args[0]) for v in value) if args else isinstance(value, list)
    return True


def _kind(tp: Any) -> str:
    """A field type as the error messages say it: ``a float``, ``null or an integer``, ...

    >>> _kind(typing.Optional[int]), _kind(list[str])
    ('an integer or null', 'a list of strings')
    """
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union or typing.get_origin(tp) is types.UnionType:
        return " or ".join(_kind(a) for a in args) + " or null"
    if typing.get_origin(tp) in (list, tuple):
        return "a list of " + (_kind(args[0]).split(" ", 1)[1] + "s" if args else "values")
    return {int: "an integer", float: "a float", str: "a string", bool: "true or false"}.get(tp, str(tp))


def temp_file_beside(path: str | os.PathLike) -> tuple[int, Path]:
    """A new, empty, hidden file beside ``path`` to be renamed onto it: ``(fd, its path)``.

    Created with the permissions an ordinary ``open`` gives (0666 less the umask), so
    every file of a run directory has the same mode (``mkstemp`` would make it 0600).
    An error when ``path`` is a directory."""
    path = Path(path)
    if path.is_dir():
        raise LanternError(f"{path}: is a directory, not a file; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 32 random bits met an earlier file
            continue


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write a file to (by any writer); renamed onto
    ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace_files: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path`` to write a set of files into; when the block ends
    without an error it becomes ``path`` (a rename), or, with ``replace_files`` and ``path``
    already there, its files replace those of the same names one by one (each rename
    atomic). An existing non-empty ``path`` is an error otherwise. Removed on an error."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not replace_files)):
        raise LanternError(f"{path}: already exists{'' if path.is_dir() else ' and is not a folder'}; "
                           "choose a new folder or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
        if not path.exists():
            os.replace(staging, path)
        else:
            for item in staging.iterdir():
                os.replace(item, path / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def file_in(directory: str | os.PathLike, name: Any, where: str) -> Path:
    """``directory / name`` where ``name``, read from the file ``where``, is a plain file
    name: a name that is absolute, has a separator or is ``..`` would reach outside the
    directory, and is a :class:`LanternError`.

    >>> file_in("run/checkpoints", "step_0000010", "latest")
    PosixPath('run/checkpoints/step_0000010')
    >>> file_in("data", "../../etc/passwd", "data/manifest.json")
    Traceback (most recent call last):
    ...
    lanternlm.errors.LanternError: data/manifest.json: names '../../etc/passwd', which is not a file inside data; refusing to read outside it
    """
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or os.sep in name or "\0" in name):
        raise LanternError(f"{where}: names {name!r}, which is not a file inside {directory}; "
                           "refusing to read outside it")
    return Path(directory) / name

"""Checks on everything a caller passes to enqueue, and the JSON encoding of args and results."""

from __future__ import annotations

import datetime
import fnmatch
import functools
import json
import math
import os
import re
from typing import Any, Callable, Iterable, Optional, Union

from .errors import InvalidArgsError, InvalidOptionError, InvalidTaskError, PayloadTooLargeError, TaskNotAllowedError

# Default cap on encoded args. SQLite's own cap on one value is SQLITE_MAX_LENGTH
# (1,000,000,000 bytes unless the build changed it).
DEFAULT_MAX_ARGS_BYTES = 64 * 1024 * 1024
ALLOWED_TASKS_ENV = "LITEQUEUE_ALLOWED_TASKS"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_TASK_PATH = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})+$")
_MAX_QUEUE_NAME_LENGTH = 200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def task_path_of(task: Union[str, Callable]) -> str:
    """Return the dotted path of ``task``: a path string, or a module-level function."""
    if isinstance(task, str):
        return _check_task_path(task)
    if callable(task):
        module = getattr(task, "__module__", None)
        qualname = getattr(task, "__qualname__", None)
        if not module or not qualname or "<" in qualname or "." in qualname:
            raise InvalidTaskError(
                f"cannot enqueue {task!r}: only module-level functions can be named by a dotted path; "
                "define it at the top level of a module, or pass its path as a string"
            )
        if module == "__main__":
            raise InvalidTaskError(
                f"cannot enqueue {qualname!r} from __main__: the worker cannot import your script "
                "as __main__; move the function to an importable module"
            )
        return _check_task_path(f"{module}.{qualname}")
    raise InvalidTaskError(f"invalid task {task!r}: pass a dotted path string or a module-level function")


@functools.lru_cache(maxsize=1024)
def _check_task_path(task: str) -> str:
    # Cached: an application enqueues the same few paths again and again.
    path = task.strip()
    if not path:
        raise InvalidTaskError("invalid task path '': give a dotted path such as 'package.module.function'")
    if not _TASK_PATH.match(path):
        raise InvalidTaskError(
            f"invalid task path {task!r}: use a dotted path such as 'package.module.function'"
        )
    return path


def allowed_patterns(patterns: Optional[Iterable[str]] = None) -> Optional[list]:
    """Return the allow-list: ``patterns`` when given, else LITEQUEUE_ALLOWED_TASKS, else None."""
    if patterns is not None:
        return [p for p in patterns if p]
    raw = os.environ.get(ALLOWED_TASKS_ENV, "")
    values = [p for p in re.split(r"[,\s]+", raw) if p]
    return values or None


def check_allowed(path: str, patterns: Optional[list], setting: str = ALLOWED_TASKS_ENV) -> None:
    """Raise TaskNotAllowedError unless ``path`` matches one of ``patterns`` (None allows all).

    Patterns are shell-style (``myapp.tasks.*``) and match the whole dotted path.
    """
    if patterns is None:
        return
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
        return
    raise TaskNotAllowedError(
        f"task {path!r} is not allowed by {setting} ({', '.join(patterns) or 'empty'}); "
        "add a matching pattern there to run it"
    )


_SCALARS = (str, int, float, bool, type(None))


def _reject_non_string_keys(value: Any, where: str) -> None:
    # json.dumps would turn keys such as 1 or None into "1" and "null" without a word.
    if type(value) is dict and all(type(key) is str and type(item) in _SCALARS for key, item in value.items()):
        return  # the common flat case, checked in one pass
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgsError(
                    f"invalid args: key {key!r} at {where} is a {type(key).__name__}; JSON objects "
                    "only have string keys, so convert it to str"
                )
            _reject_non_string_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _reject_non_string_keys(item, f"{where}[{index}]")


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def to_json(value: Any) -> str:
    """Encode ``value`` as JSON text that SQLite can store (lone surrogates escaped)."""
    text = _ENCODER.encode(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _ASCII_ENCODER.encode(value)
    return text


def encode_args(args: Optional[dict], max_bytes: int = DEFAULT_MAX_ARGS_BYTES) -> str:
    """Return ``args`` as a JSON object, or raise InvalidArgsError naming the problem."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidArgsError(
            f"invalid args {_short_repr(args)}: args must be a dict of keyword arguments, "
            f"not {type(args).__name__}"
        )
    _reject_non_string_keys(args, "args")
    try:
        text = to_json(args)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgsError(
            f"invalid args: {exc}; args may hold only JSON values (dict, list, str, int, finite "
            "float, bool, None)"
        ) from exc
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"args are {size} bytes as JSON, over the limit of {max_bytes} bytes; store large data "
            "in a file and pass its path, or raise max_args_bytes"
        )
    return text


def check_priority(priority: Any) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidOptionError(f"invalid priority {priority!r}: use an integer (higher runs first)")
    if not _INT64_MIN <= priority <= _INT64_MAX:
        raise InvalidOptionError(f"invalid priority {priority!r}: use an integer within 64 bits")
    return priority


def check_seconds(name: str, value: Any, *, allow_none: bool = False) -> Optional[float]:
    """Return ``value`` as a finite float >= 0, or raise InvalidOptionError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(f"invalid {name} {value!r}: use a number of seconds")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise InvalidOptionError(f"invalid {name} {value!r}: use a finite number of seconds >= 0")
    return float(value)


def check_max_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidOptionError(f"invalid max_retries {value!r}: use an integer >= 0")
    return value


def check_unique_key(key: Any) -> Optional[str]:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise InvalidOptionError(f"invalid unique_key {key!r}: use a non-empty string, or None")
    return key


def check_task_ids(name: str, ids: Any) -> tuple:
    if ids == ():
        return ()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidOptionError(f"invalid {name} {ids!r}: use a list of task ids")
    values = tuple(ids)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"invalid task id {value!r} in {name}: use positive integers")
    return tuple(dict.fromkeys(values))


def check_queue_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidOptionError(f"invalid queue name {name!r}: use a non-empty string")
    return _check_queue_name(name)


@functools.lru_cache(maxsize=256)
def _check_queue_name(name: str) -> str:
    if not name.strip():
        raise InvalidOptionError(f"invalid queue name {name!r}: use a non-empty string")
    if len(name) > _MAX_QUEUE_NAME_LENGTH or any(ord(ch) < 32 for ch in name):
        raise InvalidOptionError(
            f"invalid queue name {name!r}: use at most {_MAX_QUEUE_NAME_LENGTH} printable characters"
        )
    return name


def resolve_run_at(now: float, delay_s: Any, run_at: Any) -> float:
    """Return the Unix time a task becomes eligible, from ``delay_s`` or ``run_at``."""
    delay = check_seconds("delay_s", delay_s)
    if run_at is None:
        return now + delay
    if delay:
        raise InvalidOptionError("give either delay_s or run_at, not both")
    if isinstance(run_at, datetime.datetime):
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidOptionError(
                f"invalid run_at {run_at!r}: a naive datetime is ambiguous; pass an aware datetime "
                "(with tzinfo) or a Unix time"
            )
        return run_at.timestamp()
    if isinstance(run_at, bool) or not isinstance(run_at, (int, float)) or not math.isfinite(run_at):
        raise InvalidOptionError(f"invalid run_at {run_at!r}: pass an aware datetime or a finite Unix time")
    return float(run_at)


def format_seconds(value: float) -> str:
    """Format seconds for messages: a whole number prints without a decimal point."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

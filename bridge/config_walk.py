"""A parsed TOML document checked against the config structs, every problem collected.

``msgspec.convert`` stops at the first error and says it in its own words (``Expected `float |
null`, got `str```). :func:`convert` walks the document instead, table by table and element by
element, so one run reports every mistake, each at its key path (a list element also by its
``name``), unknown keys with a did-you-mean, literals and tagged unions with their valid values,
and types in plain words (``expected a number, got the string '3s'``). It only validates: the
caller converts a clean document with msgspec itself, so the result is msgspec's.
"""

from __future__ import annotations

import datetime
import difflib
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from bridge.errors import ConfigError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# Keys whose values are credentials: never echoed in an error (and masked by config_show).
SECRET_KEYS = frozenset(
    {
        "token",
        "tokens",
        "password",
        "passcode",
        "webkey",
        "secrets",
        "user",
        "api_key",
        "security_key",
        "call_password",
        "customer_id",
    }
)
# Tables every value of which is a credential, whatever its key (a receiver's headers).
SECRET_TABLES = frozenset({"headers"})
# Keys whose values are URLs: they may carry user info or credentials in their query.
URL_KEYS = frozenset({"url", "servers", "recording_base_url"})


def toml_key(name: str) -> str:
    """``name`` as TOML writes it in a dotted key: bare if it can be, else quoted."""
    return name if _BARE_KEY.match(name) else '"' + name.replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class At:
    """A place in the document: ``key`` for programs, ``shown`` (with element names) for people."""

    key: str = ""
    shown: str = ""
    secret: bool = False  # the value here is a credential: describe it, never show it
    secret_table: bool = False

    def __truediv__(self, name: str) -> At:
        part = toml_key(name)
        return At(
            f"{self.key}.{part}" if self.key else part,
            f"{self.shown}.{part}" if self.shown else part,
            secret=self.secret_table or name in SECRET_KEYS,
            secret_table=name in SECRET_TABLES,
        )

    def item(self, index: int, raw: object) -> At:
        """The ``index``-th element, named by its ``name`` key when it has one."""
        name = raw.get("name") if isinstance(raw, dict) else None
        label = ""
        if isinstance(name, str) and name:
            label = f" ({name})" if _NAME.match(name) else f" ({name!r})"
        return At(f"{self.key}[{index}]", f"{self.shown}[{index}]{label}", secret=self.secret)

    def contains(self, key: str) -> bool:
        """Whether ``key`` is this place or inside it."""
        return key == self.key or key.startswith((f"{self.key}.", f"{self.key}["))


ROOT = At()


class Problems:
    """The problems found so far; reported in the order of the document's keys."""

    def __init__(self) -> None:
        self._found: list[tuple[At, str]] = []
        self._muted: list[At] = []
        self._order: dict[str, int] = {}

    def seen(self, at: At) -> None:
        """``at`` is the next key of the document, in its order."""
        self._order.setdefault(at.key, len(self._order))

    def add(self, at: At, problem: str) -> None:
        if not any(muted.contains(at.key) for muted in self._muted):
            self._found.append((at, problem))

    def mute(self, at: At) -> None:
        """Report nothing more at or under ``at``: its value is already known to be wrong."""
        self._muted.append(at)

    def __len__(self) -> int:
        return len(self._found)

    def error(self) -> ConfigError:
        found = sorted(self._found, key=lambda problem: self._position(problem[0].key))
        (first, problem), *_ = found
        return ConfigError(first.key, problem, problems=[(at.shown, text) for at, text in found])

    def _position(self, key: str) -> int:
        """Where ``key`` (or the nearest table around it, for a missing key) is in the document."""
        while key not in self._order and key:
            key = key[: max(key.rfind("."), key.rfind("["), 0)]
        return self._order.get(key, -1)


class _Failed:
    """The value at a place that has a problem (reported already)."""

    def __repr__(self) -> str:
        return "FAILED"


FAILED: Any = _Failed()


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(values: Iterable[object]) -> str:
    return "one of " + ", ".join(repr(value) for value in values)


def show(raw: object, at: At = ROOT) -> str:
    """A value in words, as it was written; a credential by its shape only."""
    if isinstance(raw, str):
        return f"a string of {len(raw)} characters" if at.secret else f"the string {raw!r}"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return "a number" if at.secret else repr(raw)
    if isinstance(raw, list | tuple):
        count = len(raw)
        return "an empty list" if not count else f"a list of {count} item{'s' * (count != 1)}"
    if isinstance(raw, dict):
        return "a table"
    if raw is None:
        return "no value"
    if isinstance(raw, datetime.datetime | datetime.date | datetime.time):
        return f"the {'date-time' if isinstance(raw, datetime.datetime) else 'date or time'} {raw}"
    return type(raw).__name__


def describe(tp: Any) -> str:
    """What a value of type ``tp`` (with its msgspec constraints) must be, in words."""
    base, meta = _unwrap(tp)
    origin = get_origin(base)
    if base is bool:
        return "true or false"
    if base is int or base is float:
        noun = "an integer" if base is int else "a number"
        return noun + _bounds(meta.get("gt"), meta.get("ge"), meta.get("lt"), meta.get("le"))
    if base is str:
        if "description" in meta:
            return str(meta["description"])
        if "pattern" in meta:
            return f"a string matching {meta['pattern']}"
        if "min_length" in meta:
            return f"a string of at least {meta['min_length']} characters"
        return "a string"
    if origin is Literal:
        return one_of(get_args(base))
    if origin in (tuple, list):
        args = get_args(base)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} items"
        return "a list" + _length(meta.get("min_length"), meta.get("max_length"))
    if origin is dict or _is_struct(base):
        return "a table"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(base) if arg is not type(None))
    return getattr(base, "__name__", str(base))


def convert(tp: Any, raw: Any, at: At, out: Problems) -> Any:
    """``raw`` as a ``tp``, or :data:`FAILED` with every problem in it added to ``out``."""
    base, meta = _unwrap(tp)
    origin = get_origin(base)
    if _is_struct(base):
        return _struct(base, raw, at, out)
    if origin in (Union, types.UnionType):
        return _union(get_args(base), raw, at, out)
    if origin is Literal:
        values = get_args(base)
        if any(raw == value and type(raw) is type(value) for value in values):
            return raw
        hint = did_you_mean(raw, [value for value in values if isinstance(value, str)])
        out.add(at, f"expected {one_of(values)}, got {show(raw, at)}{hint}")
        return FAILED
    if origin in (tuple, list, dict):
        return _container(base, meta, raw, at, out)
    try:
        return msgspec.convert(raw, tp)
    except msgspec.ValidationError:
        out.add(at, f"expected {describe(tp)}, got {show(raw, at)}")
        return FAILED


def salvage(tp: Any, raw: Any, at: At, out: Problems) -> Any:
    """After :func:`convert` failed: a struct of type ``tp`` built from the valid keys of ``raw``.

    Invalid or missing keys get their defaults (a blank when required) and their places are
    muted in ``out``, so the rules that need the whole struct can still check the rest of an
    entry. None when ``raw`` says too little to tell which struct it is.
    """
    cls = _choose(_unwrap(tp)[0], raw)
    if cls is None:
        return None
    scratch = Problems()  # already reported by convert
    values: dict[str, Any] = {}
    for field in struct_fields(cls):
        key = field.encode_name
        if key in raw:
            value = convert(field.type, raw[key], at / key, scratch)
            if value is not FAILED:
                values[field.name] = value
                continue
            out.mute(at / key)
        if field.required:
            out.mute(at / key)
            base, _ = _unwrap(field.type)
            kind = base if base is str else get_origin(base)
            if kind not in _BLANKS:
                return None
            values[field.name] = _BLANKS[kind]
    return cls(**values)


_BLANKS: dict[Any, Any] = {str: "", tuple: ()}


def _choose(tp: Any, raw: Any) -> type[msgspec.Struct] | None:
    """The struct ``tp`` (or the member of a tagged union of structs) that ``raw`` is meant as."""
    if not isinstance(raw, dict):
        return None
    if _is_struct(tp):
        return tp  # type: ignore[no-any-return]
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    for member in get_args(tp):
        cls, _ = _unwrap(member)
        tagged = _is_struct(cls) and cls.__struct_config__.tag_field is not None
        if tagged and raw.get(cls.__struct_config__.tag_field) == cls.__struct_config__.tag:
            return cls  # type: ignore[no-any-return]
    return None


def struct_fields(cls: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(cls)


def default_of(field: msgspec.structs.FieldInfo) -> Any:
    """The value a field takes when its key is left out (it must have one)."""
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


def element_type(tp: Any) -> Any:
    """The element type of a ``tuple[X, ...]`` (or ``list[X]``) annotation."""
    base, _ = _unwrap(tp)
    return get_args(base)[0]


def check_keys(cls: type[msgspec.Struct], raw: dict[str, Any], at: At, out: Problems) -> bool:
    """Report the keys of ``raw`` that ``cls`` has no field for, and its required keys missing."""
    config = cls.__struct_config__
    known = [field.encode_name for field in struct_fields(cls)]
    ok = True
    if config.forbid_unknown_fields:
        for key in raw:
            if key == config.tag_field or key in known:
                continue
            hint = did_you_mean(key, known) or "; the keys here are " + ", ".join(known)
            out.add(at / key, f"unknown key{hint}")
            ok = False
    for field in struct_fields(cls):
        if field.required and field.encode_name not in raw:
            out.add(at / field.encode_name, "missing: this key is required")
            ok = False
    return ok


def _struct(cls: type[msgspec.Struct], raw: Any, at: At, out: Problems) -> Any:
    if not isinstance(raw, dict):
        out.add(at, f"expected a table, got {show(raw, at)}")
        return FAILED
    ok = check_keys(cls, raw, at, out)
    values: dict[str, Any] = {}
    for field in struct_fields(cls):
        if field.encode_name in raw:
            value = convert(field.type, raw[field.encode_name], at / field.encode_name, out)
            ok = ok and value is not FAILED
            values[field.name] = value
    return cls(**values) if ok else FAILED


def _union(members: Sequence[Any], raw: Any, at: At, out: Problems) -> Any:
    if raw is None and type(None) in members:
        return None
    structs = [member for member in members if _is_struct(_unwrap(member)[0])]
    others = [member for member in members if member not in structs and member is not type(None)]
    if structs and (isinstance(raw, dict) or not others):
        if len(structs) == 1:
            return _struct(_unwrap(structs[0])[0], raw, at, out)
        return _tagged([_unwrap(member)[0] for member in structs], raw, at, out)
    if len(others) == 1:
        return convert(others[0], raw, at, out)
    for member in others:
        try:
            return msgspec.convert(raw, member)
        except msgspec.ValidationError:
            continue
    expected = " or ".join(describe(member) for member in others)
    out.add(at, f"expected {expected}, got {show(raw, at)}")
    return FAILED


def _tagged(classes: Sequence[type[msgspec.Struct]], raw: Any, at: At, out: Problems) -> Any:
    """One of several structs, chosen by their tag (``type = "webhook"``)."""
    if not isinstance(raw, dict):
        out.add(at, f"expected a table, got {show(raw, at)}")
        return FAILED
    # msgspec allows a union of several structs only when they are tagged, all by one field.
    field = str(classes[0].__struct_config__.tag_field)
    tags = {cls.__struct_config__.tag: cls for cls in classes}
    valid = [str(tag) for tag in tags]
    if field not in raw:
        out.add(at / field, f"missing: this key is required ({one_of(valid)})")
        return FAILED
    tag = raw[field]
    if not isinstance(tag, str) or tag not in tags:
        hint = did_you_mean(tag, valid)
        out.add(at / field, f"expected {one_of(valid)}, got {show(tag)}{hint}")
        return FAILED
    return _struct(tags[tag], raw, at, out)


def _container(base: Any, meta: dict[str, Any], raw: Any, at: At, out: Problems) -> Any:
    """A list (of tables, element by element) or a table of values (key by key)."""
    origin = get_origin(base)
    if origin is dict:
        if not isinstance(raw, dict):
            out.add(at, f"expected a table, got {show(raw, at)}")
            return FAILED
        _, value_tp = get_args(base)
        table = {key: convert(value_tp, value, at / key, out) for key, value in raw.items()}
        return FAILED if FAILED in table.values() else table
    if not isinstance(raw, list | tuple):
        out.add(at, f"expected {describe(base)}, got {show(raw, at)}")
        return FAILED
    items = [
        convert(_item_type(base, index), item, at.item(index, item), out)
        for index, item in enumerate(raw)
    ]
    if any(item is FAILED for item in items):
        return FAILED
    args = get_args(base)
    if origin is tuple and args and args[-1] is not Ellipsis and len(items) != len(args):
        out.add(at, f"expected {describe(base)}, got {show(raw, at)}")
        return FAILED
    low, high = meta.get("min_length"), meta.get("max_length")
    if (low is not None and len(items) < low) or (high is not None and len(items) > high):
        out.add(at, f"expected a list{_length(low, high)}, got {show(raw, at)}")
        return FAILED
    return tuple(items) if origin is tuple else items


def _item_type(base: Any, index: int) -> Any:
    args = get_args(base)
    if get_origin(base) is tuple and args and args[-1] is not Ellipsis:
        return args[min(index, len(args) - 1)]
    return args[0] if args else Any


def _unwrap(tp: Any) -> tuple[Any, dict[str, Any]]:
    """``Annotated[X, Meta(...)]`` into ``X`` and the constraints that are set."""
    meta: dict[str, Any] = {}
    while get_origin(tp) is Annotated:
        tp, *extras = get_args(tp)
        for extra in extras:
            if isinstance(extra, msgspec.Meta):
                for name in ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern"):
                    if getattr(extra, name) is not None:
                        meta[name] = getattr(extra, name)
                if extra.description is not None:
                    meta["description"] = extra.description
    return tp, meta


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    low = f"greater than {_number(gt)}" if gt is not None else None
    high = f"less than {_number(lt)}" if lt is not None else None
    if ge is not None and le is not None:
        return f" from {_number(ge)} to {_number(le)}"
    if ge is not None:
        low = f"of at least {_number(ge)}"
    if le is not None:
        high = f"at most {_number(le)}"
    words = " and ".join(part for part in (low, high) if part)
    return f" {words}" if words else ""


def _length(low: int | None, high: int | None) -> str:
    def items(count: int) -> str:
        return f"{count} item{'s' * (count != 1)}"

    if low is not None and high is not None:
        return f" of {low} to {items(high)}"
    if low is not None:
        return f" of at least {items(low)}"
    if high is not None:
        return f" of at most {items(high)}"
    return ""

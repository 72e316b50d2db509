# SPDX-License-Identifier: Apache-2.0
"""The kinds of config key. A key is declared once, on its dataclass field:

    interval_ms: Annotated[int, Int("time between checks")] = 2000

The `Annotated` metadata says how the TOML value is checked and converted, what it means (`doc`),
and under which TOML name it is written (`toml`, when it differs from the field name); the field's
default is the key's default. Validation (validate.py), the TOML writer (write.py) and the config
fuzzer (tests/fuzz/configs.py) all read these declarations through `declared_keys`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Callable, Hashable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

from lbtui.config.errors import Invalid, describe, join_key
from lbtui.config.formats import Format

INT_MAX = 2**31 - 1  # every integer ends up in a u32/s32 somewhere; keep them representable
MAX_SECONDS = 365 * 24 * 3600.0  # sanity cap for durations (keeps ns conversions far from u64 overflow)

INVALID: Any = object()  # what a check returns after reporting an issue
NO_DEFAULT: Any = dataclasses.MISSING


class Walk(Protocol):
    """What key checks need from the validator: report an issue, check a sub-table."""

    def error(self, key_path: str, message: str) -> None: ...

    def table(self, cls: type, value: Any, path: str) -> Checked | None: ...


@dataclass
class Checked:
    """One TOML table as checked: its valid values by field name, a partial view when it had issues."""

    path: str
    raw: Mapping[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    value: Any = None  # the built dataclass; None when this table or anything in it had an issue

    def at(self, toml_key: str) -> str:
        return join_key(self.path, toml_key)


@dataclass(frozen=True)
class NotWith:
    """The key is refused when `key` is given (and, if `value` is set, has that value); the TOML
    writer leaves it out in the same case. `key` names a field whose TOML key is the same."""

    key: str
    value: Any
    message: str  # "{key}" stands for the refused key

    def refusal(self, raw: Mapping[str, Any], name: str) -> str | None:
        """The issue of key `name` in TOML table `raw`, or None when it is allowed there."""
        if self.key in raw and (self.value is None or raw[self.key] == self.value):
            return self.message.format(key=name)
        return None

    def leaves_out(self, obj: Any) -> bool:
        given = getattr(obj, self.key)
        return given is not None and (self.value is None or given == self.value)


@dataclass(frozen=True)
class Key:
    doc: str  # one line: what the key means
    _: KW_ONLY
    toml: str = ""  # the TOML key, when it differs from the field name
    required: bool = False
    derived: bool = False  # its default comes from other keys (a rule of its table in validate.py)
    not_with: NotWith | None = None
    expect: str = ""  # what a missing required key should be (default: from the kind)

    def expectation(self) -> str:
        return self.expect or "a value"

    def missing_message(self) -> str:
        return f"missing required key: expected {self.expectation()}"

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        """The converted value, or INVALID after reporting an issue at `path`."""
        raise NotImplementedError

    def to_toml(self, value: Any) -> Any:
        return value


def _int_expectation(low: int, high: int) -> str:
    if high < INT_MAX:
        return f"an integer from {low} to {high}"
    if low == 1:
        return "a positive integer"
    if low == 0:
        return "a non-negative integer"
    return f"an integer >= {low}"


def _is_prime(number: int) -> bool:
    return number >= 2 and all(number % divisor for divisor in range(2, math.isqrt(number) + 1))


@dataclass(frozen=True)
class Int(Key):
    low: int = 1
    high: int = INT_MAX
    prime: bool = False

    def expectation(self) -> str:
        return self.expect or _int_expectation(self.low, self.high)

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        expectation = self.expectation()
        if not isinstance(value, int) or isinstance(value, bool) or value < self.low:
            walk.error(path, f"expected {expectation}, got {describe(value)}")
            return INVALID
        if value > self.high:
            if not self.expect and self.high == INT_MAX:
                expectation += f" no larger than {self.high}"
            walk.error(path, f"expected {expectation}, got {describe(value)}")
            return INVALID
        if self.prime and not _is_prime(value):
            walk.error(path, f"expected a prime number, got {value}")
            return INVALID
        return int(value)


@dataclass(frozen=True)
class Number(Key):
    """A float; integers are accepted. positive: > 0, else >= 0."""

    positive: bool = True
    high: float = MAX_SECONDS

    def expectation(self) -> str:
        return self.expect or ("a number > 0" if self.positive else "a number >= 0")

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        expectation = self.expectation()
        if isinstance(value, bool) or not isinstance(value, int | float):
            walk.error(path, f"expected {expectation}, got {describe(value)}")
            return INVALID
        # Compare huge integers before float(): float(10**400) raises OverflowError.
        number = (
            float(value)
            if isinstance(value, float) or abs(value) <= 2**53
            else (math.inf if value > 0 else -math.inf)
        )
        if math.isnan(number) or number < 0 or (self.positive and number == 0):
            walk.error(path, f"expected {expectation}, got {describe(value)}")
            return INVALID
        if number > self.high:
            limit = int(self.high) if self.high.is_integer() else self.high
            walk.error(path, f"expected {expectation} and <= {limit}, got {describe(value)}")
            return INVALID
        return number


@dataclass(frozen=True)
class Flag(Key):
    def expectation(self) -> str:
        return self.expect or "true or false"

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        if not isinstance(value, bool):
            walk.error(path, f"expected true or false, got {describe(value)}")
            return INVALID
        return value


@dataclass(frozen=True)
class Choice(Key):
    options: tuple[str, ...] = ()

    def expectation(self) -> str:
        quoted = [json.dumps(option) for option in self.options]
        return self.expect or " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        if not isinstance(value, str) or value not in self.options:
            allowed = " | ".join(json.dumps(option) for option in self.options)
            walk.error(path, f"expected one of {allowed}, got {describe(value)}")
            return INVALID
        return value


@dataclass(frozen=True)
class Text(Key):
    """A non-empty string in a `Format` (formats.py), converted by it."""

    format: Format | None = None

    def expectation(self) -> str:
        return self.expect or (self.format.expect if self.format else "a string")

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        if not isinstance(value, str):
            walk.error(path, f"expected a string, got {describe(value)}")
            return INVALID
        if not value:
            walk.error(path, "expected a non-empty string")
            return INVALID
        if self.format is None:
            return value
        try:
            return self.format.parse(value)
        except Invalid as problem:
            walk.error(path, str(problem))
            return INVALID

    def to_toml(self, value: Any) -> Any:
        return self.format.write(value) if self.format else value


@dataclass(frozen=True)
class Items(Key):
    """An array of values of one kind (`item`), as a tuple."""

    item: Key = Key("")
    empty: str = ""  # set: an empty array is refused, "expected <empty>, got an empty array"
    duplicate: Callable[[Any], str] | None = None  # set: repeated items are refused with this message

    def expectation(self) -> str:
        return self.expect or "an array"

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        if not isinstance(value, list):
            walk.error(path, f"expected an array, got {describe(value)}")
            return INVALID
        if not value and self.empty:
            walk.error(path, f"expected {self.empty}, got an empty array")
        result: list[Any] = []
        for index, element in enumerate(value):
            item_path = f"{path}[{index}]"
            checked = self.item.check(element, item_path, walk)
            if checked is INVALID:
                continue
            if self.duplicate is not None and checked in result:
                walk.error(item_path, self.duplicate(checked))
                continue
            result.append(checked)
        return tuple(result)

    def to_toml(self, value: Any) -> Any:
        return [self.item.to_toml(element) for element in value]


@dataclass(frozen=True)
class Table(Key):
    """A sub-table, checked against the declaration of `cls`; a missing one takes `cls`'s defaults."""

    cls: type = object

    def expectation(self) -> str:
        return self.expect or "a table"

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        checked = walk.table(self.cls, value, path)
        return INVALID if checked is None or checked.value is None else checked.value


@dataclass(frozen=True)
class Unique:
    """Tables of an array must differ in `of` (None: not compared). The later one gets the issue."""

    of: Callable[[Checked], Hashable | None]
    message: Callable[[Any, str], str]  # (the repeated value, key path of the first) -> message
    at: str = ""  # the key of the table the issue names; "": the table itself


@dataclass(frozen=True)
class Tables(Key):
    """An array of tables ([[name]]) checked against the declaration of `cls`, as a tuple."""

    cls: type = object
    array: str = "an array"  # what a value that is not an array should have been
    empty: str = ""  # set: an empty array is refused, "expected <empty>, got an empty array"
    missing: str = ""  # the whole message after "missing required key: " (default: from `empty`)
    unique: tuple[Unique, ...] = ()

    def expectation(self) -> str:
        return self.expect or self.empty or "an array of tables"

    def missing_message(self) -> str:
        return f"missing required key: {self.missing}" if self.missing else super().missing_message()

    def check(self, value: Any, path: str, walk: Walk) -> Any:
        if not isinstance(value, list):
            walk.error(path, f"expected {self.array}, got {describe(value)}")
            return INVALID
        if not value and self.empty:
            walk.error(path, f"expected {self.empty}, got an empty array")
            return INVALID
        tables = [walk.table(self.cls, raw, f"{path}[{index}]") for index, raw in enumerate(value)]
        checked = [table for table in tables if table is not None]
        repeated: set[int] = set()
        for rule in self.unique:
            first: dict[Hashable, str] = {}
            for table in checked:
                seen = rule.of(table)
                if seen is None:
                    continue
                if seen in first:
                    walk.error(table.at(rule.at) if rule.at else table.path, rule.message(seen, first[seen]))
                    repeated.add(id(table))
                else:
                    first[seen] = table.path
        return tuple(t.value for t in checked if t.value is not None and id(t) not in repeated)


# ---- reading the declarations ------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    field: str  # the dataclass field
    name: str  # the TOML key
    key: Key
    default: Any  # NO_DEFAULT when the field has none


@functools.cache
def declared_keys(cls: type) -> tuple[Declared, ...]:
    """The config keys of a table class, in field order; fields without a `Key` are not config keys.
    Raises TypeError for a declaration that cannot work (so a wrong one fails the first test)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    result: list[Declared] = []
    for f in dataclasses.fields(cls):
        keys = [meta for meta in getattr(hints[f.name], "__metadata__", ()) if isinstance(meta, Key)]
        if not keys:
            continue
        key = keys[0]
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if default is NO_DEFAULT and not (key.required or key.derived or isinstance(key, Table)):
            raise TypeError(f"{cls.__name__}.{f.name}: a key without a default must be required or derived")
        result.append(Declared(f.name, key.toml or f.name, key, default))
    names = {d.name for d in result}
    for d in result:
        if d.key.not_with is not None and d.key.not_with.key not in names:
            raise TypeError(f"{cls.__name__}.{d.field}: not_with names no key of the table")
    return tuple(result)


def key_of(cls: type, name: str) -> Declared:
    """The declaration of the key with TOML name `name` in a table class."""
    return next(d for d in declared_keys(cls) if d.name == name)

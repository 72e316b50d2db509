# SPDX-License-Identifier: Apache-2.0
"""Config errors: one `ConfigIssue` per problem (file, key path, message), all raised together."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FILE_LEVEL = ""  # key path of issues about the file as a whole (unreadable, not UTF-8, bad TOML)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key_path: str
    message: str

    def __str__(self) -> str:
        if self.key_path:
            return f"{self.file}: {self.key_path}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one config file; str() gives one line per issue."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        if isinstance(issues, str):
            raise TypeError(
                "ConfigError takes ConfigIssue values; use ConfigError.one(file, key_path, message)"
            )
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__(self.issues)  # args = (issues,) keeps the exception picklable

    @classmethod
    def one(cls, file: str, key_path: str, message: str) -> ConfigError:
        """A ConfigError with a single issue (e.g. for problems found after parsing, such as on reload)."""
        return cls([ConfigIssue(file, key_path, message)])

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


class Invalid(ValueError):
    """Raised by a value check; the message is the whole issue text (what was expected, what was given)."""


def join_key(path: str, key: str) -> str:
    """`proxy[0]` + `weight` -> `proxy[0].weight`; keys that are not bare TOML keys are quoted."""
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{shown}" if path else shown


def describe(value: Any) -> str:
    """A short, TOML-like rendering of what the user gave, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:57] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    return f"a {type(value).__name__} value"  # TOML dates and times

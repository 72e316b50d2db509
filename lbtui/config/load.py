# SPDX-License-Identifier: Apache-2.0
"""Reading a config: file -> text -> TOML -> validated Config, or one ConfigError with every issue."""

from __future__ import annotations

import os
import tomllib

from lbtui.config.errors import FILE_LEVEL, ConfigError, ConfigIssue
from lbtui.config.schema import Config
from lbtui.config.validate import Validator


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError (only) for every kind of problem."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigIssue(file, FILE_LEVEL, f"cannot read config file: {reason}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 (byte {exc.start}: {exc.reason})"
        raise ConfigError([ConfigIssue(file, FILE_LEVEL, message)]) from None
    return parse_config(text, file)


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse and validate TOML text. Raises ConfigError (only), listing every issue found."""
    try:
        document = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and int() digit limits on absurd literals
        raise ConfigError([ConfigIssue(path, FILE_LEVEL, f"invalid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(path, FILE_LEVEL, "invalid TOML: nested too deeply")]) from None
    validator = Validator(path)
    config = validator.document(document)
    if validator.issues or config is None:
        raise ConfigError(validator.issues)
    return Config(settings=config.settings, proxies=config.proxies, path=path)

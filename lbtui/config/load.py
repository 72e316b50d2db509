# SPDX-License-Identifier: Apache-2.0
"""Reading a config: file -> text -> TOML -> validated Config, or one ConfigError with every issue."""

from __future__ import annotations

import os
import stat
import tomllib

from lbtui.config.errors import FILE_LEVEL, ConfigError, ConfigIssue
from lbtui.config.schema import Config
from lbtui.config.validate import Validator

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a reload reads no more (thousands of backends take a few hundred KiB)

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError (only) for every kind of problem."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise _unreadable(file, exc) from None
    return _decode(data, file)


def load_regular_config(path: str | os.PathLike[str], max_bytes: int = MAX_CONFIG_BYTES) -> Config:
    """`load_config` for a running instance: only a regular file of at most `max_bytes`.

    A reload must never hang on a FIFO or a device, nor read a huge file into memory: the file is
    opened without blocking, checked with fstat (so it is the file that was opened), and read no
    further than the limit.
    """
    file = os.fspath(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(file, exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "a special file")
        raise ConfigError.one(file, FILE_LEVEL, f"not a regular file ({kind})")
    with os.fdopen(fd, "rb") as handle:
        if st.st_size > max_bytes:
            message = f"{st.st_size} bytes, more than a configuration file may have ({max_bytes})"
            raise ConfigError.one(file, FILE_LEVEL, message)
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise _unreadable(file, exc) from None
    if len(data) > max_bytes:  # it grew after fstat
        raise ConfigError.one(
            file, FILE_LEVEL, f"more than a configuration file may have ({max_bytes} bytes)"
        )
    return _decode(data, file)


def _unreadable(file: str, exc: OSError) -> ConfigError:
    reason = exc.strerror or str(exc)
    return ConfigError([ConfigIssue(file, FILE_LEVEL, f"cannot read config file: {reason}")])


def _decode(data: bytes, file: str) -> Config:
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

"""The two errors the CLI turns into one line: SettingsError, the usage error every layer raises (a bad option value
or input, one line naming the option; `corrsteer: error: <line>`, exit status 2; corrsteer.settings re-exports it),
and RunError (the data gave no usable result; exit status 1)."""
from __future__ import annotations


class SettingsError(ValueError):
    """A bad option value or input; the message is one line, "<what>, <expected>", and names the option."""


class RunError(RuntimeError):
    """The data gave no usable result (not a usage error): `corrsteer: error: <line>`, exit status 1."""

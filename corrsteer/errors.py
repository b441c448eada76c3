"""The usage error every layer raises: a bad option value or input, one line naming the option (the CLI prints
`corrsteer: error: <line>` and exits 2). corrsteer.settings re-exports it."""
from __future__ import annotations


class SettingsError(ValueError):
    """A bad option value or input; the message is one line, "<what>, <expected>", and names the option."""

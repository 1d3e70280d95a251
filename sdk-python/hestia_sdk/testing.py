"""Helpers for native tests (pytest): the plugin's configuration and its log lines."""

import json

from .host import _native


def set_config(value) -> None:
    """What `config()` returns in this process: a dict, or a JSON text."""
    _native["config"] = value if isinstance(value, str) else json.dumps(value)


def take_logs():
    """The (level, message) lines logged since the last call."""
    lines = list(_native["logs"])
    _native["logs"].clear()
    return lines

"""What the host offers every plugin: logging and the manifest's configuration.

Inside a component these call the host (`wit_world.imports.host`); under pytest they use
`hestia_sdk.testing`'s configuration and collect log lines there.
"""

import json

# Imported here, when componentize-py snapshots the plugin at build time: an import at
# call time would search the filesystem, which plugins are not given.
try:
    from wit_world.imports import host as _wit_host, types as _wit_types
except ImportError:  # under pytest
    _wit_host = _wit_types = None

_native = {"config": "{}", "logs": []}


def _host():
    return _wit_host


def config():
    """The plugin's configuration table from its manifest, as a dict (`{}` when none)."""
    host = _host()
    return json.loads(host.config() if host else _native["config"])


class log:
    """`log.info("...")` and friends: lines in the host's log, under the plugin's name."""

    @staticmethod
    def _line(level: str, message: str) -> None:
        host = _host()
        if host is None:
            _native["logs"].append((level, message))
            return
        host.log(getattr(_wit_types.LogLevel, level.upper()), message)

    @staticmethod
    def trace(message: str) -> None:
        log._line("trace", message)

    @staticmethod
    def debug(message: str) -> None:
        log._line("debug", message)

    @staticmethod
    def info(message: str) -> None:
        log._line("info", message)

    @staticmethod
    def warn(message: str) -> None:
        log._line("warn", message)

    @staticmethod
    def error(message: str) -> None:
        log._line("error", message)

"""``--config FILE``: command-line options from a TOML file.

Every long option of a subcommand can be a key, spelled with ``-`` or ``_``
(``ws_url = "wss://..."``, ``buffer-mb = 128``, ``no_promisc = true``).  Values
are checked against the option they stand for: flags take booleans, numeric
options numbers, repeatable options (``header``, ``sip_header``...) a list of
strings or one string, and options with their own syntax (``sip_ports``,
``rtp_ports``, ``metrics``...) go through the same parser as on the command line
(``sip_ports = [5060, 5080]`` or ``"5060,5080"``, ``rtp_ports = "16384-32768"``
or ``[16384, 32768]``).

The command line wins: a value from the file is only a default.  A repeatable
option given on the command line replaces the file's list rather than adding
to it.
"""

from __future__ import annotations

import argparse
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:                       # Python 3.10: tomli, the library tomllib was made from (a dependency there)
    import tomli as tomllib

__all__ = ["ConfigError", "apply_config", "load_config", "option_table"]

# never read from a file: one-off actions and runs (-D lists the interfaces, -c stops after a count)
EXCLUDED = frozenset({"help", "version", "config", "list_interfaces", "count"})


class ConfigError(Exception):
    """The file cannot be read, or a key or value in it is wrong; names the file."""


def load_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return data


def option_table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key (long option name, ``-`` and ``_`` both) → argparse action."""
    table: dict[str, argparse.Action] = {}
    for action in parser._actions:   # argparse has no public accessor
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or action.dest in EXCLUDED:
            continue
        for opt in action.option_strings:
            if opt.startswith("--"):
                name = opt[2:]
                table[name] = action
                table[name.replace("-", "_")] = action
    return table


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _convert(action: argparse.Action, key: str, value, where: str):
    def bad(expected: str):
        return ConfigError(f"{where}: {key} must be {expected}, not {_kind(value)} ({value!r})")

    def apply(v):
        if action.type is None:
            return v
        try:
            return action.type(v)
        except (argparse.ArgumentTypeError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"{where}: {key}: {e or 'invalid value'} ({v!r})") from None

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(value, dict):
        raise bad("a value")
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad("a string or a list of strings")
        return [apply(i) for i in items]
    if isinstance(value, bool):
        raise bad("a value other than a boolean")
    kind = getattr(action.type, "kind", action.type)     # rtp2ws.argtypes: ranges of int and float
    if action.type is None:
        if not isinstance(value, str):
            raise bad("a string")
    elif kind is int:
        if not isinstance(value, int):
            raise bad("an integer")
    elif kind is float:
        if not isinstance(value, (int, float)):
            raise bad("a number")
    elif isinstance(value, list) and not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in value):
        raise bad("a list of numbers or strings")
    out = apply(value)
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return out


def apply_config(parser: argparse.ArgumentParser, path: str, argv: list[str] | None = None,
                 parse=None) -> argparse.Namespace:
    """Parse ``argv`` with the file's values as defaults.

    ``parser`` is the (sub)parser whose options the file may set; ``parse`` is
    the function that parses ``argv`` (the top-level parser's ``parse_args``
    when ``parser`` is a subparser), by default ``parser.parse_args``.
    """
    parse = parse or parser.parse_args
    values = load_config(path)
    table = option_table(parser)
    scalars: dict = {}
    lists: dict = {}
    for key, value in values.items():
        action = table.get(key)
        if action is None:
            hint = " (it is given on the command line only)" if key.replace("-", "_") in EXCLUDED else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; keys are the long option names, "
                              f"e.g. interface, ws_url, sip_ports")
        converted = _convert(action, key, value, path)
        if action.dest in scalars or action.dest in lists:
            raise ConfigError(f"{path}: {action.dest} is given twice")
        if isinstance(action, argparse._AppendAction):
            lists[action.dest] = converted
        else:
            scalars[action.dest] = converted
    parser.set_defaults(**scalars)
    args = parse(argv)
    for dest, items in lists.items():
        if not getattr(args, dest, None):
            setattr(args, dest, items)
    return args

"""The typed configuration loader's building blocks, shared by every stage's settings.

Each stage owns its sections of `harness.toml` (features/settings.py; ensembles/settings.py,
which also holds `[submission] clip`, chosen out of fold there; competition.spec) and checks it against its own registries with these helpers;
harness/config.py reads the file and assembles the sections. Every message names the file,
the section and key, what was given and what is accepted, on one line.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import HarnessError


def where(source: Path | None) -> str:
    """How messages name the configuration: its file, or "configuration" for defaults."""
    return str(source) if source else "configuration"


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file.

    Raises:
        HarnessError: the file is missing or not valid TOML (with the parser's line).
    """
    if not Path(path).is_file():
        raise HarnessError(f"config file {path} does not exist; pass --config PATH")
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: not valid TOML: {exc}") from None


def check_keys(table: Mapping, allowed: set[str] | Mapping, section: str,
               source: Path | None) -> None:
    """Unknown keys are errors with the closest known key, so a typo never silently falls
    back to a default."""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(allowed))}"
            raise HarnessError(f"{where(source)}: unknown key {key!r} in {section}{hint}")


def choice(value: Any, allowed: Mapping | tuple, what: str, source: Path | None) -> str:
    """`value` when it is one of `allowed` (a registry's names)."""
    if not isinstance(value, str) or value not in allowed:
        raise HarnessError(f"{where(source)}: {what} = {value!r} is not one of "
                           f"{', '.join(allowed)}")
    return value


def whole_number(value: Any, what: str, source: Path | None) -> int:
    """`value` when it is an int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HarnessError(f"{where(source)}: {what} must be a whole number, got {value!r}")
    return value


def table(value: Any, what: str, source: Path | None) -> dict:
    """`value` when it is a TOML table."""
    if not isinstance(value, dict):
        raise HarnessError(f"{where(source)}: {what} must be a table ([{what}]), got {value!r}")
    return value


def name_list(value: Any, what: str, source: Path | None) -> tuple[str, ...]:
    """A non-empty list of names (a "a, b" or "a b" string from the command line too),
    duplicates dropped, order kept."""
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{where(source)}: {what} must be a non-empty list of names")
    return tuple(dict.fromkeys(value))


def resolve_path(value: str | None, base: Path) -> Path | None:
    """`value` relative to `base` (the config file's folder), or None when unset."""
    if value in (None, ""):
        return None
    path = Path(value).expanduser()
    # normpath, not resolve(): folds "a/../b" for readable messages, keeps symlinks as given.
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


# --- parameter schemas -------------------------------------------------------------------
# A registry entry (a head, a blend method) declares its parameters as {name: Param}; the
# same schema is checked at config load (HarnessError) and in the estimator's own `fit`
# (ValueError, as scikit-learn does).

@dataclass(frozen=True)
class Param:
    """One parameter's rule: `test(value)` is True for accepted values; `expected` says
    what is accepted, for the message."""

    test: Callable[[Any], bool]
    expected: str


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_number() -> Param:
    return Param(lambda v: _number(v) and v > 0, "a positive number")


def positive_int(minimum: int = 1) -> Param:
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return Param(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                 expected)


def non_negative_number() -> Param:
    return Param(lambda v: _number(v) and v >= 0, "a number >= 0")


def fraction() -> Param:
    return Param(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")


def unit_interval() -> Param:
    return Param(lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")


def integer() -> Param:
    return Param(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")


def boolean() -> Param:
    return Param(lambda v: isinstance(v, bool), "true or false")


def one_of(names: Mapping | tuple) -> Param:
    return Param(lambda v: isinstance(v, str) and v in names, "one of " + ", ".join(names))


def check_params(schema: Mapping[str, Param], params: Mapping[str, Any], *, where: str,
                 owner: str = "", extra: Mapping[str, Any] = (),
                 error: type[Exception] = HarnessError) -> None:
    """Raise `error` naming `where` (and `owner`, e.g. "head 'logreg'") for a key not in
    `schema` (nor in `extra`, keys another part consumes) or a value its Param refuses."""
    for key, value in params.items():
        if key in schema:
            if not schema[key].test(value):
                raise error(f"{where}: {key} = {value!r} must be {schema[key].expected}")
        elif key not in extra:
            known = ", ".join(sorted({*schema, *extra}))
            of = f" for {owner}" if owner else ""
            raise error(f"{where}: unknown parameter {key!r}{of}; known: {known}")

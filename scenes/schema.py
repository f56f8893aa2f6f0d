"""Configuration errors: ``ConfigError`` (the one exception type of every configuration file),
``load_toml``, and ``validate`` which checks a parsed table against a pydantic model and turns
its ``ValidationError`` into a ``ConfigError`` with one message per field, naming the field
(dotted path), the value and what is allowed, e.g. ``skull.thickness_min_mm=-1 is outside
[0.05, 1]``, so a user sees all problems of a file at once. Unknown keys are errors too (they
are usually typos).

``Reader`` is the older field-by-field reader, still used by the camera-model files
(``controllers.reconstruction``); scene and suite files are pydantic models.
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from scenes.fields import FieldProblem, field_problems


class ConfigError(ValueError):
    """A configuration file has invalid fields. ``errors`` lists one message per field."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = list(errors)
        super().__init__(f"{source}: {len(errors)} invalid field(s):\n  - " + "\n  - ".join(errors))


def load_toml(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [f"file not found: {path}"])
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


_MISSING = object()


class Reader:
    """Reads one table; ``prefix`` names it in messages (e.g. ``skull``)."""

    def __init__(self, table: Any, prefix: str, errors: list[str]):
        self.prefix = prefix
        self.errors = errors
        if not isinstance(table, dict):
            errors.append(f"{prefix} must be a table, got {type(table).__name__} {table!r}")
            table = {}
        self.table = table
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def _get(self, key: str, default: Any):
        self.used.add(key)
        if key in self.table:
            return self.table[key]
        if default is _MISSING:
            self.errors.append(f"{self.name(key)} is required")
        return default

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value as written (for shapes the typed readers do not cover); None if missing."""
        value = self._get(key, default)
        return None if value is _MISSING else value

    def sub(self, key: str, required: bool = False) -> "Reader":
        value = self._get(key, _MISSING if required else {})
        return Reader(value if value is not None else {}, self.name(key), self.errors)

    def number(self, key: str, lo: float, hi: float, default: Any = _MISSING) -> float | None:
        """A finite number in [lo, hi]; ``default=None`` makes the field optional (returns None)."""
        value = self._get(key, default)
        if value is _MISSING:
            return math.nan
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.errors.append(f"{self.name(key)}={value!r} must be a finite number in [{lo:g}, {hi:g}]")
            return math.nan
        if not lo <= value <= hi:
            self.errors.append(f"{self.name(key)}={value!r} is outside [{lo:g}, {hi:g}]")
            return math.nan
        return float(value)

    def integer(self, key: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if value is _MISSING:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.append(f"{self.name(key)}={value!r} must be an integer in [{lo}, {hi}]")
            return 0
        if not lo <= value <= hi:
            self.errors.append(f"{self.name(key)}={value!r} is outside [{lo}, {hi}]")
            return 0
        return value

    def vector(self, key: str, n: int, lo: float, hi: float, default: Any = _MISSING) -> list[float]:
        value = self._get(key, default)
        if value is _MISSING:
            return [math.nan] * n
        if (not isinstance(value, list) or len(value) != n
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                       for v in value)):
            self.errors.append(f"{self.name(key)}={value!r} must be a list of {n} finite numbers")
            return [math.nan] * n
        if any(not lo <= v <= hi for v in value):
            self.errors.append(f"{self.name(key)}={value!r} has entries outside [{lo:g}, {hi:g}]")
            return [math.nan] * n
        return [float(v) for v in value]

    def string(self, key: str, choices: tuple[str, ...] | None = None, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if value is _MISSING:
            return ""
        if not isinstance(value, str):
            self.errors.append(f"{self.name(key)}={value!r} must be a string")
            return ""
        if choices is not None and value not in choices:
            self.errors.append(f"{self.name(key)}={value!r} is not one of {list(choices)}")
            return ""
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if value is _MISSING:
            return False
        if not isinstance(value, bool):
            self.errors.append(f"{self.name(key)}={value!r} must be true or false")
            return False
        return value

    def finish(self) -> None:
        """Record an error for each key that no reader call asked for."""
        for key in self.table:
            if key not in self.used:
                self.errors.append(f"{self.name(key)} is not a known field "
                                   f"(known: {sorted(self.used)})")


M = TypeVar("M")


def problems_of(exc: ValidationError, model: Any, prefix: str = "") -> list[str]:
    """One message per error of ``exc`` (raised validating ``model``)."""
    return [p.message for p in field_problems(exc, model, prefix)]


def validate(model: type[M], raw: Any, source: str, prefix: str = "") -> M:
    """``raw`` validated as ``model`` (a pydantic model or dataclass); ``ConfigError(source, ...)``
    naming every bad field otherwise. Nothing but ConfigError escapes (a validator that fails
    in an unexpected way is reported as an error of the file, not as a traceback)."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(raw)
        return TypeAdapter(model).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(source, problems_of(exc, model, prefix)) from None
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(source, [f"{prefix or 'file'}: cannot be read ({type(exc).__name__}: {exc})"]) from None


__all__ = ["ConfigError", "FieldProblem", "Reader", "load_toml", "problems_of", "validate"]

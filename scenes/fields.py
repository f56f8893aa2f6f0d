"""Typed fields and their error messages, shared by every configuration model of the project
(scene files, suites, job parameters, the controllers' settings; pydantic v2).

- Field types: ``Real`` (finite; ints accepted, bools and strings not), ``Int``, ``Name``,
  ``Bool``; ``FROZEN`` (frozen models that refuse unknown keys).
- Cross-field rules: ``order_validator`` (min <= max pairs), ``cross_field_error``.
- Messages: ``field_problems`` turns pydantic's ``ValidationError`` into one ``FieldProblem``
  per field, naming the dotted field, the value and what is allowed (read from the model's
  own bounds by ``resolve``/``allowed_text``, so a message and its check cannot drift apart);
  ``raise_construction_errors_as`` gives a pydantic dataclass its own error type.

Imports only pydantic and numpy: ``scenes`` and ``controllers`` both build on it.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types
import numpy as np
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, ValidationError, ValidationInfo,
                      field_validator)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

# ----- shared field types ------------------------------------------------------------------

#: a finite number; ints are accepted (TOML ``1``), bools and strings are not
Real = Annotated[float, Strict(), Field(allow_inf_nan=False)]
#: an integer (not a bool, not a float; numpy integers are taken as ints)
Int = Annotated[int, Strict(), BeforeValidator(lambda v: int(v) if isinstance(v, np.integer) else v)]
#: a non-empty string
Name = Annotated[str, Strict(), Field(min_length=1)]
Bool = StrictBool

FROZEN = ConfigDict(frozen=True, extra="forbid")


# ----- cross-field rules -------------------------------------------------------------------

def cross_field_error(field: str, value: Any, allowed: str) -> PydanticCustomError:
    """An error of a rule between fields, attributed to ``field`` (``allowed``: in words; it may
    name sibling fields as ``{sibling:NAME}``, which messages write as their full dotted path)."""
    return PydanticCustomError("cross_field", "{field}={value} must be {allowed}",
                               {"field": field, "value": value, "allowed": allowed})


def order_validator(pairs: typing.Iterable[tuple[str, str]]) -> Any:
    """A field validator, for a model's body or ``create_model``, checking that in each pair
    ``(lo, hi)`` of fields ``lo <= hi`` (the error names ``lo``; None: no limit). It runs on ``hi`` with ``lo``
    already validated, so it is reported together with other fields' errors. ``lo`` must be
    declared before ``hi``."""
    lower = {hi: lo for lo, hi in pairs}

    def check(value: Any, info: ValidationInfo) -> Any:
        lo = lower[info.field_name]
        if value is not None and info.data.get(lo) is not None and info.data[lo] > value:
            raise PydanticCustomError("order", "{field}={value} exceeds {other}={other_value}",
                                      {"field": lo, "value": info.data[lo], "other": info.field_name,
                                       "other_value": value})
        return value

    return field_validator(*lower)(check)


# ----- error messages ----------------------------------------------------------------------

@dataclass(frozen=True)
class FieldProblem:
    field: str          # dotted path, e.g. "skull.thickness_min_mm"
    value: Any          # the offending input (None when missing)
    allowed: str        # what is allowed, in words
    message: str        # names all three


def fmt_value(value: Any, limit: int = 60) -> str:
    """``repr`` of a user's value, short and never raising (huge ints, long strings)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"<integer of {len(str(abs(value))) if value.bit_length() < 14000 else 'over 4000'} digits>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a message must never fail
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _num(x: Any) -> str:
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) < 10**30:
        return str(x)
    return f"{x:g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else fmt_value(x)


def _strip(tp: Any) -> tuple[Any, list]:
    """(bare type, metadata) of an annotation, unwrapping Annotated and Optional."""
    meta: list = []
    while True:
        if typing.get_origin(tp) is Annotated:
            tp, *m = typing.get_args(tp)
            for x in m:
                meta.extend(x.metadata if isinstance(x, FieldInfo) else [x])
            continue
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp, meta


def _fields_of(tp: Any) -> dict[str, FieldInfo] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_fields
    return getattr(tp, "__pydantic_fields__", None)


def resolve(root: Any, loc: tuple) -> tuple[Any, list, FieldInfo | None]:
    """The (bare type, metadata, FieldInfo) at ``loc`` inside the model type ``root``; (None, [],
    None) where the path cannot be followed (e.g. inside a union)."""
    tp, meta, info = root, [], None
    for part in loc:
        fields = _fields_of(tp)
        if fields is not None and isinstance(part, str):
            if part not in fields:
                return None, [], None
            info = fields[part]
            tp, meta = _strip(info.annotation)
            meta = list(info.metadata) + meta
            continue
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (tuple, list) and isinstance(part, int) and args:
            elem = args[min(part, len(args) - 1)] if origin is tuple and args[-1] is not Ellipsis else args[0]
            tp, meta = _strip(elem)
            info = None
            continue
        if origin is dict and len(args) == 2:
            tp, meta = _strip(args[1])
            info = None
            continue
        return None, [], None
    return tp, meta, info


def interval_text(meta: list) -> str:
    """``[lo, hi]``, ``(lo, hi]``, ``>= lo``... from annotated-types bounds; "" when unbounded."""
    lo = hi = None
    lo_open = hi_open = False
    for m in meta:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi, hi_open = m.lt, True
    if lo is not None and hi is not None:
        return f"{'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return ""


def length_text(meta: list) -> str:
    lo = next((m.min_length for m in meta if isinstance(m, annotated_types.MinLen)), None)
    hi = next((m.max_length for m in meta if isinstance(m, annotated_types.MaxLen)), None)
    if lo and hi:
        return f" of {lo}-{hi} characters"
    return " (not empty)" if lo == 1 else ""


def allowed_text(tp: Any, meta: list) -> str:
    """What a field of type ``tp`` with bounds ``meta`` allows, in words."""
    interval = interval_text(meta)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is float:
        return "a finite number" + (f" in {interval}" if interval.startswith(("[", "(")) else
                                    f" {interval}" if interval else "")
    if tp is int:
        return "an integer" + (f" in {interval}" if interval.startswith(("[", "(")) else
                               f" {interval}" if interval else "")
    if tp is str:
        return "a string" + length_text(meta)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        inner = allowed_text(*_strip(args[0]))
        return f"a list of {len(args)} values, each {inner}"
    if origin in (list, tuple):
        return "a list"
    if _fields_of(tp) is not None or origin is dict:
        return "a table"
    return interval or "see the docs"


_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_TYPE = {"float_type", "float_parsing", "finite_number", "int_type", "int_parsing", "int_from_float",
         "bool_type", "bool_parsing", "string_type", "literal_error", "string_too_short", "string_too_long"}
_EXTRA = {"extra_forbidden", "unexpected_keyword_argument"}


def dotted(prefix: str, loc: tuple) -> str:
    """``prefix.a.b[2]`` from a pydantic ``loc`` (a key with a dot is quoted: ``a."b.c"``)."""
    out = prefix
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
            continue
        p = f'"{p}"' if "." in p or not p else p
        out += f".{p}" if out else p
    return out


def field_problems(exc: ValidationError, root: Any, prefix: str = "") -> list[FieldProblem]:
    """One ``FieldProblem`` per error of ``exc`` (raised validating the model type ``root``),
    fields named by dotted path under ``prefix``."""
    out: list[FieldProblem] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
        if kind == "cross_field":          # a model validator's rule: loc is the model's
            loc = loc + tuple(ctx["field"].split("."))
            value = ctx["value"]
        elif kind == "order":              # order_validator, on the upper field
            loc = loc[:-1] + (ctx["field"],)
            value = ctx["value"]
        path = dotted(prefix, loc) or "(the whole file)"

        def name(field: str, loc: tuple = loc) -> str:
            return dotted(prefix, loc[:-1] + (field,))

        tp, meta, _ = resolve(root, loc)
        if kind == "order":
            allowed = f"<= {name(ctx['other'])}"
            msg = f"{path}={_num(value)} exceeds {name(ctx['other'])}={_num(ctx['other_value'])}"
        elif kind == "cross_field":
            allowed = str(ctx["allowed"])
            while "{sibling:" in allowed:
                i = allowed.index("{sibling:")
                j = allowed.index("}", i)
                allowed = allowed[:i] + name(allowed[i + 9:j]) + allowed[j + 1:]
            msg = f"{path}={_num(value)} must be {allowed}"
        elif kind == "missing":
            allowed = allowed_text(tp, meta) if tp is not None else "a value"
            msg = f"{path} is required ({allowed})"
            value = None
        elif kind in _EXTRA:
            parent, _, _ = resolve(root, loc[:-1])
            known = sorted(_fields_of(parent) or {})
            allowed = f"one of the known fields {known}"
            msg = f"{path} is not a known field (known: {known})"
        elif tp is not None and kind in _RANGE:
            allowed = interval_text(meta) or err["msg"]
            msg = f"{path}={fmt_value(value)} is outside {allowed}"
        elif tp is not None and kind in _TYPE:
            allowed = allowed_text(tp, meta)
            msg = f"{path}={fmt_value(value)} must be {allowed}"
        elif kind in ("model_type", "dict_type", "dataclass_type", "model_attributes_type"):
            allowed = "a table"
            msg = f"{path}={fmt_value(value)} must be a table"
        else:
            allowed = err["msg"].removeprefix("Value error, ")
            msg = f"{path}={fmt_value(value)}: {allowed}"
        out.append(FieldProblem(path, value, allowed, msg))
    return out


def raise_construction_errors_as(cls: Any, error: type[Exception], section: str):
    """Make constructing the pydantic dataclass ``cls`` raise ``error`` (one message per field,
    named ``section.<field>``, with the value and what is allowed) instead of pydantic's
    ``ValidationError``; returns the converter, for re-validation paths."""
    validated_init = cls.__init__

    def convert(exc: ValidationError) -> Exception:
        return error("; ".join(p.message for p in field_problems(exc, cls, section)))

    def init(self, *args, **kwargs) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except ValidationError as exc:
            raise convert(exc) from None

    cls.__init__ = init
    return convert

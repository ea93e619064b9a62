"""Shared base for every typed configuration schema: frozen, unknown keys rejected, booleans kept apart.

Pydantic's lax mode turns ``true`` into ``1`` for a number field and ``0``/``1`` into a boolean; in a
config both are typos that would silently change results (``model.head_dim=true`` would give
one-wide heads). :class:`Schema` therefore refuses a boolean where the field holds numbers (at any
depth: ``percentiles_to_calculate: [50, true]``) and anything but ``true``/``false`` where it holds a
boolean, while keeping what YAML and Hydra give for real numbers: ints for floats and whole floats
such as ``1e4`` for ints.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class MixedTypeError(ValueError):
    """A boolean where numbers belong (or the reverse), at ``path`` inside the field's value."""

    def __init__(self, path: tuple[str | int, ...], value: Any, allowed: str) -> None:
        self.path = path
        self.value = value
        self.allowed = allowed
        super().__init__(allowed)


def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X`` (constrained types such as PositiveInt are Annotated)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def admits_bool(annotation: Any) -> bool:
    """Whether a field of this type may hold ``True``/``False`` (bool, Any, a union with either)."""
    annotation = _strip(annotation)
    if annotation is bool or annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(admits_bool(arg) for arg in typing.get_args(annotation))
    if origin is Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    return False


def bool_problem(value: Any, annotation: Any) -> MixedTypeError | None:
    """Why ``value`` mixes booleans and numbers for ``annotation`` (None when it does not)."""
    problem = _problem(value, annotation)
    if problem is None:
        return None
    if isinstance(problem, MixedTypeError):
        return problem
    return MixedTypeError((), value, problem)


def _problem(value: Any, annotation: Any) -> str | MixedTypeError | None:
    annotation = _strip(annotation)
    if annotation is Any or annotation is object:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if isinstance(value, bool) and admits_bool(annotation):
            return None
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            return _problem(value, members[0])
        return "a value that is not true/false" if isinstance(value, bool) else None
    if annotation is bool:
        return None if isinstance(value, bool) or value is None else "true or false"
    if isinstance(value, bool):
        if origin is Literal:
            return None if admits_bool(annotation) else "one of " + ", ".join(map(str, args))
        if isinstance(annotation, type) and issubclass(annotation, (int, float)):
            return "a number, not true/false"
        if isinstance(annotation, type) and issubclass(annotation, str):
            return "text, not true/false"
        return None
    if origin in (tuple, list, set, frozenset) or (isinstance(origin, type) and issubclass(origin, Sequence)):
        if isinstance(value, (list, tuple)) and args:
            element = args[0]
            for index, item in enumerate(value):
                kind = args[index] if origin is tuple and args[-1] is not Ellipsis and index < len(args) else element
                problem = bool_problem(item, kind)
                if problem:
                    return MixedTypeError((index, *problem.path), problem.value, problem.allowed)
        return None
    is_mapping = origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping))
    if is_mapping and isinstance(value, Mapping) and len(args) == 2:
        for name, item in value.items():
            problem = bool_problem(item, args[1])
            if problem:
                return MixedTypeError((str(name), *problem.path), problem.value, problem.allowed)
    return None


class Schema(BaseModel):
    """A frozen pydantic model that rejects unknown keys (so ``+framework.typo=1`` is an error).

    Booleans and numbers are not interchangeable (see the module docstring).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse ``true`` for a number and ``1`` for a boolean, at any depth of the field's value."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            problem = bool_problem(value, field.annotation)
            if problem:
                raise problem
        return value

"""Name -> factory registries for the open families (losses, objectives, masking schemes, readers)."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class ParameterError(TypeError, ValueError):
    """Parameters a factory does not accept: a config mistake (a ValueError, so the tools report it in one line)."""


class Registry:
    """Name -> factory for one open family; duplicates and unknown names fail loudly.

    Args:
        kind: what the family's members are, for the messages ("loss", "dataset reader", ...).

    >>> SCALES = Registry("scale")
    >>> @SCALES.register("double")
    ... def double(value: float, factor: float = 2.0) -> float:
    ...     return value * factor
    >>> SCALES.build("double", value=3.0), SCALES.build_in_context("double", {"value": 1.0}, {"factor": 5.0, "x": 0})
    (6.0, 5.0)
    >>> SCALES.get("triple")
    Traceback (most recent call last):
    KeyError: "unknown scale 'triple'; choose from ['double']"
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._items[name] = factory
            return factory

        return add

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose from {sorted(self._items)}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            raise ParameterError(f"{self.kind} {name!r}: bad parameters {sorted(kwargs)}: {err}") from None

    def build_in_context(self, name: str, params: dict[str, Any] | None = None,
                         context: dict[str, Any] | None = None) -> Any:
        """Construct `name` with `params` plus the `context` arguments its constructor accepts (a param of the
        same name wins over the context). Unknown params raise, naming the factory and the accepted ones; the
        context (dataset facts, config values every member may or may not use) is offered, never forced."""
        factory, params, context = self.get(name), dict(params or {}), dict(context or {})
        accepted = inspect.signature(factory).parameters
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            options = sorted(set(accepted) - set(context))
            raise ParameterError(f"{self.kind} {name!r}: unknown parameter(s) {unknown}; accepted: {options}")
        extra = {key: value for key, value in self.accepted(name, context).items() if key not in params}
        try:
            return factory(**extra, **params)
        except TypeError as err:
            raise ParameterError(f"{self.kind} {name!r} with parameters {params}: {err}") from None

    def accepted(self, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """The entries of `context` that `name`'s constructor takes as keyword arguments."""
        parameters = inspect.signature(self.get(name)).parameters
        return {key: value for key, value in context.items() if key in parameters}

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

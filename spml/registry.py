"""Name -> factory registries for the open families (losses, objectives, masking schemes, readers)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class ParameterError(TypeError, ValueError):
    """Parameters a factory does not accept: a config mistake (a ValueError, so the tools report it in one line).

    Also a TypeError, what a call with wrong parameters raises.
    """


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
        """Decorator that registers a factory under `name`.

        Args:
            name: the name configs use; a KeyError if it is already taken.

        Returns:
            A decorator that stores the factory and returns it unchanged.
        """

        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._items[name] = factory
            return factory

        return add

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as `name`.

        Args:
            name: a registered name.

        Returns:
            The factory; a KeyError naming the valid choices if `name` is unknown.
        """
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose from {sorted(self._items)}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the factory registered as `name` with `kwargs`.

        Args:
            name: a registered name (a KeyError listing the choices otherwise).
            **kwargs: the factory's arguments.

        Returns:
            What the factory returns; a ParameterError naming the family, the name and the parameters if the
            factory rejects them (raises TypeError).
        """
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            raise ParameterError(f"{self.kind} {name!r}: bad parameters {sorted(kwargs)}: {err}") from None

    def build_in_context(
        self, name: str, params: dict[str, Any] | None = None, context: dict[str, Any] | None = None
    ) -> Any:
        """Construct `name` with `params` plus the `context` arguments its constructor accepts.

        A param of the same name wins over the context. The context (dataset facts, config values every member may
        or may not use) is offered, never forced.

        Args:
            name: a registered name.
            params: the member's own parameters (None: none); one its constructor does not accept raises a
                ParameterError naming the factory and the accepted ones.
            context: shared keyword arguments, passed only where the constructor takes them (None: none).

        Returns:
            The constructed object; a ParameterError if the constructor still raises TypeError.
        """
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
        """The entries of `context` that `name`'s constructor takes as keyword arguments.

        Args:
            name: a registered name.
            context: candidate keyword arguments.

        Returns:
            The subset of `context` whose keys are parameters of the factory's signature.
        """
        parameters = inspect.signature(self.get(name)).parameters
        return {key: value for key, value in context.items() if key in parameters}

    def names(self) -> list[str]:
        """The registered names.

        Returns:
            Sorted list of names.
        """
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

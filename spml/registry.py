"""Name -> factory registries for the open families (losses, objectives, masking schemes, readers)."""
from __future__ import annotations

from typing import Any, Callable


class ParameterError(TypeError, ValueError):
    """Parameters a factory does not accept: a config mistake (a ValueError, so the tools report it in one line)."""


class Registry:
    """Name -> factory for one open family; duplicates and unknown names fail loudly."""

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

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

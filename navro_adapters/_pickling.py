"""Pickling by configuration, for objects sent to worker processes (spawn, Dask, Spark).

An object holding locks, a cache, connections or a client travels as the arguments that built
it and is rebuilt by its constructor in the receiving process, so everything made at run time
(locks, cached tokens, flights, back-offs, counters) is new there. What cannot travel raises a
:class:`~navro_adapters.errors.ConfigurationError` naming the argument and what to do instead.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Tuple

from .errors import ConfigurationError

__all__ = ["Reduced", "construct", "not_picklable"]

#: What ``__reduce__`` returns here: a callable and its arguments.
Reduced = Tuple[Callable[..., Any], Tuple[Any, ...]]


def construct(cls: Callable[..., Any], args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """``cls(*args, **kwargs)``: how a pickled object is rebuilt (keyword arguments included)."""
    return cls(*args, **kwargs)


def not_picklable(field: str, what: str, instead: str) -> ConfigurationError:
    """The error for an argument that cannot travel in a pickle, saying what to do instead."""
    return ConfigurationError(field, f"{what} cannot be pickled; {instead}")

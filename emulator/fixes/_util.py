"""Small helpers shared by the fixes."""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable


def patch(owner: Any, name: str, replacement: Callable) -> Callable:
    """Replace ``owner.name`` with ``replacement``; return the original.

    The original (None when moto has no such attribute) is kept as
    ``owner._emulator_orig_<name>`` so a fix can be applied twice without
    wrapping itself.
    """
    saved = f"_emulator_orig_{name}"
    if not hasattr(owner, saved):
        setattr(owner, saved, getattr(owner, name, None))
    original = getattr(owner, saved)
    setattr(owner, name, replacement)
    return original


def truthy(value: Any) -> bool:
    """A boolean request parameter as moto hands it over (bool, str or None)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() == "true"


class BackendLock:
    """A re-entrant lock per moto backend instance, and the wrapper that runs a response
    handler under it (``iot_concurrency`` and ``s3_conditional`` each have one).

    The lock is kept on the backend instance (as ``attribute``), so moto's reset, which
    empties the instance's ``__dict__``, starts it afresh with the rest of the state.
    ``backend_of`` names the response object's attribute that holds the backend.
    """

    _create = threading.Lock()

    def __init__(self, attribute: str, backend_of: str) -> None:
        self.attribute = attribute
        self.backend_of = backend_of
        self.mark = f"{attribute}_held"

    def lock_for(self, backend: Any) -> threading.RLock:
        """The backend's lock, created on first use."""
        lock = backend.__dict__.get(self.attribute)
        if lock is None:
            with BackendLock._create:
                lock = backend.__dict__.get(self.attribute)
                if lock is None:
                    lock = threading.RLock()
                    setattr(backend, self.attribute, lock)
        return lock

    def wrap(self, handler: Callable) -> Callable:
        """``handler``, run under its response's backend lock."""

        @functools.wraps(handler)
        def locked(response, *args, **kwargs):
            with self.lock_for(getattr(response, self.backend_of)):
                return handler(response, *args, **kwargs)

        setattr(locked, self.mark, True)
        return locked

    def is_wrapped(self, handler: Callable) -> bool:
        return bool(getattr(handler, self.mark, False))

"""Small helpers shared by the fixes."""

from __future__ import annotations

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

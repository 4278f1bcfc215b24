"""The IoT registry's change counter, and sorted snapshots cached on it.

The paging fixes (ListThings, ListCertificates, ListTargetsForPolicy,
ListThingsInThingGroup, SearchIndex) must answer one page of 100,000 things in
milliseconds.  Scanning and sorting the whole registry for every page would
cost a full pass per page, so each keeps a sorted snapshot (the keys of what it
lists, in listing order) and rebuilds it only when the registry has changed
since it was built.

What counts as a change is found structurally, not by listing the operations
that write (in-process writers such as fleet provisioning and bulk
registration call moto's backend, or set group members, directly):

* the backend's dicts ``things``, ``thing_types``, ``thing_groups``,
  ``certificates``, ``policies``, ``principal_policies`` and
  ``principal_things``, and every thing group's ``things``, are replaced by
  :class:`CountingDict` (an OrderedDict that bumps the counter on every
  insert, replace or delete), installed by wrapping the current
  ``IoTBackend.__init__`` and ``FakeThingGroup.__init__`` (moto's reset re-runs
  ``__init__``; a later fix that replaces one is wrapped again by the next
  ``install()``);
* setting any attribute of a thing, thing group or certificate after it was
  made (``thing_type``, ``attributes``, ``status``, a group's parent, ...)
  bumps it too (``__setattr__``); moto and the fixes replace a thing's
  ``attributes`` dict rather than editing it in place.

The counter is one process-wide number (``version()``), so a change in any
account or region invalidates every snapshot: harmless (a rebuild), simple.
A snapshot is stamped with the version read *before* it was built, so a
change racing the build leaves it stale, never wrong.

Snapshots themselves hold only keys; what a page shows is read live.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any, Callable

_clock = itertools.count(1)
_state = {"version": 0}


def bump() -> None:
    """Record a change of the registry (any account/region)."""
    _state["version"] = next(_clock)


def version() -> int:
    """The current change counter; equal values mean nothing changed in between."""
    return _state["version"]


class CountingDict(OrderedDict):
    """An OrderedDict whose every change bumps the registry's counter."""

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        bump()

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        bump()

    def pop(self, key, *default):
        result = super().pop(key, *default)
        bump()
        return result

    def popitem(self, last: bool = True):
        result = super().popitem(last)
        bump()
        return result

    def clear(self) -> None:
        super().clear()
        bump()

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        bump()

    def setdefault(self, key, default=None):
        result = super().setdefault(key, default)
        bump()
        return result


BACKEND_DICTS = (
    "things",
    "thing_types",
    "thing_groups",
    "certificates",
    "policies",
    "principal_policies",
    "principal_things",
)


def _counting(value):
    if isinstance(value, CountingDict) or not isinstance(value, dict):
        return value
    return CountingDict(value)


_MARK = "_emulator_counts_changes"


def _wrap_init(cls, names: tuple[str, ...] = ()) -> None:
    """Wrap the class's current ``__init__`` (another fix's wrapper included) once: after it,
    the named dicts are CountingDicts and later attribute sets count (see _wrap_setattr)."""
    current = cls.__dict__.get("__init__")
    if current is not None and getattr(current, _MARK, False):
        return
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        for name in names:
            if name in self.__dict__:
                object.__setattr__(self, name, _counting(self.__dict__[name]))
        object.__setattr__(self, "_emulator_counted", True)
        bump()

    setattr(__init__, _MARK, True)
    cls.__init__ = __init__


def _wrap_setattr(cls, dict_names: tuple[str, ...] = ()) -> None:
    """After ``__init__``, setting any attribute bumps the counter."""
    current = cls.__dict__.get("__setattr__")
    if current is not None and getattr(current, _MARK, False):
        return

    def __setattr__(self, name, value):
        if name in dict_names:
            value = _counting(value)
        object.__setattr__(self, name, value)
        if self.__dict__.get("_emulator_counted"):
            bump()

    setattr(__setattr__, _MARK, True)
    cls.__setattr__ = __setattr__


_applied = threading.Lock()


def install() -> None:
    """Count changes of moto's IoT registry.  Idempotent, and safe after another fix has
    replaced one of these ``__init__`` methods again (each is re-wrapped if it lost ours)."""
    from moto.iot import models

    with _applied:
        _wrap_init(models.IoTBackend, BACKEND_DICTS)
        _wrap_setattr(models.IoTBackend, BACKEND_DICTS)
        _wrap_init(models.FakeThingGroup, ("things",))
        _wrap_setattr(models.FakeThingGroup, ("things",))
        for cls in (models.FakeThing, models.FakeCertificate):
            _wrap_init(cls)
            _wrap_setattr(cls)
        # Backends made before this ran (none in the server; tests may have some).
        for account in list(models.iot_backends.keys()):
            for backend in list(models.iot_backends[account].values()):
                for name in BACKEND_DICTS:
                    if name in backend.__dict__:
                        object.__setattr__(backend, name, _counting(backend.__dict__[name]))
                object.__setattr__(backend, "_emulator_counted", True)
                for group in list(backend.thing_groups.values()):
                    object.__setattr__(group, "things", _counting(group.things))
                    object.__setattr__(group, "_emulator_counted", True)
                for thing in list(backend.things.values()):
                    object.__setattr__(thing, "_emulator_counted", True)
                for cert in list(backend.certificates.values()):
                    object.__setattr__(cert, "_emulator_counted", True)


class Snapshots:
    """Sorted key lists cached per backend and name, rebuilt when the registry changed.

    ``get(backend, key, build, extra=())``: ``build()`` returns the list; it is
    kept in the backend's ``__dict__`` (so moto's reset drops it) with the
    registry version read before building plus ``extra`` (other counters the
    list depends on, e.g. the shadow store's).  At most ``limit`` lists are
    kept per backend (oldest dropped)."""

    def __init__(self, attribute: str, limit: int = 64) -> None:
        self.attribute = attribute
        self.limit = limit
        self._lock = threading.Lock()
        self.builds = 0  # how many times a list was (re)built; read by tests and benchmarks

    def get(self, backend: Any, key: Any, build: Callable[[], list], extra: tuple = ()) -> list:
        stamp = (version(),) + tuple(extra)
        cache = backend.__dict__.get(self.attribute)
        if cache is None:
            with self._lock:
                cache = backend.__dict__.get(self.attribute)
                if cache is None:
                    cache = OrderedDict()
                    object.__setattr__(backend, self.attribute, cache)
        hit = cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = build()
        self.builds += 1
        with self._lock:
            cache[key] = (stamp, value)
            cache.move_to_end(key)
            while len(cache) > self.limit:
                cache.popitem(last=False)
        return value

"""Fix: IoT ListThingsInThingGroup pages like AWS and honours ``recursive``.

AWS behaviour restored (API reference, "ListThingsInThingGroup"; range from
botocore's iot model, ``RegistryMaxResults``)
    ``GET /thing-groups/{thingGroupName}/things?maxResults=&nextToken=&recursive=``
    answers ``{"things": [thing name...], "nextToken"?}``: at most
    ``maxResults`` names (valid range 1..250; outside it
    InvalidRequestException, HTTP 400), ``nextToken`` absent on the last
    page.  ``recursive=true`` "lists things in the specified group and in all
    child groups", each thing once.  An unknown group is
    ResourceNotFoundException (404).  AWS documents no default page size and
    no order.

What moto 5.2.1 does instead
    "Pagination and the recursive-parameter is not yet implemented": every
    member on one page, no ``nextToken``, child groups' things left out.

The emulator's choices (AWS leaves them open)
    Default page size 25; names in code-point order.  The sorted member list
    of each (group, recursive) is kept until the registry changes
    (``_registry_version``: membership dicts count their changes); the token
    names the last thing of its page (``_paging``).
"""

from __future__ import annotations

from . import _paging
from ._registry_version import Snapshots
from ._util import patch, truthy

DEFAULT_MAX_RESULTS = 25
MAX_RESULTS = 250
OP = "ListThingsInThingGroup"

snapshots = Snapshots("_emulator_group_things")


def member_names(backend, group, recursive: bool) -> list[str]:
    def build() -> list[str]:
        groups = [group]
        if recursive:
            children: dict[str, list] = {}
            for candidate in list(backend.thing_groups.values()):
                parent = getattr(candidate, "parent_group_name", None)
                if parent:
                    children.setdefault(parent, []).append(candidate)
            todo = [group]
            seen = {group.thing_group_name}
            while todo:
                current = todo.pop()
                for child in children.get(current.thing_group_name, []):
                    if child.thing_group_name not in seen:
                        seen.add(child.thing_group_name)
                        groups.append(child)
                        todo.append(child)
        names = set()
        for g in groups:
            names.update(thing.thing_name for thing in list(g.things.values()))
        return sorted(names)

    return snapshots.get(backend, (group.thing_group_name, recursive), build)


def _list_things_in_thing_group(self):
    query = self.querystring
    size = _paging.page_size(query.get("maxResults", [None])[0], DEFAULT_MAX_RESULTS, MAX_RESULTS, "maxResults")
    after = _paging.decode(OP, query.get("nextToken", [None])[0], "nextToken")
    backend = self.iot_backend
    group = backend.describe_thing_group(self._get_param("thingGroupName"))
    names = member_names(backend, group, truthy(query.get("recursive", [None])[0]))
    chunk, next_after = _paging.page(names, after, size)
    return _paging.answer(
        {
            "things": chunk,
            "nextToken": _paging.encode(OP, next_after) if next_after is not None else None,
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    from . import _registry_version

    _registry_version.install()
    patch(IoTResponse, "list_things_in_thing_group", _list_things_in_thing_group)

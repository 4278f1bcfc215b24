"""Fix: IoT ListThings pages like AWS, at fleet scale.

AWS behaviour restored (API reference, "ListThings"; ranges from botocore's
iot model, ``RegistryMaxResults``)
    ``GET /things?maxResults=&nextToken=&thingTypeName=&attributeName=&attributeValue=&usePrefixAttributeValue=``
    answers ``{"things": [ThingAttribute...], "nextToken"?}``: at most
    ``maxResults`` things (valid range 1..250; outside it
    InvalidRequestException, HTTP 400), ``nextToken`` absent on the last
    page.  ``thingTypeName`` keeps the things of that type (exact name);
    ``attributeName`` + ``attributeValue`` the things whose attribute equals
    the value, or starts with it when ``usePrefixAttributeValue=true``
    ("When true, the action returns the thing resources with attribute
    values that start with the attributeValue provided").  Each entry:
    thingName, thingTypeName (when typed), thingArn, attributes, version.
    AWS documents no default page size and no order.

What moto 5.2.1 does instead
    Default page of 50 ("not the default, but makes testing easier"), no
    range check (``maxResults=0`` or 1000 accepted), ``usePrefixAttributeValue``
    ignored, an attribute filter without a type filter also fine, but every
    page rebuilds the dict of every thing and scans to the token: one page of
    250 out of 100,000 things costs a pass over all of them.

The emulator's choices (AWS leaves them open)
    Default page size 25 (as ListCertificates' documented default).  Things are
    listed by thing name (code-point order).  ``attributeName`` without
    ``attributeValue`` lists the things that have the attribute.  The sorted
    list of matching names is cached per filter and rebuilt only after the
    registry changed (``_registry_version``), and the token names the last
    thing of its page (``_paging``), so a page costs a bisect plus its own
    entries.
"""

from __future__ import annotations

from . import _paging
from ._registry_version import Snapshots
from ._util import patch, truthy

DEFAULT_MAX_RESULTS = 25
MAX_RESULTS = 250
OP = "ListThings"

snapshots = Snapshots("_emulator_list_things")


def _arg(response, name):
    return response.querystring.get(name, [None])[0]


def matching_names(backend, thing_type: str | None, attr_name: str | None, attr_value: str | None, prefix: bool) -> list[str]:
    def build() -> list[str]:
        names = []
        for thing in list(backend.things.values()):
            if thing_type is not None:
                if thing.thing_type is None or thing.thing_type.thing_type_name != thing_type:
                    continue
            if attr_name is not None:
                value = (thing.attributes or {}).get(attr_name)
                if value is None:
                    continue
                if attr_value is not None:
                    if prefix and not str(value).startswith(attr_value):
                        continue
                    if not prefix and str(value) != attr_value:
                        continue
            names.append(thing.thing_name)
        names.sort()
        return names

    return snapshots.get(backend, (thing_type, attr_name, attr_value, prefix), build)


def thing_by_name(backend):
    """name -> FakeThing (moto keys things by ARN), cached like the lists."""
    return by_name.get(backend, "by-name", lambda: {t.thing_name: t for t in list(backend.things.values())})


by_name = Snapshots("_emulator_things_by_name", limit=1)


def _list_things(self):
    size = _paging.page_size(_arg(self, "maxResults"), DEFAULT_MAX_RESULTS, MAX_RESULTS, "maxResults")
    after = _paging.decode(OP, _arg(self, "nextToken"), "nextToken")
    backend = self.iot_backend
    names = matching_names(
        backend,
        _arg(self, "thingTypeName") or None,
        _arg(self, "attributeName") or None,
        _arg(self, "attributeValue"),
        truthy(_arg(self, "usePrefixAttributeValue")),
    )
    chunk, next_after = _paging.page(names, after, size)
    things = thing_by_name(backend)
    entries = [things[name].to_dict() for name in chunk if name in things]
    return _paging.answer(
        {
            "things": entries,
            "nextToken": _paging.encode(OP, next_after) if next_after is not None else None,
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    from . import _registry_version

    _registry_version.install()
    patch(IoTResponse, "list_things", _list_things)

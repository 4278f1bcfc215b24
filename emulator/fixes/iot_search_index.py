"""Fix: Fleet Indexing's SearchIndex (index ``AWS_Things``), DescribeIndex, ListIndices.

AWS behaviour restored
    SearchIndex (API reference "SearchIndex"; botocore's model):
    ``POST /indices/search`` with ``{"indexName"?, "queryString", "maxResults"?,
    "nextToken"?, "queryVersion"?}`` answers ``{"things": [ThingDocument...],
    "thingGroups": [], "nextToken"?}``.

    * ``indexName`` defaults to ``AWS_Things``, the index of every thing
      (developer guide, "Fleet indexing").  While thing indexing is OFF that
      index does not exist: ResourceNotFoundException (HTTP 404) "Index
      AWS_Things does not exist. Please enable index by calling
      UpdateIndexingConfiguration" -- the message AWS answered in
      csuermann/node-red-contrib-virtual-smart-home#16 (the model also lists
      IndexNotReadyException, "The index is not ready", for an index still
      being built; the emulator's index is ready at once).  Another index
      name is ResourceNotFoundException too.
    * ``maxResults``: "This maximum number cannot exceed 100" (minimum 1 in
      the model); outside 1..100 InvalidRequestException (HTTP 400).
      ``nextToken`` absent on the last page.
    * ``queryString``: the query language (developer guide "Query syntax");
      the emulator's subset is in ``_fleet_query``.  An invalid query (or one
      outside the subset, which the message says) is InvalidQueryException
      (HTTP 400).
    * ThingDocument: ``thingName``, ``thingId``, ``thingTypeName`` (typed
      things), ``thingGroupNames`` (the static groups it is in), ``attributes``;
      ``shadow`` only with ``thingIndexingMode`` REGISTRY_AND_SHADOW and a
      classic shadow: a JSON **string** (the model's type) of ``{"desired"?,
      "reported"?, "metadata": {"desired"?, "reported"?}, "version",
      "hasDelta"}`` (the guide's "Managing thing indexing" example shows this
      object); ``connectivity`` only with ``thingConnectivityIndexingMode``
      STATUS: ``{"connected", "timestamp" (epoch ms), "disconnectReason"?}``,
      ``{"connected": false}`` for a thing that never connected (see
      ``iot_connectivity``).
    * Eventual consistency: AWS updates the index "continually", typically
      within seconds of a change; the emulator reads the registry, the shadow
      store and the gateway's connectivity at the moment of the call, so a
      change is visible at once.

    DescribeIndex (``GET /indices/{indexName}``): ``{"indexName", "indexStatus":
    "ACTIVE", "schema"}``, schema ``REGISTRY`` / ``REGISTRY_AND_SHADOW`` /
    ``REGISTRY_AND_CONNECTIVITY_STATUS`` /
    ``REGISTRY_AND_SHADOW_AND_CONNECTIVITY_STATUS`` for AWS_Things (API
    reference "DescribeIndex"), ``THING_GROUPS`` for AWS_ThingGroups; an index
    not enabled is ResourceNotFoundException.  ListIndices (``GET /indices``,
    ``maxResults`` 1..500): the enabled index names.

What moto 5.2.1 does instead
    SearchIndex answers whatever the indexing configuration (OFF included),
    ignores ``indexName``, ``maxResults`` and ``nextToken`` (every match on one
    page), matches only a few forms (``thingTypeName:``, ``thingName:``,
    ``thingGroupNames:``, ``attributes.x:``; any other term is a substring
    search of the thing name), reports every thing as connected now (timestamp
    in seconds), and puts the shadow in as a JSON string only when moto's own
    shadow store has one (the emulator's shadows live elsewhere, fix
    ``iotdata_shadow``, so never).  DescribeIndex and ListIndices are not
    implemented (HTTP 404 "not implemented").

At scale
    The sorted names of a query's matches are cached per query and indexing
    configuration, stamped with the registry's change counter
    (``_registry_version``) plus the shadow store's (``iotdata_shadow.version``)
    when the query looks at ``shadow.*`` and the connectivity store's when it
    looks at ``connectivity.*``: ``thingTypeName:TYPE`` is evaluated once per
    registry change, not once per page, and devices connecting or updating
    shadows do not invalidate it.  Pages are keyset (``_paging``: the token
    names the last thing of its page, things in name order), and a page's
    documents are built for its own things only.

Not emulated: the AWS_ThingGroups index's search (SearchIndex on it is
InvalidRequestException saying so), named shadows, Device Defender
violations, aggregation APIs, custom-field typing.
"""

from __future__ import annotations

import json

from . import _fleet_query, _paging, iot_connectivity
from ._registry_version import Snapshots
from ._util import patch

THINGS_INDEX = "AWS_Things"
GROUPS_INDEX = "AWS_ThingGroups"
DEFAULT_MAX_RESULTS = 10
MAX_RESULTS = 100
MAX_LIST_INDICES = 500
OP = "SearchIndex"

matches_cache = Snapshots("_emulator_search_matches", limit=32)
groups_cache = Snapshots("_emulator_search_groups", limit=1)
by_name_cache = Snapshots("_emulator_search_by_name", limit=1)


def _invalid_query(message: str):
    from moto.iot.exceptions import IoTClientError

    error = IoTClientError("InvalidQueryException", message)
    error.code = 400
    return error


def _not_found(message: str):
    from moto.iot.exceptions import ResourceNotFoundException

    return ResourceNotFoundException(message)


def _config(backend) -> dict:
    from . import iot_indexing_configuration

    return iot_indexing_configuration.thing_indexing(backend)


def _group_config(backend) -> dict:
    from . import iot_indexing_configuration

    return iot_indexing_configuration.thing_group_indexing(backend)


def _iotdata_backend(backend):
    from moto.iotdata.models import iotdata_backends

    return iotdata_backends[backend.account_id][backend.region_name]


def _view(doc) -> dict:
    """A stored shadow's sections, not copied: only while the store's lock is held."""
    return {
        "desired": doc.desired or None,
        "reported": doc.reported or None,
        "meta_desired": doc.meta_desired or None,
        "meta_reported": doc.meta_reported or None,
        "version": doc.version,
    }


def _live(doc) -> bool:
    return doc is not None and not doc.deleted and doc.version != 0


def _shadow_docs(backend, names) -> dict[str, dict]:
    """thing name -> a copy of its classic shadow's sections (see _view), for ``names``."""
    from . import iotdata_shadow

    store = iotdata_shadow._store(_iotdata_backend(backend))
    with iotdata_shadow._lock:
        return {
            name: json.loads(json.dumps(_view(store[(name, None)])))
            for name in names
            if _live(store.get((name, None)))
        }


def _delta(shadow: dict):
    from . import iotdata_shadow

    if not shadow.get("desired"):
        return None
    return iotdata_shadow._delta(shadow["desired"], shadow.get("reported") or {})


def shadow_object(shadow: dict) -> dict:
    """The classic shadow as fleet indexing shows it."""
    out: dict = {}
    metadata: dict = {}
    for section in ("desired", "reported"):
        if shadow.get(section):
            out[section] = shadow[section]
            metadata[section] = shadow.get(f"meta_{section}") or {}
    out["metadata"] = metadata
    out["version"] = shadow["version"]
    out["hasDelta"] = bool(_delta(shadow))
    return out


def _groups_by_thing(backend) -> dict[str, list[str]]:
    def build() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group in list(backend.thing_groups.values()):
            for thing in list(group.things.values()):
                out.setdefault(thing.thing_name, []).append(group.thing_group_name)
        for names in out.values():
            names.sort()
        return out

    return groups_cache.get(backend, "all", build)


def _things_by_name(backend) -> dict:
    return by_name_cache.get(backend, "all", lambda: {t.thing_name: t for t in list(backend.things.values())})


def _lookup_for(thing, groups: list[str], shadow: dict | None, connectivity, config: dict):
    with_shadow = config["thingIndexingMode"] == "REGISTRY_AND_SHADOW"
    with_connectivity = config["thingConnectivityIndexingMode"] == "STATUS"
    delta_cache: list = []

    def delta():
        if not delta_cache:
            delta_cache.append(_delta(shadow) if shadow else None)
        return delta_cache[0]

    def lookup(field: str):
        MISSING = _fleet_query.MISSING
        if field == "thingName":
            return thing.thing_name
        if field == "thingId":
            return thing.thing_id
        if field == "thingTypeName":
            return thing.thing_type.thing_type_name if thing.thing_type else MISSING
        if field == "thingGroupNames":
            return groups if groups else MISSING
        if field.startswith("attributes."):
            return (thing.attributes or {}).get(field[len("attributes."):], MISSING)
        if field.startswith("shadow."):
            if not with_shadow or shadow is None:
                return MISSING
            rest = field[len("shadow."):]
            if rest == "version":
                return shadow["version"]
            if rest == "hasDelta":
                return bool(delta())
            section, _, sub = rest.partition(".")
            if section in ("desired", "reported"):
                value = shadow.get(section)
            elif section == "delta":
                value = delta()
            elif section == "metadata":
                value = {"desired": shadow.get("meta_desired"), "reported": shadow.get("meta_reported")}
            else:
                return MISSING
            if value is None:
                return MISSING
            return _fleet_query.path(value, sub) if sub else value
        if field.startswith("connectivity."):
            if not with_connectivity:
                return MISSING
            document = iot_connectivity.document(connectivity)
            return document.get(field[len("connectivity."):], MISSING)
        return MISSING

    return lookup


def matching_names(backend, query: str, config: dict) -> list[str]:
    """The sorted names of the things ``query`` matches (cached, see the module's docstring)."""
    try:
        tree = _fleet_query.parse(query)
    except _fleet_query.QueryError as error:
        raise _invalid_query(f"Invalid query: {error}")
    fields = _fleet_query.fields(tree)
    uses_shadow = any(f.startswith("shadow.") for f in fields)
    uses_connectivity = any(f.startswith("connectivity.") for f in fields)
    extra = []
    if uses_shadow:
        from . import iotdata_shadow

        extra.append(("shadow", iotdata_shadow.version()))
    if uses_connectivity:
        extra.append(("connectivity", iot_connectivity.version()))
    modes = (config["thingIndexingMode"], config["thingConnectivityIndexingMode"])

    def evaluate_all(shadows: dict) -> list[str]:
        things = list(backend.things.values())
        groups = _groups_by_thing(backend) if "thingGroupNames" in fields else {}
        records = iot_connectivity.snapshot(backend.account_id, backend.region_name) if uses_connectivity else {}
        names = []
        for thing in things:
            name = thing.thing_name
            lookup = _lookup_for(thing, groups.get(name, []), shadows.get(name), records.get(name), config)
            if _fleet_query.evaluate(tree, lookup):
                names.append(name)
        names.sort()
        return names

    def build() -> list[str]:
        if not uses_shadow:
            return evaluate_all({})
        # Shadows are read in place, under the store's lock (one pass; copying 100,000
        # shadows first would hold the lock several times longer).
        from . import iotdata_shadow

        store = iotdata_shadow._store(_iotdata_backend(backend))
        with iotdata_shadow._lock:
            views = {key[0]: _view(doc) for key, doc in store.items() if key[1] is None and _live(doc)}
            return evaluate_all(views)

    return matches_cache.get(backend, (query, modes), build, tuple(extra))


def thing_document(backend, thing, groups: list[str], shadow: dict | None, config: dict) -> dict:
    document: dict = {"thingName": thing.thing_name, "thingId": thing.thing_id}
    if thing.thing_type is not None:
        document["thingTypeName"] = thing.thing_type.thing_type_name
    if groups:
        document["thingGroupNames"] = list(groups)
    document["attributes"] = dict(thing.attributes or {})
    if config["thingIndexingMode"] == "REGISTRY_AND_SHADOW" and shadow is not None:
        document["shadow"] = json.dumps(shadow_object(shadow), separators=(",", ":"))
    if config["thingConnectivityIndexingMode"] == "STATUS":
        record = iot_connectivity.get(backend.account_id, backend.region_name, thing.thing_name)
        document["connectivity"] = iot_connectivity.document(record)
    return document


def _body(response) -> dict:
    try:
        data = json.loads(response.body or "{}")
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise _paging.invalid("The request body must be a JSON object.")
    return data


def _search_index(self):
    body = _body(self)
    backend = self.iot_backend
    index = body.get("indexName") or THINGS_INDEX
    if index == GROUPS_INDEX:
        if _group_config(backend)["thingGroupIndexingMode"] == "OFF":
            raise _not_found(f"Index {GROUPS_INDEX} does not exist. Please enable index by calling UpdateIndexingConfiguration")
        raise _paging.invalid(f"SearchIndex on {GROUPS_INDEX} is not supported by the emulator.")
    if index != THINGS_INDEX:
        raise _not_found(f"Index {index} does not exist.")
    config = _config(backend)
    if config["thingIndexingMode"] == "OFF":
        raise _not_found(f"Index {THINGS_INDEX} does not exist. Please enable index by calling UpdateIndexingConfiguration")
    size = _paging.page_size(body.get("maxResults"), DEFAULT_MAX_RESULTS, MAX_RESULTS, "maxResults")
    query = body.get("queryString")
    if not isinstance(query, str) or not query.strip():
        raise _paging.invalid("queryString is required.")
    # The token carries the query: another query's token is refused, not misread.
    after = _paging.decode(OP, body.get("nextToken"), "nextToken")
    if after is not None:
        if not (isinstance(after, tuple) and len(after) == 2 and after[0] == query):
            raise _paging.invalid("The nextToken is not valid for this query.")
        after = after[1]
    names = matching_names(backend, query, config)
    chunk, next_after = _paging.page(names, after, size)
    things = _things_by_name(backend)
    groups = _groups_by_thing(backend)
    shadows = _shadow_docs(backend, chunk) if config["thingIndexingMode"] == "REGISTRY_AND_SHADOW" else {}
    documents = [
        thing_document(backend, things[name], groups.get(name, []), shadows.get(name), config)
        for name in chunk
        if name in things
    ]
    return _paging.answer(
        {
            "things": documents,
            "thingGroups": [],
            "nextToken": _paging.encode(OP, [query, next_after]) if next_after is not None else None,
        }
    )


def enabled_indices(backend) -> list[str]:
    names = []
    if _config(backend)["thingIndexingMode"] != "OFF":
        names.append(THINGS_INDEX)
    if _group_config(backend)["thingGroupIndexingMode"] != "OFF":
        names.append(GROUPS_INDEX)
    return names


def _describe_index(self):
    from moto.core.responses import ActionResult

    backend = self.iot_backend
    name = self._get_param("indexName")
    if name not in enabled_indices(backend):
        raise _not_found(f"Index {name} does not exist.")
    if name == GROUPS_INDEX:
        schema = "THING_GROUPS"
    else:
        config = _config(backend)
        schema = "REGISTRY_AND_SHADOW" if config["thingIndexingMode"] == "REGISTRY_AND_SHADOW" else "REGISTRY"
        if config["thingConnectivityIndexingMode"] == "STATUS":
            schema += "_AND_CONNECTIVITY_STATUS"
    return ActionResult({"indexName": name, "indexStatus": "ACTIVE", "schema": schema})


def _list_indices(self):
    from moto.core.responses import ActionResult

    query = self.querystring
    size = _paging.page_size(query.get("maxResults", [None])[0], MAX_LIST_INDICES, MAX_LIST_INDICES, "maxResults")
    after = _paging.decode("ListIndices", query.get("nextToken", [None])[0], "nextToken")
    chunk, next_after = _paging.page(sorted(enabled_indices(self.iot_backend)), after, size)
    return ActionResult(
        {
            "indexNames": chunk,
            "nextToken": _paging.encode("ListIndices", next_after) if next_after is not None else None,
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    from . import _registry_version

    _registry_version.install()
    patch(IoTResponse, "search_index", _search_index)
    patch(IoTResponse, "describe_index", _describe_index)
    patch(IoTResponse, "list_indices", _list_indices)

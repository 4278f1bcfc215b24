"""Fix: IoT ListTargetsForPolicy pages like AWS, at fleet scale.

AWS behaviour restored (API reference, "ListTargetsForPolicy"; range from
botocore's iot model, ``PageSize``)
    ``POST /policy-targets/{policyName}?pageSize=&marker=`` answers
    ``{"targets": [ARN...], "nextMarker"?}``: at most ``pageSize`` targets
    (valid range 1..250; outside it InvalidRequestException, HTTP 400), and
    ``nextMarker`` to pass back as ``marker``, absent on the last page.  A
    policy that does not exist is ResourceNotFoundException (404).  AWS
    documents no default page size and no order.

What moto 5.2.1 does instead
    "Pagination is not yet implemented": every target on one page, whatever
    ``pageSize``, no ``nextMarker``; each call scans every policy attachment
    of the account (100,000 certificates attached to one fleet policy: the
    whole list, every call).

The emulator's choices (AWS leaves them open)
    Default page size 25; targets listed by ARN (code-point order).  The
    targets of every policy are indexed in one pass and kept until the
    registry changes (``_registry_version``); ``nextMarker`` names the last
    target of its page (``_paging``).
"""

from __future__ import annotations

from . import _paging
from ._registry_version import Snapshots
from ._util import patch

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 250
OP = "ListTargetsForPolicy"

snapshots = Snapshots("_emulator_policy_targets", limit=1)


def targets_by_policy(backend) -> dict[str, list[str]]:
    def build() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for principal, policy_name in list(backend.principal_policies.keys()):
            out.setdefault(policy_name, []).append(principal)
        for targets in out.values():
            targets.sort()
        return out

    return snapshots.get(backend, "all", build)


def _list_targets_for_policy(self):
    from moto.iot.exceptions import ResourceNotFoundException

    query = self.querystring
    size = _paging.page_size(query.get("pageSize", [None])[0], DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, "pageSize")
    after = _paging.decode(OP, query.get("marker", [None])[0], "marker")
    policy_name = self._get_param("policyName")
    backend = self.iot_backend
    if policy_name not in backend.policies:
        raise ResourceNotFoundException("Policy not found")
    targets = targets_by_policy(backend).get(policy_name, [])
    chunk, next_after = _paging.page(targets, after, size)
    return _paging.answer(
        {
            "targets": chunk,
            "nextMarker": _paging.encode(OP, next_after) if next_after is not None else None,
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    from . import _registry_version

    _registry_version.install()
    patch(IoTResponse, "list_targets_for_policy", _list_targets_for_policy)

"""Fix: policies attached to thing groups (AttachPolicy with a thing group ARN target).

AWS behaviour (IoT developer guide, "Static thing groups",
docs.aws.amazon.com/iot/latest/developerguide/thing-groups.html)
    * AttachPolicy / DetachPolicy take a thing group ARN as ``target``; a
      policy attached to a group applies "to all things in that group and
      things in any of its child groups" (a parent's policies are inherited).
    * ListAttachedPolicies with a group ARN lists the group's policies; "Add
      the optional ``--recursive`` parameter to include all policies attached
      to the group's parent groups".
    * ListTargetsForPolicy lists "the targets, including any groups".
    * DeleteThingGroup deletes a group that still has things (and policies):
      "You can delete a group that has child things, but any permissions
      granted to the things by membership in the group no longer apply"; a
      group with child groups is refused (InvalidRequestException).
    * How a group policy reaches a device (the gateway and TestAuthorization,
      not this module): see ``iotpolicy.policies_for_principal``.

What moto 5.2.1 does instead
    * Attach/Detach/ListTargetsForPolicy with a group ARN already work
      (``_get_principal`` resolves ``:thinggroup/`` ARNs; covered by tests).
    * ListAttachedPolicies ignores ``recursive``.
    * DeleteCertificate answers 500: its "policies still attached?" check
      takes every policy target for a certificate (``.certificate_id``), and a
      thing group target has none (AttributeError), so no certificate can be
      deleted while any policy is attached to any group.
    * DeleteThingGroup removes the group but keeps its policy attachments:
      ListTargetsForPolicy still lists the deleted group's ARN and DeletePolicy
      of its policy fails with DeleteConflictException ("attached to one or
      more principals") although nothing holds it.

What this fix does
    * ListAttachedPolicies(target=<group ARN>, recursive=true): the group's
      policies, then each ancestor's, nearest first, each policy once.
      Without ``recursive`` (or for a certificate) moto's answer is kept.
    * DeleteThingGroup also drops the group's policy attachments.
    * DeleteCertificate's checks look only at certificate targets, so a policy
      on a group does not block a certificate (in ``iot_concurrency``, which
      replaces moto's check).

Not enforced: the developer guide once said a group can have at most two
policies attached; the current limit could not be confirmed, so AttachPolicy
takes any number.
"""

from __future__ import annotations

from ._util import patch, truthy


def _list_attached_policies(self):
    from moto.core.responses import ActionResult

    import iotpolicy

    target = self._get_param("target") or ""
    if not (truthy(self._get_param("recursive")) and ":thinggroup/" in target):
        return self._emulator_orig_list_attached_policies()
    backend = self.iot_backend
    group = backend.thing_groups.get(target)
    lineage = iotpolicy.group_lineage(backend, group) if group is not None else []
    targets = [g.arn for g in lineage] or [target]
    seen: set[str] = set()
    policies = []
    for arn in targets:
        for policy in backend.list_attached_policies(target=arn):
            if policy.name not in seen:
                seen.add(policy.name)
                policies.append(policy.to_dict())
    return ActionResult({"policies": policies})


def _make_delete_thing_group(original):
    def delete_thing_group(self, thing_group_name: str) -> None:
        group = next(
            (g for g in self.thing_groups.values() if g.thing_group_name == thing_group_name), None
        )
        original(self, thing_group_name)
        if group is not None and group.arn not in self.thing_groups:
            for key in [k for k in self.principal_policies if k[0] == group.arn]:
                del self.principal_policies[key]

    return delete_thing_group


def apply() -> None:
    import os
    import sys

    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    # iotpolicy lives next to fixes/ in emulator/ (server.py puts it on sys.path).
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in sys.path:
        sys.path.insert(0, here)
    patch(IoTResponse, "list_attached_policies", _list_attached_policies)
    original = getattr(IoTBackend, "_emulator_orig_delete_thing_group", IoTBackend.delete_thing_group)
    patch(IoTBackend, "delete_thing_group", _make_delete_thing_group(original))

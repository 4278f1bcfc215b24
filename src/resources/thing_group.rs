//! The fleet's static thing group (`fleet.group`), each device's membership of it, and, with
//! `policy.attach_to = "group"`, the device policy attached to the group instead of to every
//! certificate. AWS applies a thing group's policies to a connection whose client id is the
//! name of a member thing attached to the connecting certificate, so one policy target serves
//! the whole fleet and the per-device AttachPolicy call (15/s per account) disappears.

use std::sync::Arc;

use aws_sdk_iot::operation::describe_thing_group::DescribeThingGroupOutput;
use aws_sdk_iot::types::ThingGroupProperties;

use super::fleet::view::Paged;
use super::policy_attachment;
use super::sdk::{self, op};
use super::{Env, GROUP_MEMBERSHIP, GROUP_POLICY, POLICY, THING, THING_GROUP};
use crate::engine::{Ctx, Kind, Meta, Outcome, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};

const GROUP_KIND: &str = "thing group";
const MEMBERSHIP_KIND: &str = "group membership";
const POLICY_KIND: &str = "group policy";

/// What the config says of the group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub description: String,
    /// The device policy goes on the group rather than on each certificate.
    pub policy: bool,
}

/// The group's name: the configured one, or, for a step `up` retires because `fleet.group` was
/// removed from the config, the one its record kept.
fn group_name(env: &Env, rec: Option<&Record>) -> String {
    match (&env.d.group, rec.and_then(|r| r.id.clone())) {
        (_, Some(recorded)) => recorded,
        (Some(g), None) => g.name.clone(),
        (None, None) => "(the group fleet.group named)".into(),
    }
}

pub struct ThingGroup(pub Arc<Env>);

impl Meta for ThingGroup {
    fn key(&self) -> &str {
        THING_GROUP
    }
    fn kind(&self) -> &str {
        GROUP_KIND
    }
    fn name(&self) -> String {
        group_name(&self.0, None)
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
}

#[async_trait::async_trait]
impl Kind for ThingGroup {
    type Live = DescribeThingGroupOutput;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let description = self.0.d.group.as_ref().map(|g| g.description.clone());
        Fields::from([(
            "description".to_string(),
            description.unwrap_or_default().into(),
        )])
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<DescribeThingGroupOutput>, StepError> {
        let name = self.name();
        sdk::find(
            op(GROUP_KIND, &name, "DescribeThingGroup"),
            self.0
                .aws
                .iot
                .describe_thing_group()
                .thing_group_name(&name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await
    }

    fn fields(&self, live: &DescribeThingGroupOutput) -> Fields {
        let description = live
            .thing_group_properties()
            .and_then(|p| p.thing_group_description())
            .unwrap_or_default();
        Fields::from([("description".to_string(), description.into())])
    }

    fn identify(&self, live: &DescribeThingGroupOutput) -> String {
        live.thing_group_arn().unwrap_or_default().to_string()
    }

    async fn apply(
        &self,
        cx: &Ctx,
        step: Step<DescribeThingGroupOutput>,
    ) -> Result<Outcome, StepError> {
        let name = self.name();
        let iot = &self.0.aws.iot;
        let description = self.0.d.group.as_ref().map(|g| g.description.clone());
        let props = ThingGroupProperties::builder()
            .set_thing_group_description(description)
            .build();
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(THING_GROUP, GROUP_KIND, Phase::Intent, &name))?;
            let out = sdk::create(
                op(GROUP_KIND, &name, "CreateThingGroup"),
                iot.create_thing_group()
                    .thing_group_name(&name)
                    .thing_group_properties(props)
                    .send(),
                |e| e.is_resource_already_exists_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = out.thing_group_arn;
            rec.id = out.thing_group_id;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let updated = if step.plan.changes.is_empty() {
            None
        } else {
            sdk::send(
                op(GROUP_KIND, &name, "UpdateThingGroup"),
                iot.update_thing_group()
                    .thing_group_name(&name)
                    .thing_group_properties(props)
                    .send(),
            )
            .await?;
            Some(step.summary())
        };
        let outcome = step.outcome(updated);
        let mut rec = step.live_record(THING_GROUP, GROUP_KIND, &name);
        rec.arn = live.thing_group_arn().map(str::to_string);
        rec.id = live.thing_group_id().map(str::to_string);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "thing_group.configuration"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(THING_GROUP) else {
            return Ok(Outcome::Absent);
        };
        // Its members left with their devices (and a group's deletion does not touch its
        // members' things on AWS either); the policy attachment went in its own step.
        // AWS answers a group that does not exist with success: nothing to tell apart.
        sdk::send(
            op(GROUP_KIND, &rec.name, "DeleteThingGroup"),
            self.0
                .aws
                .iot
                .delete_thing_group()
                .thing_group_name(&rec.name)
                .send(),
        )
        .await?;
        cx.forget(THING_GROUP)?;
        Ok(Outcome::Deleted)
    }
}

/// The group ARN as recorded by the group step.
fn group_arn(cx: &Ctx) -> Result<String, StepError> {
    cx.record(THING_GROUP)
        .filter(|r| r.phase == Phase::Created)
        .and_then(|r| r.arn)
        .ok_or_else(|| StepError::Failed("the thing group is not recorded: run `iotreg up`".into()))
}

/// A device's membership of the group.
pub struct Membership(pub Arc<Env>);

impl Meta for Membership {
    fn key(&self) -> &str {
        GROUP_MEMBERSHIP
    }
    fn kind(&self) -> &str {
        MEMBERSHIP_KIND
    }
    fn name(&self) -> String {
        format!("{} ∈ {}", self.0.d.thing.name, group_name(&self.0, None))
    }
    fn depends_on(&self) -> &[&'static str] {
        &[THING, THING_GROUP]
    }
}

#[async_trait::async_trait]
impl Kind for Membership {
    type Live = ();

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<()>, StepError> {
        let thing = &self.0.d.thing.name;
        let group = &group_name(&self.0, None);
        match self.0.view.as_ref().map(|v| v.member(thing)) {
            Some(Paged::Found(())) => return Ok(Some(())),
            Some(Paged::Absent) => return Ok(None),
            _ => {}
        }
        let mut token: Option<String> = None;
        loop {
            let Some(page) = sdk::find(
                op(MEMBERSHIP_KIND, thing, "ListThingGroupsForThing"),
                self.0
                    .aws
                    .iot
                    .list_thing_groups_for_thing()
                    .thing_name(thing)
                    .set_next_token(token.clone())
                    .send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?
            else {
                return Ok(None);
            };
            if page
                .thing_groups()
                .iter()
                .any(|g| g.group_name() == Some(group.as_str()))
            {
                return Ok(Some(()));
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(None);
            }
        }
    }

    fn fields(&self, _live: &()) -> Fields {
        Fields::new()
    }

    fn identify(&self, _live: &()) -> String {
        self.name()
    }

    fn link(&self) -> bool {
        true
    }

    /// AddThingToThingGroup is idempotent: a new device joins without a list call first.
    fn create_unread(&self) -> bool {
        true
    }

    async fn apply(&self, cx: &Ctx, step: Step<()>) -> Result<Outcome, StepError> {
        let thing = &self.0.d.thing.name;
        let group = &group_name(&self.0, None);
        let created = step.live.is_none();
        if created {
            sdk::send(
                op(MEMBERSHIP_KIND, thing, "AddThingToThingGroup"),
                self.0
                    .aws
                    .iot
                    .add_thing_to_thing_group()
                    .thing_group_name(group)
                    .thing_name(thing)
                    .send(),
            )
            .await?;
        }
        let mut rec = Record::new(
            GROUP_MEMBERSHIP,
            MEMBERSHIP_KIND,
            Phase::Created,
            self.name(),
        );
        // The group it joined, for `down` after `fleet.group` left the config.
        rec.id = Some(group.clone());
        cx.save(step.record.as_ref(), rec)?;
        Ok(if created {
            Outcome::Created
        } else {
            step.outcome(None)
        })
    }

    fn check_name(&self) -> &'static str {
        "thing_group.member"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(GROUP_MEMBERSHIP) else {
            return Ok(Outcome::Absent);
        };
        let thing = &self.0.d.thing.name;
        let group = &group_name(&self.0, Some(&rec));
        // The thing or the group may be gone already: either way it is no longer a member.
        let removed = sdk::find(
            op(MEMBERSHIP_KIND, thing, "RemoveThingFromThingGroup"),
            self.0
                .aws
                .iot
                .remove_thing_from_thing_group()
                .thing_group_name(group)
                .thing_name(thing)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(GROUP_MEMBERSHIP)?;
        Ok(Outcome::deleted_if(removed.is_some()))
    }
}

/// The device policy attached to the group (`policy.attach_to = "group"`).
pub struct GroupPolicy(pub Arc<Env>);

impl Meta for GroupPolicy {
    fn key(&self) -> &str {
        GROUP_POLICY
    }
    fn kind(&self) -> &str {
        POLICY_KIND
    }
    fn name(&self) -> String {
        format!("{} → {}", self.0.d.policy.name, group_name(&self.0, None))
    }
    fn depends_on(&self) -> &[&'static str] {
        &[POLICY, THING_GROUP]
    }
}

#[async_trait::async_trait]
impl Kind for GroupPolicy {
    type Live = ();

    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<()>, StepError> {
        let Ok(arn) = group_arn(cx) else {
            return Ok(None);
        };
        let policy = &self.0.d.policy.name;
        let attached = policy_attachment::is_attached(
            &self.0.aws.iot,
            POLICY_KIND,
            &self.name(),
            policy,
            &arn,
        )
        .await?;
        Ok(attached.then_some(()))
    }

    fn fields(&self, _live: &()) -> Fields {
        Fields::new()
    }

    fn identify(&self, _live: &()) -> String {
        self.name()
    }

    fn link(&self) -> bool {
        true
    }

    async fn apply(&self, cx: &Ctx, step: Step<()>) -> Result<Outcome, StepError> {
        let created = step.live.is_none();
        if created {
            let arn = group_arn(cx)?;
            let policy = &self.0.d.policy.name;
            policy_attachment::attach(&self.0.aws.iot, POLICY_KIND, &self.name(), policy, &arn)
                .await?;
        }
        let mut rec = Record::new(GROUP_POLICY, POLICY_KIND, Phase::Created, self.name());
        // The group's ARN and the policy, for `down` after the config dropped them.
        rec.arn = group_arn(cx).ok();
        rec.id = Some(self.0.d.policy.name.clone());
        cx.save(step.record.as_ref(), rec)?;
        Ok(if created {
            Outcome::Created
        } else {
            step.outcome(None)
        })
    }

    fn check_name(&self) -> &'static str {
        "policy.attached_to_group"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(GROUP_POLICY) else {
            return Ok(Outcome::Absent);
        };
        let Some(arn) = rec.arn.clone().or_else(|| group_arn(cx).ok()) else {
            cx.forget(GROUP_POLICY)?;
            return Ok(Outcome::Absent);
        };
        let policy = rec
            .id
            .clone()
            .unwrap_or_else(|| self.0.d.policy.name.clone());
        let detached =
            policy_attachment::detach(&self.0.aws.iot, POLICY_KIND, &self.name(), &policy, &arn)
                .await?;
        cx.forget(GROUP_POLICY)?;
        Ok(Outcome::deleted_if(detached))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::add_thing_to_thing_group::AddThingToThingGroupOutput;
    use aws_sdk_iot::operation::create_thing_group::{
        CreateThingGroupError, CreateThingGroupOutput,
    };
    use aws_sdk_iot::operation::describe_thing_group::DescribeThingGroupError;
    use aws_sdk_iot::operation::detach_policy::DetachPolicyError;
    use aws_sdk_iot::operation::remove_thing_from_thing_group::RemoveThingFromThingGroupError;
    use aws_sdk_iot::types::error::{ResourceAlreadyExistsException, ResourceNotFoundException};
    use aws_smithy_mocks::mock;

    use super::*;
    use crate::engine::Resource;
    use crate::resources::testing::{harness, recorded};

    const GROUP: &str = "sensors-abc123";
    const GROUP_ARN: &str = "arn:aws:iot:us-east-1:123456789012:thinggroup/sensors-abc123";

    fn grouped(policy: bool) -> impl FnOnce(&mut crate::resources::Deployment) {
        move |d| {
            d.group = Some(GroupSpec {
                name: GROUP.into(),
                description: "Devices of iotreg deployment abc123".into(),
                policy,
            })
        }
    }

    fn not_found() -> aws_sdk_iot::types::error::ResourceNotFoundException {
        ResourceNotFoundException::builder().build()
    }

    #[tokio::test]
    async fn a_group_someone_made_meanwhile_is_not_taken_over() {
        let read = mock!(aws_sdk_iot::Client::describe_thing_group)
            .then_error(|| DescribeThingGroupError::ResourceNotFoundException(not_found()));
        let create = mock!(aws_sdk_iot::Client::create_thing_group).then_error(|| {
            CreateThingGroupError::ResourceAlreadyExistsException(
                ResourceAlreadyExistsException::builder().build(),
            )
        });
        let h = harness(&[&read, &create], &[], &[], &[], vec![], grouped(false));
        let e = ThingGroup(h.env.clone()).ensure(&h.cx).await.unwrap_err();
        assert!(matches!(e, StepError::ExistsAfterCreate { .. }), "{e}");
        // Its intent stays, so the next run looks before it creates.
        assert_eq!(h.cx.record(THING_GROUP).unwrap().phase, Phase::Intent);
    }

    #[tokio::test]
    async fn a_new_member_joins_without_a_list_call() {
        // Only the add is mocked: a ListThingGroupsForThing would find no rule and fail.
        let add = mock!(aws_sdk_iot::Client::add_thing_to_thing_group)
            .match_requests(|r| {
                r.thing_group_name() == Some(GROUP)
                    && r.thing_name() == Some("temperature-sensor-abc123")
            })
            .then_output(|| AddThingToThingGroupOutput::builder().build());
        let h = harness(&[&add], &[], &[], &[], vec![], grouped(false));
        let m = Membership(h.env.clone());
        assert_eq!(m.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!(add.num_calls(), 1);
        assert_eq!(
            h.cx.record(GROUP_MEMBERSHIP).unwrap().id.as_deref(),
            Some(GROUP)
        );
    }

    #[tokio::test]
    async fn leaving_a_group_that_is_gone_is_done() {
        let remove = mock!(aws_sdk_iot::Client::remove_thing_from_thing_group)
            .then_error(|| RemoveThingFromThingGroupError::ResourceNotFoundException(not_found()));
        let mut rec = recorded(GROUP_MEMBERSHIP, MEMBERSHIP_KIND, "x", None);
        rec.id = Some(GROUP.into());
        // fleet.group has left the config: the record names the group.
        let h = harness(&[&remove], &[], &[], &[], vec![rec], |_| {});
        let m = Membership(h.env.clone());
        assert_eq!(Resource::destroy(&m, &h.cx).await.unwrap(), Outcome::Absent);
        assert!(h.cx.record(GROUP_MEMBERSHIP).is_none());
    }

    #[tokio::test]
    async fn detaching_from_the_recorded_group_after_the_config_dropped_it() {
        // DetachPolicy has no typed not-found error: AWS's code says it is already detached.
        let detach = mock!(aws_sdk_iot::Client::detach_policy)
            .match_requests(|r| {
                r.target() == Some(GROUP_ARN) && r.policy_name() == Some("old-policy")
            })
            .then_error(|| {
                DetachPolicyError::generic(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("ResourceNotFoundException")
                        .build(),
                )
            });
        let mut rec = recorded(GROUP_POLICY, POLICY_KIND, "x", Some(GROUP_ARN));
        rec.id = Some("old-policy".into());
        let h = harness(&[&detach], &[], &[], &[], vec![rec], |_| {});
        let gp = GroupPolicy(h.env.clone());
        assert_eq!(
            Resource::destroy(&gp, &h.cx).await.unwrap(),
            Outcome::Absent
        );
        assert_eq!(detach.num_calls(), 1);
        assert!(h.cx.record(GROUP_POLICY).is_none());
    }

    #[tokio::test]
    async fn the_group_is_created_and_recorded() {
        let read = mock!(aws_sdk_iot::Client::describe_thing_group)
            .then_error(|| DescribeThingGroupError::ResourceNotFoundException(not_found()));
        let create = mock!(aws_sdk_iot::Client::create_thing_group)
            .match_requests(|r| r.thing_group_name() == Some(GROUP))
            .then_output(|| {
                CreateThingGroupOutput::builder()
                    .thing_group_arn(GROUP_ARN)
                    .build()
            });
        let h = harness(&[&read, &create], &[], &[], &[], vec![], grouped(true));
        assert_eq!(
            ThingGroup(h.env.clone()).ensure(&h.cx).await.unwrap(),
            Outcome::Created
        );
        assert_eq!(
            h.cx.record(THING_GROUP).unwrap().arn.as_deref(),
            Some(GROUP_ARN)
        );
    }
}

//! A function's resource policy statement letting IoT invoke it, scoped to one source ARN
//! and this account: the data processor's, scoped to the rule, and the pre-provisioning
//! hook's, scoped to the provisioning template. AWS's pre-provisioning hook page asks for the
//! source ARN or account in the invoke permission (confused-deputy prevention); that IoT
//! presents the template's ARN as the source when it calls a hook is our reading of it, not
//! something the page spells out.

use std::sync::Arc;

use serde_json::Value;

use super::sdk::{self, op};
use super::{Deployment, Env, FUNCTION, HOOK_FUNCTION, HOOK_PERMISSION, PERMISSION, RULE};
use crate::engine::{Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;

const KIND: &str = "invoke permission";
pub const STATEMENT_ID: &str = "iot-lambda-permission";
pub const PRINCIPAL: &str = "iot.amazonaws.com";

/// Which permission: its key, statement id, function and the source it is scoped to.
pub struct Slot {
    key: &'static str,
    sid: &'static str,
    check: &'static str,
    /// What may invoke: "the rule", "the provisioning template".
    source: &'static str,
    function: fn(&Deployment) -> String,
    source_arn: fn(&Deployment) -> String,
    depends_on: &'static [&'static str],
}

pub const RULE_INVOKE: Slot = Slot {
    key: PERMISSION,
    sid: STATEMENT_ID,
    check: "permission.scoped",
    source: "the rule",
    function: |d| d.function.name.clone(),
    source_arn: |d| d.rule_arn(),
    depends_on: &[FUNCTION, RULE],
};

pub const HOOK_INVOKE: Slot = Slot {
    key: HOOK_PERMISSION,
    sid: "iot-provisioning-hook-permission",
    check: "provisioning.hook_permission",
    source: "the provisioning template",
    function: |d| {
        d.provisioning
            .as_ref()
            .and_then(|p| p.hook.as_ref())
            .map(|h| h.function.name.clone())
            .unwrap_or_default()
    },
    source_arn: |d| {
        d.provisioning
            .as_ref()
            .map(|p| d.template_arn(&p.template_name))
            .unwrap_or_default()
    },
    // The template depends on it (not the other way round): the permission is in place
    // before the template names the hook, and removed only after the template is gone.
    depends_on: &[HOOK_FUNCTION],
};

pub struct Permission(pub Arc<Env>, pub &'static Slot);

impl Permission {
    pub fn rule(env: Arc<Env>) -> Permission {
        Permission(env, &RULE_INVOKE)
    }
    fn function(&self) -> String {
        (self.1.function)(&self.0.d)
    }
    fn source_arn(&self) -> String {
        (self.1.source_arn)(&self.0.d)
    }
}

/// The live permission: our statement in the function's resource policy, and every statement
/// there letting IoT invoke the function (ours included), which verify judges too.
pub struct LivePermission {
    pub statement: Value,
    pub iot_statements: Vec<Value>,
}

impl Meta for Permission {
    fn key(&self) -> &str {
        self.1.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.1.sid.to_string()
    }
    fn depends_on(&self) -> &[&'static str] {
        self.1.depends_on
    }
}

#[async_trait::async_trait]
impl Kind for Permission {
    type Live = LivePermission;

    fn adopts_unowned(&self) -> bool {
        true
    }
    fn renamed(&self, _rec: &Record) -> bool {
        false
    }

    fn desired(&self, _cx: &Ctx) -> Fields {
        self.wanted()
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<LivePermission>, StepError> {
        let sid = self.1.sid;
        let function = &self.function();
        let policy = sdk::find(
            op(KIND, sid, "GetPolicy"),
            self.0
                .aws
                .lambda
                .get_policy()
                .function_name(function)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        let doc: Value = policy
            .and_then(|p| p.policy)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let Some(statement) = find_statement(&doc, sid) else {
            return Ok(None);
        };
        let iot_statements = doc["Statement"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s.pointer("/Principal/Service").and_then(|v| v.as_str()) == Some(PRINCIPAL))
            .cloned()
            .collect();
        Ok(Some(LivePermission {
            statement,
            iot_statements,
        }))
    }

    fn fields(&self, live: &LivePermission) -> Fields {
        self.statement_fields(&live.statement)
    }

    fn identify(&self, _live: &LivePermission) -> String {
        format!("{} on {}", self.1.sid, self.function())
    }

    async fn apply(&self, cx: &Ctx, step: Step<LivePermission>) -> Result<Outcome, StepError> {
        let lambda = &self.0.aws.lambda;
        let d = &self.0.d;
        let (key, sid) = (self.1.key, self.1.sid);
        let function = &self.function();
        let rule_arn = self.source_arn();
        let mut rec = Record::new(key, KIND, Phase::Created, sid);
        rec.data
            .insert("source_arn".into(), rule_arn.clone().into());
        rec.data.insert("function".into(), function.clone().into());
        let mut outcome = Outcome::Created;
        if step.live.is_some() {
            if step.plan.changes.is_empty() {
                return cx.keep(step.record.as_ref(), rec);
            }
            // Same statement id, wrong scope: replace it (AddPermission refuses duplicates).
            // Not found means a retried removal already did it.
            sdk::find(
                op(KIND, sid, "RemovePermission"),
                lambda
                    .remove_permission()
                    .function_name(function)
                    .statement_id(sid)
                    .send(),
                |e| e.is_resource_not_found_exception(),
            )
            .await?;
            outcome = Outcome::Updated(format!(
                "re-scoped to {}: {}",
                self.1.source,
                step.summary()
            ));
        }
        cx.intent(rec.clone())?;
        let added = lambda
            .add_permission()
            .function_name(function)
            .statement_id(sid)
            .action("lambda:InvokeFunction")
            .principal(PRINCIPAL)
            .source_arn(&rule_arn)
            .source_account(&d.account)
            .send()
            .await;
        match added {
            Ok(_) => {}
            // The statement exists: our own earlier attempt whose answer was lost (retried by
            // the SDK). Accept it if it is the one we asked for.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_conflict_exception()) =>
            {
                let policy = sdk::send(
                    op(KIND, sid, "GetPolicy"),
                    lambda.get_policy().function_name(function).send(),
                )
                .await?;
                let ours = policy
                    .policy()
                    .and_then(|t| statement(t, sid))
                    .is_some_and(|s| self.scoped(&s));
                if !ours {
                    return Err(crate::aws::failed(KIND, sid, "AddPermission", e));
                }
            }
            Err(e) => return Err(crate::aws::failed(KIND, sid, "AddPermission", e)),
        }
        cx.commit(rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        self.1.check
    }

    /// The comparison of our statement, and of every other statement letting IoT invoke the
    /// function: one that any rule (or account) may use is a hole whoever added it.
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, LivePermission>) -> Vec<Check> {
        let name = self.check_name();
        let function = &self.function();
        let sid = self.1.sid;
        let res = format!("{KIND} {sid} on {function}");
        let rule_arn = self.source_arn();
        let Some(live) = seen.live else {
            return vec![Check::fail(
                name,
                &res,
                format!("{function} has no statement letting {PRINCIPAL} invoke it"),
            )];
        };
        let others_scoped = live.iot_statements.iter().all(|s| self.scoped(s));
        vec![if seen.changes.is_empty() && others_scoped {
            Check::pass(
                name,
                &res,
                format!("{PRINCIPAL} may invoke {function} only from {rule_arn}"),
            )
        } else {
            let mut reason =
                format!("{function} lets {PRINCIPAL} invoke it without being scoped to {rule_arn}");
            if !seen.changes.is_empty() {
                reason = format!(
                    "{reason}: {sid} differs: {}",
                    crate::plan::describe(seen.changes)
                );
            }
            Check::fail(name, &res, reason)
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let (key, sid) = (self.1.key, self.1.sid);
        let Some(rec) = cx.record(key) else {
            return Ok(Outcome::Absent);
        };
        let function = rec
            .data_str("function")
            .map(str::to_string)
            .unwrap_or_else(|| self.function());
        let removed = sdk::find(
            op(KIND, sid, "RemovePermission"),
            self.0
                .aws
                .lambda
                .remove_permission()
                .function_name(&function)
                .statement_id(sid)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(key)?;
        Ok(Outcome::deleted_if(removed.is_some()))
    }
}

impl Permission {
    /// The statement the config wants, as fields.
    fn wanted(&self) -> Fields {
        Fields::from([
            ("action".to_string(), "lambda:InvokeFunction".into()),
            ("principal".to_string(), PRINCIPAL.into()),
            ("source_arn".to_string(), self.source_arn().into()),
        ])
    }

    /// A statement as the same fields as [`Permission::wanted`].
    fn statement_fields(&self, stmt: &Value) -> Fields {
        let text = |ptr: &str| stmt.pointer(ptr).and_then(|v| v.as_str()).unwrap_or("");
        let mut f = Fields::from([
            ("action".to_string(), text("/Action").into()),
            ("principal".to_string(), text("/Principal/Service").into()),
            (
                "source_arn".to_string(),
                text("/Condition/ArnLike/AWS:SourceArn").into(),
            ),
        ]);
        // Another account is a difference; no account condition is not (the rule's ARN
        // already names the account).
        let account = text("/Condition/StringEquals/AWS:SourceAccount");
        if !account.is_empty() && account != self.0.d.account {
            f.insert("source_account".into(), account.into());
        }
        f
    }

    /// Whether a statement lets exactly IoT invoke, from this rule (and account) only: the
    /// comparison of the plan, applied to any statement.
    fn scoped(&self, stmt: &Value) -> bool {
        self.statement_fields(stmt) == self.wanted()
    }
}

/// The statement with `sid` from a Lambda resource policy document.
pub fn statement(policy: &str, sid: &str) -> Option<Value> {
    find_statement(&serde_json::from_str(policy).ok()?, sid)
}

fn find_statement(doc: &Value, sid: &str) -> Option<Value> {
    doc.get("Statement")?
        .as_array()?
        .iter()
        .find(|s| s.get("Sid").and_then(|v| v.as_str()) == Some(sid))
        .cloned()
}

#[cfg(test)]
mod tests {
    use aws_sdk_lambda::operation::add_permission::{AddPermissionError, AddPermissionOutput};
    use aws_sdk_lambda::operation::get_policy::{GetPolicyError, GetPolicyOutput};
    use aws_sdk_lambda::operation::remove_permission::RemovePermissionOutput;
    use aws_smithy_mocks::{mock, Rule};
    use serde_json::json;

    use super::*;
    use crate::engine::Resource;
    use crate::plan::{Action, Planned};
    use crate::resources::testing::*;
    use crate::verify::CheckStatus;

    const FUNCTION_NAME: &str = "iot-data-processor-abc123";
    const RULE_ARN: &str = "arn:aws:iot:us-east-1:123456789012:rule/sensor_data_rule_abc123";

    fn stmt(sid: &str, source_arn: &str, account: Option<&str>) -> Value {
        let mut condition = json!({"ArnLike": {"AWS:SourceArn": source_arn}});
        if let Some(a) = account {
            condition["StringEquals"] = json!({"AWS:SourceAccount": a});
        }
        json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"Service": PRINCIPAL},
            "Action": "lambda:InvokeFunction",
            "Resource": "arn:aws:lambda:us-east-1:123456789012:function:iot-data-processor-abc123",
            "Condition": condition
        })
    }

    fn policy(statements: Vec<Value>) -> String {
        json!({"Version": "2012-10-17", "Statement": statements}).to_string()
    }

    fn get_policy(statements: Vec<Value>) -> Rule {
        let text = policy(statements);
        mock!(aws_sdk_lambda::Client::get_policy)
            .match_requests(|r| r.function_name() == Some(FUNCTION_NAME))
            .then_output(move || GetPolicyOutput::builder().policy(text.clone()).build())
    }

    fn not_found() -> GetPolicyError {
        GetPolicyError::ResourceNotFoundException(
            aws_sdk_lambda::types::error::ResourceNotFoundException::builder().build(),
        )
    }

    fn adds() -> Rule {
        mock!(aws_sdk_lambda::Client::add_permission)
            .match_requests(|r| {
                r.statement_id() == Some(STATEMENT_ID)
                    && r.principal() == Some(PRINCIPAL)
                    && r.source_arn() == Some(RULE_ARN)
                    && r.source_account() == Some("123456789012")
            })
            .then_output(|| AddPermissionOutput::builder().build())
    }

    fn remove() -> Rule {
        mock!(aws_sdk_lambda::Client::remove_permission)
            .match_requests(|r| r.statement_id() == Some(STATEMENT_ID))
            .then_output(|| RemovePermissionOutput::builder().build())
    }

    fn record() -> Record {
        let mut r = recorded(PERMISSION, KIND, STATEMENT_ID, None);
        r.data.insert("source_arn".into(), RULE_ARN.into());
        r.data.insert("function".into(), FUNCTION_NAME.into());
        r
    }

    fn stack(lambda: &[&Rule], records: Vec<Record>) -> Harness {
        harness(&[], &[], lambda, &[], records, |_| {})
    }

    async fn plan_then_ensure(h: &Harness) -> (Planned, Outcome) {
        crate::resources::testing::plan_then_ensure(&Permission::rule(h.env.clone()), &h.cx).await
    }

    #[tokio::test]
    async fn in_sync_is_unchanged_and_writes_nothing() {
        let get = get_policy(vec![stmt(STATEMENT_ID, RULE_ARN, Some("123456789012"))]);
        let h = stack(&[&get], vec![record()]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::NoChange, "{plan:?}");
        assert_eq!(outcome, Outcome::Unchanged);
        // No account condition is as scoped (the rule's ARN names the account).
        let get = get_policy(vec![stmt(STATEMENT_ID, RULE_ARN, None)]);
        let h = stack(&[&get], vec![record()]);
        assert_eq!(plan_then_ensure(&h).await.1, Outcome::Unchanged);
    }

    #[tokio::test]
    async fn a_statement_scoped_otherwise_is_removed_and_added_again() {
        let other_rule = format!("{RULE_ARN}_other");
        let get = get_policy(vec![stmt(STATEMENT_ID, &other_rule, None)]);
        let (rm, add) = (remove(), adds());
        let h = stack(&[&get, &rm, &add], vec![record()]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Update);
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].field, "source_arn");
        let Outcome::Updated(what) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(
            what.starts_with("re-scoped to the rule: source_arn:"),
            "{what}"
        );
        assert_eq!((rm.num_calls(), add.num_calls()), (1, 1));
        assert_eq!(h.cx.record(PERMISSION), Some(record()));

        // Another account: the same re-scoping.
        let get = get_policy(vec![stmt(STATEMENT_ID, RULE_ARN, Some("999999999999"))]);
        let (rm, add) = (remove(), adds());
        let h = stack(&[&get, &rm, &add], vec![record()]);
        let (plan, _) = plan_then_ensure(&h).await;
        assert_eq!(plan.changes[0].field, "source_account");
        assert_eq!((rm.num_calls(), add.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_missing_statement_is_added() {
        let get = mock!(aws_sdk_lambda::Client::get_policy).then_error(not_found);
        let add = adds();
        let h = stack(&[&get, &add], vec![record()]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Create);
        assert_eq!(outcome, Outcome::Created);
        assert_eq!(add.num_calls(), 1);
        assert_eq!(h.cx.record(PERMISSION), Some(record()));
    }

    #[tokio::test]
    async fn a_live_scoped_statement_not_recorded_is_adopted() {
        let get = get_policy(vec![stmt(STATEMENT_ID, RULE_ARN, None)]);
        let h = stack(&[&get], vec![]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Adopt);
        assert_eq!(outcome, Outcome::Adopted);
        assert_eq!(h.cx.record(PERMISSION), Some(record()));
    }

    #[tokio::test]
    async fn an_add_whose_answer_was_lost_is_accepted_when_the_statement_is_ours() {
        let get = mock!(aws_sdk_lambda::Client::get_policy)
            .sequence()
            .error(not_found)
            .output(|| {
                GetPolicyOutput::builder()
                    .policy(policy(vec![stmt(STATEMENT_ID, RULE_ARN, None)]))
                    .build()
            })
            .build();
        let add = mock!(aws_sdk_lambda::Client::add_permission).then_error(|| {
            AddPermissionError::ResourceConflictException(
                aws_sdk_lambda::types::error::ResourceConflictException::builder().build(),
            )
        });
        let h = stack(&[&get, &add], vec![]);
        let outcome = Resource::ensure(&Permission::rule(h.env.clone()), &h.cx)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Created);
        assert_eq!((get.num_calls(), add.num_calls()), (2, 1));
        assert_eq!(h.cx.record(PERMISSION), Some(record()));
    }

    #[tokio::test]
    async fn verify_also_fails_another_statement_letting_any_rule_invoke() {
        let ours = stmt(STATEMENT_ID, RULE_ARN, Some("123456789012"));
        let get = get_policy(vec![ours.clone()]);
        let h = stack(&[&get], vec![record()]);
        let checks = Resource::check(&Permission::rule(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Pass, "{checks:?}");
        assert_eq!(
            checks[0].reason,
            format!("{PRINCIPAL} may invoke {FUNCTION_NAME} only from {RULE_ARN}")
        );

        let any = stmt("anyone", "arn:aws:iot:us-east-1:123456789012:rule/*", None);
        let get = get_policy(vec![ours, any]);
        let h = stack(&[&get], vec![record()]);
        let checks = Resource::check(&Permission::rule(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert!(checks[0].reason.contains("without being scoped"));

        let get = mock!(aws_sdk_lambda::Client::get_policy).then_error(not_found);
        let h = stack(&[&get], vec![record()]);
        let checks = Resource::check(&Permission::rule(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert_eq!(
            checks[0].reason,
            format!("{FUNCTION_NAME} has no statement letting {PRINCIPAL} invoke it")
        );
        assert_eq!(
            checks[0].resource,
            format!("{KIND} {STATEMENT_ID} on {FUNCTION_NAME}")
        );
    }

    #[test]
    fn finds_the_statement() {
        let policy = policy(vec![stmt(STATEMENT_ID, RULE_ARN, None)]);
        assert_eq!(
            statement(&policy, STATEMENT_ID).unwrap()["Sid"],
            STATEMENT_ID
        );
        assert!(statement(&policy, "other").is_none());
        assert!(statement("not json", STATEMENT_ID).is_none());
    }
}

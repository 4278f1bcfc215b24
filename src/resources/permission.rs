//! The function's resource policy statement letting IoT invoke it, scoped to the rule's ARN
//! and this account.

use std::sync::Arc;

use super::{Env, FUNCTION, PERMISSION, RULE};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done, found};

const KIND: &str = "invoke permission";
pub const STATEMENT_ID: &str = "iot-lambda-permission";
pub const PRINCIPAL: &str = "iot.amazonaws.com";

pub struct Permission(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Permission {
    fn key(&self) -> &str {
        PERMISSION
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        STATEMENT_ID.to_string()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[FUNCTION, RULE]
    }

    fn adopts_unowned(&self) -> bool {
        true
    }
    fn renamed(&self, _rec: &Record) -> bool {
        false
    }
    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::from([
            ("action".to_string(), "lambda:InvokeFunction".into()),
            ("principal".to_string(), PRINCIPAL.into()),
            ("source_arn".to_string(), self.0.d.rule_arn().into()),
        ])
    }
    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        let d = &self.0.d;
        let policy = found!(
            self.0
                .aws
                .lambda
                .get_policy()
                .function_name(&d.function_name)
                .send(),
            is_resource_not_found_exception,
            KIND,
            STATEMENT_ID,
            "GetPolicy"
        );
        let Some(stmt) = policy
            .and_then(|p| p.policy)
            .and_then(|text| statement(&text, STATEMENT_ID))
        else {
            return Ok(None);
        };
        let text = |ptr: &str| stmt.pointer(ptr).and_then(|v| v.as_str()).unwrap_or("");
        let mut f = Fields::from([
            ("action".to_string(), text("/Action").into()),
            ("principal".to_string(), text("/Principal/Service").into()),
            (
                "source_arn".to_string(),
                text("/Condition/ArnLike/AWS:SourceArn").into(),
            ),
        ]);
        // As `is_scoped` judges: another account is a difference, no account condition is not.
        let account = text("/Condition/StringEquals/AWS:SourceAccount");
        if !account.is_empty() && account != d.account {
            f.insert("source_account".into(), account.into());
        }
        Ok(Some(f))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let lambda = &self.0.aws.lambda;
        let d = &self.0.d;
        let function = &d.function_name;
        let rule_arn = d.rule_arn();
        let record = cx.record(PERMISSION);
        let mut rec = Record::new(PERMISSION, KIND, Phase::Created, STATEMENT_ID);
        rec.data
            .insert("source_arn".into(), rule_arn.clone().into());
        rec.data.insert("function".into(), function.clone().into());
        let policy = found!(
            lambda.get_policy().function_name(function).send(),
            is_resource_not_found_exception,
            KIND,
            STATEMENT_ID,
            "GetPolicy"
        );
        let statement = policy
            .and_then(|p| p.policy)
            .and_then(|text| statement(&text, STATEMENT_ID));
        let mut outcome = Outcome::Created;
        if let Some(stmt) = statement {
            if is_scoped(&stmt, &rule_arn, &d.account) {
                return cx.keep(record.as_ref(), rec);
            }
            // Same statement id, wrong scope: replace it (AddPermission refuses duplicates).
            // Not found means a retried removal already did it.
            done!(
                lambda
                    .remove_permission()
                    .function_name(function)
                    .statement_id(STATEMENT_ID)
                    .send(),
                is_resource_not_found_exception,
                KIND,
                STATEMENT_ID,
                "RemovePermission"
            );
            outcome = Outcome::Updated("re-scoped to the rule".into());
        }
        cx.intent(rec.clone())?;
        let added = lambda
            .add_permission()
            .function_name(function)
            .statement_id(STATEMENT_ID)
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
                let policy = call!(
                    lambda.get_policy().function_name(function).send(),
                    KIND,
                    STATEMENT_ID,
                    "GetPolicy"
                );
                let ours = policy
                    .policy()
                    .and_then(|t| self::statement(t, STATEMENT_ID))
                    .is_some_and(|s| is_scoped(&s, &rule_arn, &d.account));
                if !ours {
                    return Err(crate::aws::failed(KIND, STATEMENT_ID, "AddPermission", e));
                }
            }
            Err(e) => return Err(crate::aws::failed(KIND, STATEMENT_ID, "AddPermission", e)),
        }
        cx.commit(rec)?;
        Ok(outcome)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let function = &self.0.d.function_name;
        let policy = found!(
            self.0
                .aws
                .lambda
                .get_policy()
                .function_name(function)
                .send(),
            is_resource_not_found_exception,
            KIND,
            STATEMENT_ID,
            "GetPolicy"
        );
        Ok(policy
            .and_then(|p| p.policy)
            .and_then(|text| statement(&text, STATEMENT_ID))
            .map(|_| format!("{STATEMENT_ID} on {function}")))
    }

    async fn check(&self, _cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "permission.scoped";
        let d = &self.0.d;
        let function = &d.function_name;
        let res = format!("{KIND} {STATEMENT_ID} on {function}");
        let lambda = &self.0.aws.lambda;
        let live: Result<_, StepError> = async {
            Ok(found!(
                lambda.get_policy().function_name(function).send(),
                is_resource_not_found_exception,
                KIND,
                STATEMENT_ID,
                "GetPolicy"
            ))
        }
        .await;
        let policy = crate::check_try!(live, [NAME], res).and_then(|p| p.policy);
        let doc: serde_json::Value = policy
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let iot_statements: Vec<&serde_json::Value> = doc["Statement"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| {
                        s.pointer("/Principal/Service").and_then(|v| v.as_str()) == Some(PRINCIPAL)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rule_arn = d.rule_arn();
        let ok = !iot_statements.is_empty()
            && iot_statements
                .iter()
                .all(|s| is_scoped(s, &rule_arn, &d.account));
        let reason = if iot_statements.is_empty() {
            format!("{function} has no statement letting {PRINCIPAL} invoke it")
        } else if ok {
            format!("{PRINCIPAL} may invoke {function} only from {rule_arn}")
        } else {
            format!("{function} lets {PRINCIPAL} invoke it without being scoped to {rule_arn}")
        };
        vec![Check::new(NAME, &res, ok, reason)]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(PERMISSION) else {
            return Ok(Outcome::Absent);
        };
        let function = rec
            .data_str("function")
            .unwrap_or(&self.0.d.function_name)
            .to_string();
        let removed = done!(
            self.0
                .aws
                .lambda
                .remove_permission()
                .function_name(&function)
                .statement_id(STATEMENT_ID)
                .send(),
            is_resource_not_found_exception,
            KIND,
            STATEMENT_ID,
            "RemovePermission"
        );
        cx.forget(PERMISSION)?;
        Ok(if removed {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

/// The statement with `sid` from a Lambda resource policy document.
pub fn statement(policy: &str, sid: &str) -> Option<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(policy).ok()?;
    doc.get("Statement")?
        .as_array()?
        .iter()
        .find(|s| s.get("Sid").and_then(|v| v.as_str()) == Some(sid))
        .cloned()
}

/// Whether a statement lets exactly IoT invoke, from this rule (and account) only.
pub fn is_scoped(stmt: &serde_json::Value, rule_arn: &str, account: &str) -> bool {
    let principal = stmt.pointer("/Principal/Service").and_then(|v| v.as_str());
    let action = stmt.get("Action").and_then(|v| v.as_str());
    let source_arn = stmt
        .pointer("/Condition/ArnLike/AWS:SourceArn")
        .and_then(|v| v.as_str());
    let source_account = stmt
        .pointer("/Condition/StringEquals/AWS:SourceAccount")
        .and_then(|v| v.as_str());
    principal == Some(PRINCIPAL)
        && action == Some("lambda:InvokeFunction")
        && source_arn == Some(rule_arn)
        && source_account.is_none_or(|a| a == account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_judges_the_statement() {
        let rule = "arn:aws:iot:us-east-1:123456789012:rule/sensor_data_rule_abc123";
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": STATEMENT_ID,
                "Effect": "Allow",
                "Principal": {"Service": PRINCIPAL},
                "Action": "lambda:InvokeFunction",
                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f",
                "Condition": {
                    "ArnLike": {"AWS:SourceArn": rule},
                    "StringEquals": {"AWS:SourceAccount": "123456789012"}
                }
            }]
        })
        .to_string();
        let stmt = statement(&policy, STATEMENT_ID).unwrap();
        assert!(is_scoped(&stmt, rule, "123456789012"));
        assert!(!is_scoped(&stmt, &format!("{rule}x"), "123456789012"));
        assert!(!is_scoped(&stmt, rule, "999999999999"));
        assert!(statement(&policy, "other").is_none());
    }
}

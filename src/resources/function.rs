//! The Lambda function, packaged from the embedded handler in memory. Creating it right after
//! its role fails for a few seconds while IAM propagates; that one error is retried with
//! bounded backoff instead of the recipe's blind `sleep 10`. `down` also removes the log group
//! Lambda creates on first invocation, which the recipe leaves behind.

use std::sync::Arc;

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::create_function::{CreateFunctionError, CreateFunctionOutput};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, FunctionCode, LastUpdateStatus, Runtime};

use super::{Env, ALERT_POLICY, FUNCTION, ROLE};
use crate::engine::{Ctx, Legacy as Resource, Outcome, StepError};
use crate::plan::Fields;
use crate::retry::Backoff;
use crate::state::{Phase, Record};
use crate::verify::Check;
use crate::{call, done, found};

const KIND: &str = "Lambda function";

pub struct Function(pub Arc<Env>);

#[async_trait::async_trait]
impl Resource for Function {
    fn key(&self) -> &str {
        FUNCTION
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.0.d.function_name.clone()
    }
    /// With monitoring on, the role may publish alerts before the function can run.
    fn depends_on(&self) -> &[&'static str] {
        &[ROLE, ALERT_POLICY]
    }

    fn desired(&self, cx: &Ctx) -> Fields {
        let d = &self.0.d;
        let role = cx.record(ROLE).and_then(|r| r.arn).unwrap_or_default();
        let variables = d
            .environment
            .iter()
            .map(|(k, v)| (format!("environment.{k}"), v.clone().into()));
        let mut f = Fields::from([
            ("code_sha256".to_string(), d.code_sha256.clone().into()),
            (
                "description".to_string(),
                d.function_description.clone().into(),
            ),
            ("handler".to_string(), d.handler.clone().into()),
            ("memory_mb".to_string(), d.memory_mb.into()),
            ("role".to_string(), role.into()),
            ("runtime".to_string(), d.runtime.clone().into()),
            ("timeout_s".to_string(), d.timeout_s.into()),
        ]);
        f.extend(variables);
        f
    }

    async fn observe(&self, _cx: &Ctx) -> Result<Option<Fields>, StepError> {
        let live = self.live(&self.0.d.function_name).await?;
        Ok(live.and_then(|l| l.configuration).map(|c| {
            let variables: Vec<(String, serde_json::Value)> = live_environment(&c)
                .into_iter()
                .map(|(k, v)| (format!("environment.{k}"), v.into()))
                .collect();
            let mut f = Fields::from([
                (
                    "code_sha256".to_string(),
                    c.code_sha256().unwrap_or_default().into(),
                ),
                (
                    "description".to_string(),
                    c.description().unwrap_or_default().into(),
                ),
                (
                    "handler".to_string(),
                    c.handler().unwrap_or_default().into(),
                ),
                ("memory_mb".to_string(), c.memory_size().unwrap_or(0).into()),
                ("role".to_string(), c.role().unwrap_or_default().into()),
                (
                    "runtime".to_string(),
                    c.runtime().map(|r| r.as_str()).unwrap_or_default().into(),
                ),
                ("timeout_s".to_string(), c.timeout().unwrap_or(0).into()),
            ]);
            f.extend(variables);
            f
        }))
    }

    async fn ensure(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let lambda = &self.0.aws.lambda;
        let d = &self.0.d;
        let name = &d.function_name;
        let role_arn = cx
            .record(ROLE)
            .and_then(|r| r.arn)
            .ok_or_else(|| StepError::Failed("IAM role ARN missing from state".into()))?;
        let record = cx.record(FUNCTION);
        let live = self.live(name).await?;
        if let Some(cfg) = live.and_then(|l| l.configuration) {
            let Some(mut rec) = record.clone() else {
                return Err(StepError::NotOurs {
                    kind: KIND.into(),
                    name: name.clone(),
                });
            };
            let was_intent = rec.phase == Phase::Intent;
            rec.phase = Phase::Created;
            rec.arn = cfg.function_arn().map(str::to_string);
            let mut changes = Vec::new();
            if cfg.code_sha256() != Some(d.code_sha256.as_str()) {
                self.wait_until_updatable(cx).await?;
                call!(
                    lambda
                        .update_function_code()
                        .function_name(name)
                        .zip_file(Blob::new(d.zip.clone()))
                        .send(),
                    KIND,
                    name,
                    "UpdateFunctionCode"
                );
                changes.push("code".to_string());
            }
            let config_diff = config_differences(&cfg, d, &role_arn);
            if !config_diff.is_empty() {
                // Lambda rejects a configuration update while the code update is in progress.
                self.wait_until_updatable(cx).await?;
                call!(
                    lambda
                        .update_function_configuration()
                        .function_name(name)
                        .runtime(Runtime::from(d.runtime.as_str()))
                        .role(&role_arn)
                        .handler(&d.handler)
                        .description(&d.function_description)
                        .timeout(d.timeout_s)
                        .memory_size(d.memory_mb)
                        .environment(environment(d))
                        .send(),
                    KIND,
                    name,
                    "UpdateFunctionConfiguration"
                );
                changes.extend(config_diff);
            }
            if record.as_ref() != Some(&rec) {
                cx.commit(rec)?;
            }
            return Ok(if !changes.is_empty() {
                Outcome::Updated(changes.join(", "))
            } else if was_intent {
                Outcome::Adopted
            } else {
                Outcome::Unchanged
            });
        }
        let mut rec = cx.intent(Record::new(FUNCTION, KIND, Phase::Intent, name))?;
        let out = crate::create!(
            create_with_propagation_retry(d.iam_retry, cx, || {
                self.0
                    .aws
                    .lambda
                    .create_function()
                    .function_name(name)
                    .runtime(Runtime::from(d.runtime.as_str()))
                    .role(&role_arn)
                    .handler(&d.handler)
                    .code(
                        FunctionCode::builder()
                            .zip_file(Blob::new(d.zip.clone()))
                            .build(),
                    )
                    .description(&d.function_description)
                    .timeout(d.timeout_s)
                    .memory_size(d.memory_mb)
                    .environment(environment(d))
                    .send()
            }),
            is_resource_conflict_exception,
            cx,
            FUNCTION,
            KIND,
            name,
            "CreateFunction"
        );
        rec.phase = Phase::Created;
        rec.arn = out.function_arn;
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    async fn probe(&self, _cx: &Ctx) -> Result<Option<String>, StepError> {
        let name = &self.0.d.function_name;
        Ok(self
            .live(name)
            .await?
            .and_then(|o| o.configuration)
            .map(|c| c.function_arn.unwrap_or_default()))
    }

    async fn check(&self, cx: &Ctx) -> Vec<Check> {
        const NAME: &str = "function.configuration";
        let d = &self.0.d;
        let name = &d.function_name;
        let res = format!("{KIND} {name}");
        let live = self.live(name).await;
        let Some(cfg) = crate::check_try!(live, [NAME], res).and_then(|l| l.configuration) else {
            return vec![Check::fail(NAME, &res, format!("{res} does not exist"))];
        };
        let role_arn = cx.record(ROLE).and_then(|r| r.arn).unwrap_or_default();
        let mut problems = config_differences(&cfg, d, &role_arn);
        if cfg.code_sha256() != Some(d.code_sha256.as_str()) {
            problems.push("code differs from the deployed package".into());
        }
        let state = cfg.state().map(|s| s.as_str()).unwrap_or("unknown");
        if state != "Active" {
            problems.push(format!("state is {state}"));
        }
        if let Some(u) = cfg.last_update_status() {
            if u.as_str() != "Successful" {
                problems.push(format!("last update is {}", u.as_str()));
            }
        }
        vec![if problems.is_empty() {
            Check::pass(
                NAME,
                &res,
                format!(
                    "Active; {} {}, {} MB, {} s, code as deployed",
                    d.runtime, d.handler, d.memory_mb, d.timeout_s
                ),
            )
        } else {
            Check::fail(NAME, &res, format!("{res}: {}", problems.join(", ")))
        }]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(FUNCTION) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        let deleted = done!(
            self.0
                .aws
                .lambda
                .delete_function()
                .function_name(name)
                .send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "DeleteFunction"
        );
        let group = format!("/aws/lambda/{name}");
        done!(
            self.0
                .aws
                .logs
                .delete_log_group()
                .log_group_name(&group)
                .send(),
            is_resource_not_found_exception,
            "log group",
            &group,
            "DeleteLogGroup"
        );
        cx.forget(FUNCTION)?;
        Ok(if deleted {
            Outcome::Deleted
        } else {
            Outcome::Absent
        })
    }
}

impl Function {
    /// The live resource, or None when it does not exist: the one read that ensure, probe,
    /// check and destroy share.
    async fn live(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_lambda::operation::get_function::GetFunctionOutput>, StepError> {
        Ok(found!(
            self.0.aws.lambda.get_function().function_name(name).send(),
            is_resource_not_found_exception,
            KIND,
            name,
            "GetFunction"
        ))
    }

    /// Polls GetFunction until LastUpdateStatus is no longer InProgress (bounded).
    async fn wait_until_updatable(&self, cx: &Ctx) -> Result<(), StepError> {
        let name = &self.0.d.function_name;
        let mut delays = Backoff::IAM_PROPAGATION.delays();
        loop {
            let out = call!(
                self.0.aws.lambda.get_function().function_name(name).send(),
                KIND,
                name,
                "GetFunction"
            );
            let status = out
                .configuration()
                .and_then(|c| c.last_update_status())
                .cloned();
            if status != Some(LastUpdateStatus::InProgress) {
                return Ok(());
            }
            let Some(delay) = delays.next() else {
                return Err(StepError::Failed(format!(
                    "{KIND} {name:?}: still updating after {}s",
                    Backoff::IAM_PROPAGATION.budget.as_secs()
                )));
            };
            cx.progress("waiting for the previous update to finish");
            tokio::time::sleep(delay).await;
        }
    }
}

fn config_differences(
    cfg: &aws_sdk_lambda::types::FunctionConfiguration,
    d: &super::Deployment,
    role_arn: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let runtime = cfg.runtime().map(|r| r.as_str()).unwrap_or("");
    if runtime != d.runtime {
        out.push(format!("runtime: {runtime:?} → {:?}", d.runtime));
    }
    if cfg.memory_size() != Some(d.memory_mb) {
        out.push(format!(
            "memory: {} → {}",
            cfg.memory_size().unwrap_or(0),
            d.memory_mb
        ));
    }
    if cfg.timeout() != Some(d.timeout_s) {
        out.push(format!(
            "timeout: {} → {}",
            cfg.timeout().unwrap_or(0),
            d.timeout_s
        ));
    }
    if cfg.handler() != Some(d.handler.as_str()) {
        out.push(format!(
            "handler: {:?} → {:?}",
            cfg.handler().unwrap_or(""),
            d.handler
        ));
    }
    if cfg.role() != Some(role_arn) {
        out.push("role".into());
    }
    if cfg.description().unwrap_or("") != d.function_description {
        out.push("description".into());
    }
    if live_environment(cfg) != d.environment {
        out.push("environment".into());
    }
    out
}

/// The function's environment variables as configured.
fn environment(d: &super::Deployment) -> Environment {
    Environment::builder()
        .set_variables(Some(d.environment.clone().into_iter().collect()))
        .build()
}

/// The live function's environment variables (none when it has no environment).
fn live_environment(
    cfg: &aws_sdk_lambda::types::FunctionConfiguration,
) -> std::collections::BTreeMap<String, String> {
    cfg.environment()
        .and_then(|e| e.variables())
        .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Lambda's answer while a new role is not yet assumable. AWS gives it no dedicated error
/// code (it is an InvalidParameterValueException like any bad parameter), so the message is
/// the only way to tell it apart.
fn is_role_not_ready(err: &SdkError<CreateFunctionError>) -> bool {
    match err.as_service_error() {
        Some(CreateFunctionError::InvalidParameterValueException(e)) => e
            .message()
            .is_some_and(|m| m.contains("cannot be assumed by Lambda")),
        _ => false,
    }
}

/// Sends CreateFunction, retrying the IAM-propagation error with bounded backoff.
pub async fn create_with_propagation_retry<F, Fut>(
    backoff: Backoff,
    cx: &Ctx,
    mut send: F,
) -> Result<CreateFunctionOutput, SdkError<CreateFunctionError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<CreateFunctionOutput, SdkError<CreateFunctionError>>>,
{
    let mut delays = backoff.delays();
    let mut attempt = 1;
    loop {
        match send().await {
            Err(e) if is_role_not_ready(&e) => {
                let Some(delay) = delays.next() else {
                    return Err(e);
                };
                attempt += 1;
                cx.progress(&format!(
                    "waiting for the IAM role to propagate (attempt {attempt} in {:.1}s)",
                    delay.as_secs_f32()
                ));
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

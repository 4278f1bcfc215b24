//! The Lambda function, packaged from the embedded handler in memory. Creating it right after
//! its role fails for a few seconds while IAM propagates; that one error is retried with
//! bounded backoff instead of the recipe's blind `sleep 10`. `down` also removes the log group
//! Lambda creates on first invocation, which the recipe leaves behind.

use std::sync::Arc;

use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::create_function::{CreateFunctionError, CreateFunctionOutput};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime,
};

use super::sdk::{self, op};
use super::{
    Deployment, Env, FunctionSpec, ALERT_POLICY, FUNCTION, HOOK_FUNCTION, HOOK_ROLE, ROLE,
};
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::retry::Backoff;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

const KIND: &str = "Lambda function";
/// The field UpdateFunctionCode changes; every other field is UpdateFunctionConfiguration's.
const CODE: &str = "code_sha256";

/// Which function: the data processor, or claim provisioning's pre-provisioning hook.
pub struct Slot {
    key: &'static str,
    /// The key of its execution role's record (whose ARN it runs as).
    role: &'static str,
    check: &'static str,
    spec: fn(&Deployment) -> Option<&FunctionSpec>,
    depends_on: &'static [&'static str],
}

pub const PROCESSOR: Slot = Slot {
    key: FUNCTION,
    role: ROLE,
    check: "function.configuration",
    spec: |d| Some(&d.function),
    // With monitoring on, the role may publish alerts before the function can run.
    depends_on: &[ROLE, ALERT_POLICY],
};

pub const HOOK: Slot = Slot {
    key: HOOK_FUNCTION,
    role: HOOK_ROLE,
    check: "provisioning.hook_function",
    spec: |d| {
        d.provisioning
            .as_ref()
            .and_then(|p| p.hook.as_ref())
            .map(|h| &h.function)
    },
    depends_on: &[HOOK_ROLE],
};

/// The anomaly detector the analytics stream's event source mapping runs.
pub const DETECTOR: Slot = Slot {
    key: super::analytics::DETECTOR,
    role: super::analytics::DETECTOR_ROLE,
    check: "analytics.detector",
    spec: |d| d.analytics.as_deref().map(|a| &a.function),
    depends_on: &[super::analytics::DETECTOR_ROLE],
};

pub struct Function(pub Arc<Env>, pub &'static Slot);

impl Function {
    pub fn processor(env: Arc<Env>) -> Function {
        Function(env, &PROCESSOR)
    }

    /// The spec; a function the config no longer wants (a stray) is only ever deleted, by
    /// its recorded name, so an empty spec stands in.
    fn spec(&self) -> FunctionSpec {
        (self.1.spec)(&self.0.d)
            .cloned()
            .unwrap_or_else(|| FunctionSpec {
                name: String::new(),
                description: String::new(),
                runtime: String::new(),
                memory_mb: 0,
                timeout_s: 0,
                handler: String::new(),
                environment: Default::default(),
                zip: vec![],
                code_sha256: String::new(),
            })
    }
}

impl Meta for Function {
    fn key(&self) -> &str {
        self.1.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec().name
    }
    fn depends_on(&self) -> &[&'static str] {
        self.1.depends_on
    }
}

#[async_trait::async_trait]
impl Kind for Function {
    /// GetFunction's configuration (which carries the code's hash).
    type Live = FunctionConfiguration;

    fn desired(&self, cx: &Ctx) -> Fields {
        let f = self.spec();
        let role = cx
            .record(self.1.role)
            .and_then(|r| r.arn)
            .unwrap_or_default();
        let variables = f
            .environment
            .iter()
            .map(|(k, v)| (format!("environment.{k}"), v.clone().into()));
        let mut fields = Fields::from([
            (CODE.to_string(), f.code_sha256.clone().into()),
            ("description".to_string(), f.description.clone().into()),
            ("handler".to_string(), f.handler.clone().into()),
            ("memory_mb".to_string(), f.memory_mb.into()),
            ("role".to_string(), role.into()),
            ("runtime".to_string(), f.runtime.clone().into()),
            ("timeout_s".to_string(), f.timeout_s.into()),
        ]);
        fields.extend(variables);
        fields
    }

    async fn read(&self, cx: &Ctx) -> Result<Option<FunctionConfiguration>, StepError> {
        let name = &super::name_to_read(
            (self.1.spec)(&self.0.d).map(|f| f.name.as_str()),
            cx,
            self.1.key,
        );
        let out = sdk::find(
            op(KIND, name, "GetFunction"),
            self.0.aws.lambda.get_function().function_name(name).send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(out.and_then(|o| o.configuration))
    }

    fn fields(&self, c: &FunctionConfiguration) -> Fields {
        let variables: Vec<(String, serde_json::Value)> = live_environment(c)
            .into_iter()
            .map(|(k, v)| (format!("environment.{k}"), v.into()))
            .collect();
        let mut f = Fields::from([
            (CODE.to_string(), c.code_sha256().unwrap_or_default().into()),
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
    }

    fn identify(&self, c: &FunctionConfiguration) -> String {
        c.function_arn().unwrap_or_default().to_string()
    }

    async fn apply(
        &self,
        cx: &Ctx,
        step: Step<FunctionConfiguration>,
    ) -> Result<Outcome, StepError> {
        let lambda = &self.0.aws.lambda;
        let d = &self.0.d;
        let f = self.spec();
        let key = self.1.key;
        let name = &f.name;
        let role_arn = cx
            .record(self.1.role)
            .and_then(|r| r.arn)
            .ok_or_else(|| StepError::Failed("IAM role ARN missing from state".into()))?;
        let Some(live) = &step.live else {
            let mut rec = cx.intent(Record::new(key, KIND, Phase::Intent, name))?;
            let out = sdk::create(
                op(KIND, name, "CreateFunction"),
                create_with_propagation_retry(d.iam_retry, cx, || {
                    lambda
                        .create_function()
                        .function_name(name)
                        .runtime(Runtime::from(f.runtime.as_str()))
                        .role(&role_arn)
                        .handler(&f.handler)
                        .code(
                            FunctionCode::builder()
                                .zip_file(Blob::new(f.zip.clone()))
                                .build(),
                        )
                        .description(&f.description)
                        .timeout(f.timeout_s)
                        .memory_size(f.memory_mb)
                        .environment(environment(&f))
                        .send()
                }),
                |e| e.is_resource_conflict_exception(),
            )
            .await?;
            rec.phase = Phase::Created;
            rec.arn = out.function_arn;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        if step.changes(CODE) {
            self.wait_until_updatable(cx).await?;
            sdk::send(
                op(KIND, name, "UpdateFunctionCode"),
                lambda
                    .update_function_code()
                    .function_name(name)
                    .zip_file(Blob::new(f.zip.clone()))
                    .send(),
            )
            .await?;
        }
        if step.plan.changes.iter().any(|c| c.field != CODE) {
            // Lambda rejects a configuration update while the code update is in progress.
            self.wait_until_updatable(cx).await?;
            sdk::send(
                op(KIND, name, "UpdateFunctionConfiguration"),
                lambda
                    .update_function_configuration()
                    .function_name(name)
                    .runtime(Runtime::from(f.runtime.as_str()))
                    .role(&role_arn)
                    .handler(&f.handler)
                    .description(&f.description)
                    .timeout(f.timeout_s)
                    .memory_size(f.memory_mb)
                    .environment(environment(&f))
                    .send(),
            )
            .await?;
        }
        let outcome = step.outcome((!step.plan.changes.is_empty()).then(|| step.summary()));
        let mut rec = step.live_record(key, KIND, name);
        rec.arn = live.function_arn().map(str::to_string);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        self.1.check
    }

    /// The comparison, and whether the function can run: Active, its last update succeeded.
    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, FunctionConfiguration>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        let Some(cfg) = seen.live else {
            return vec![check];
        };
        let f = self.spec();
        let mut problems = Vec::new();
        let state = cfg.state().map(|s| s.as_str()).unwrap_or("unknown");
        if state != "Active" {
            problems.push(format!("state is {state}"));
        }
        if let Some(u) = cfg.last_update_status() {
            if u.as_str() != "Successful" {
                problems.push(format!("last update is {}", u.as_str()));
            }
        }
        let passed = check.status == CheckStatus::Pass;
        if problems.is_empty() {
            if passed {
                check.reason = format!(
                    "Active; {} {}, {} MB, {} s, code as deployed",
                    f.runtime, f.handler, f.memory_mb, f.timeout_s
                );
            }
            return vec![check];
        }
        let res = &seen.resource;
        let reason = if passed {
            format!("{res}: {}", problems.join(", "))
        } else {
            format!("{}, {}", check.reason, problems.join(", "))
        };
        vec![Check::fail(self.check_name(), res, reason)]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let key = self.1.key;
        let Some(rec) = cx.record(key) else {
            return Ok(Outcome::Absent);
        };
        let name = &rec.name;
        let deleted = sdk::find(
            op(KIND, name, "DeleteFunction"),
            self.0
                .aws
                .lambda
                .delete_function()
                .function_name(name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        let group = format!("/aws/lambda/{name}");
        sdk::find(
            op("log group", &group, "DeleteLogGroup"),
            self.0
                .aws
                .logs
                .delete_log_group()
                .log_group_name(&group)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        cx.forget(key)?;
        Ok(Outcome::deleted_if(deleted.is_some()))
    }
}

impl Function {
    /// Polls GetFunction until LastUpdateStatus is no longer InProgress (bounded).
    async fn wait_until_updatable(&self, cx: &Ctx) -> Result<(), StepError> {
        let name = &self.spec().name;
        let mut delays = Backoff::IAM_PROPAGATION.delays();
        loop {
            let out = sdk::send(
                op(KIND, name, "GetFunction"),
                self.0.aws.lambda.get_function().function_name(name).send(),
            )
            .await?;
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

/// The function's environment variables as configured.
fn environment(f: &FunctionSpec) -> Environment {
    Environment::builder()
        .set_variables(Some(f.environment.clone().into_iter().collect()))
        .build()
}

/// The live function's environment variables (none when it has no environment).
fn live_environment(cfg: &FunctionConfiguration) -> std::collections::BTreeMap<String, String> {
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

#[cfg(test)]
mod tests {
    use aws_sdk_lambda::operation::create_function::CreateFunctionOutput;
    use aws_sdk_lambda::operation::get_function::{GetFunctionError, GetFunctionOutput};
    use aws_sdk_lambda::operation::update_function_code::UpdateFunctionCodeOutput;
    use aws_sdk_lambda::operation::update_function_configuration::UpdateFunctionConfigurationOutput;
    use aws_sdk_lambda::types::State;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::plan::Planned;
    use crate::resources::testing::*;

    const NAME: &str = "iot-data-processor-abc123";
    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:iot-data-processor-abc123";
    const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/iot-lambda-role-abc123";

    /// The function as the harness's deployment wants it, changed by `edit`.
    fn configuration(
        d: &crate::resources::Deployment,
        edit: impl Fn(
            aws_sdk_lambda::types::builders::FunctionConfigurationBuilder,
        ) -> aws_sdk_lambda::types::builders::FunctionConfigurationBuilder,
    ) -> FunctionConfiguration {
        edit(
            FunctionConfiguration::builder()
                .function_name(NAME)
                .function_arn(ARN)
                .code_sha256(&d.function.code_sha256)
                .description(&d.function.description)
                .handler(&d.function.handler)
                .memory_size(d.function.memory_mb)
                .role(ROLE_ARN)
                .runtime(Runtime::from(d.function.runtime.as_str()))
                .timeout(d.function.timeout_s)
                .state(State::Active)
                .last_update_status(LastUpdateStatus::Successful),
        )
        .build()
    }

    fn get_function(cfg: FunctionConfiguration) -> Rule {
        mock!(aws_sdk_lambda::Client::get_function)
            .match_requests(|r| r.function_name() == Some(NAME))
            .then_output(move || {
                GetFunctionOutput::builder()
                    .configuration(cfg.clone())
                    .build()
            })
    }

    fn update_code() -> Rule {
        mock!(aws_sdk_lambda::Client::update_function_code)
            .match_requests(|r| r.function_name() == Some(NAME) && r.zip_file().is_some())
            .then_output(|| UpdateFunctionCodeOutput::builder().build())
    }

    fn update_configuration() -> Rule {
        mock!(aws_sdk_lambda::Client::update_function_configuration)
            .match_requests(|r| {
                r.function_name() == Some(NAME)
                    && r.memory_size() == Some(256)
                    && r.role() == Some(ROLE_ARN)
            })
            .then_output(|| UpdateFunctionConfigurationOutput::builder().build())
    }

    fn records() -> Vec<Record> {
        vec![
            recorded(ROLE, "IAM role", "iot-lambda-role-abc123", Some(ROLE_ARN)),
            recorded(FUNCTION, KIND, NAME, Some(ARN)),
        ]
    }

    /// A harness whose live function is the wanted one changed by `edit`, with `writes`.
    fn stack(
        edit: impl Fn(
            aws_sdk_lambda::types::builders::FunctionConfigurationBuilder,
        ) -> aws_sdk_lambda::types::builders::FunctionConfigurationBuilder,
        writes: &[&Rule],
    ) -> (Harness, Rule) {
        let d = deployment(std::path::Path::new("/nonexistent"));
        let get = get_function(configuration(&d, edit));
        let mut lambda = vec![&get];
        lambda.extend_from_slice(writes);
        let h = harness(&[], &[], &lambda, &[], records(), |_| {});
        (h, get)
    }

    async fn plan_then_ensure(h: &Harness) -> (Planned, Outcome) {
        crate::resources::testing::plan_then_ensure(&Function::processor(h.env.clone()), &h.cx)
            .await
    }

    fn fields(p: &Planned) -> Vec<&str> {
        crate::resources::testing::changed_fields(p)
    }

    #[tokio::test]
    async fn in_sync_is_unchanged_and_writes_nothing() {
        let (h, get) = stack(|c| c, &[]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::NoChange, "{plan:?}");
        assert_eq!(outcome, Outcome::Unchanged);
        assert_eq!(get.num_calls(), 2, "one read for plan, one for up");
        assert_eq!(h.cx.record(FUNCTION), Some(records().remove(1)));
    }

    #[tokio::test]
    async fn a_memory_change_updates_the_configuration_not_the_code() {
        let config = update_configuration();
        let (h, _get) = stack(|c| c.memory_size(1024), &[&config]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Update);
        assert_eq!(fields(&plan), ["memory_mb"]);
        assert_eq!(outcome, Outcome::Updated("memory_mb: 1024 → 256".into()));
        assert_eq!(config.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_environment_change_updates_the_configuration() {
        let config = update_configuration();
        let (h, _get) = stack(
            |c| {
                c.environment(
                    aws_sdk_lambda::types::EnvironmentResponse::builder()
                        .variables("STAGE", "test")
                        .build(),
                )
            },
            &[&config],
        );
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(fields(&plan), ["environment.STAGE"]);
        assert_eq!(
            outcome,
            Outcome::Updated("environment.STAGE: \"test\" → (removed)".into())
        );
        assert_eq!(config.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_code_change_updates_the_code_not_the_configuration() {
        let code = update_code();
        let (h, get) = stack(|c| c.code_sha256("an-older-package"), &[&code]);
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(fields(&plan), [CODE]);
        assert!(matches!(outcome, Outcome::Updated(ref s) if s.starts_with("code_sha256: ")));
        assert_eq!(code.num_calls(), 1);
        assert_eq!(
            get.num_calls(),
            3,
            "plan, up, and the wait for an update in progress"
        );
    }

    #[tokio::test]
    async fn code_and_configuration_changes_make_both_calls() {
        let (code, config) = (update_code(), update_configuration());
        let (h, _get) = stack(
            |c| c.code_sha256("an-older-package").timeout(3),
            &[&code, &config],
        );
        let (plan, _) = plan_then_ensure(&h).await;
        assert_eq!(fields(&plan), [CODE, "timeout_s"]);
        assert_eq!((code.num_calls(), config.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_missing_function_is_created() {
        let get = mock!(aws_sdk_lambda::Client::get_function).then_error(|| {
            GetFunctionError::ResourceNotFoundException(
                aws_sdk_lambda::types::error::ResourceNotFoundException::builder().build(),
            )
        });
        let create = mock!(aws_sdk_lambda::Client::create_function)
            .match_requests(|r| r.function_name() == Some(NAME) && r.role() == Some(ROLE_ARN))
            .then_output(|| CreateFunctionOutput::builder().function_arn(ARN).build());
        let mut recs = records();
        recs.pop();
        let h = harness(&[], &[], &[&get, &create], &[], recs, |_| {});
        let (plan, outcome) = plan_then_ensure(&h).await;
        assert_eq!(plan.action, Action::Create);
        assert_eq!(outcome, Outcome::Created);
        assert_eq!(create.num_calls(), 1);
        assert_eq!(h.cx.record(FUNCTION).unwrap().arn.as_deref(), Some(ARN));
    }

    #[tokio::test]
    async fn verify_judges_by_the_comparison_and_the_functions_state() {
        let (h, _get) = stack(|c| c, &[]);
        let checks = Resource::check(&Function::processor(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Pass, "{checks:?}");
        assert!(checks[0].reason.starts_with("Active; python3.12"));

        let (h, _get) = stack(|c| c.memory_size(1024).state(State::Pending), &[]);
        let checks = Resource::check(&Function::processor(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].status, CheckStatus::Fail);
        assert!(
            checks[0]
                .reason
                .ends_with("differs: memory_mb: 1024 → 256, state is Pending"),
            "{}",
            checks[0].reason
        );

        let (h, _get) = stack(|c| c.state(State::Failed), &[]);
        let checks = Resource::check(&Function::processor(h.env.clone()), &h.cx).await;
        assert_eq!(checks[0].reason, format!("{KIND} {NAME}: state is Failed"));
    }
}

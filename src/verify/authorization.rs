//! `policy.authorization`: ask AWS IoT's own policy evaluator (TestAuthorization) whether the
//! device may do what the deployed policy is meant to let it do, and may not act as another
//! thing. It needs no device connection, so it runs on AWS exactly as it does locally.

use aws_sdk_iot::types::{ActionType, AuthDecision, AuthInfo};

use super::{Check, DEVICE_AUTHORIZATION};
use crate::config::PolicyPreset;
use crate::resources::Deployment;

/// One request to the evaluator and the answer the deployment intends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub action: Action,
    pub resource: String,
    /// The MQTT client id the request is made under (thing policy variables resolve from it).
    pub client_id: String,
    pub allowed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Publish,
    Subscribe,
    Receive,
}

impl Action {
    fn sdk(self) -> ActionType {
        match self {
            Action::Connect => ActionType::Connect,
            Action::Publish => ActionType::Publish,
            Action::Subscribe => ActionType::Subscribe,
            Action::Receive => ActionType::Receive,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
        }
    }
}

/// What the deployed policy must allow `thing` and refuse: connecting as `other` (another
/// thing's client id) and publishing to `other`'s topic. The shadow's MQTT topics are expected
/// only with the built-in mqtt-shadow policy; the recipe's policy and a template file are held
/// to connecting and publishing readings (what every device policy of this stack must allow).
pub fn expectations(d: &Deployment, thing: &str, other: &str) -> Vec<Expectation> {
    let arn = |kind: &str, rest: &str| {
        format!(
            "arn:{}:iot:{}:{}:{kind}/{rest}",
            d.partition, d.region, d.account
        )
    };
    let mine = |action, resource: String, allowed| Expectation {
        action,
        resource,
        client_id: thing.to_string(),
        allowed,
    };
    let mut out = vec![
        mine(Action::Connect, arn("client", thing), true),
        mine(
            Action::Publish,
            arn("topic", &format!("sensor/temperature/{thing}")),
            true,
        ),
    ];
    if d.policy.preset == Some(PolicyPreset::MqttShadow) {
        let shadow = format!("$aws/things/{thing}/shadow");
        out.push(mine(
            Action::Publish,
            arn("topic", &format!("{shadow}/update")),
            true,
        ));
        out.push(mine(
            Action::Subscribe,
            arn("topicfilter", &format!("{shadow}/update/delta")),
            true,
        ));
        out.push(mine(
            Action::Receive,
            arn("topic", &format!("{shadow}/update/delta")),
            true,
        ));
    }
    // With job templates the built-in policy lets the device use the jobs MQTT API on its own
    // topics, and only there.
    if d.policy.preset.is_some() && !d.jobs.templates.is_empty() {
        let jobs = format!("$aws/things/{thing}/jobs");
        out.push(mine(
            Action::Publish,
            arn("topic", &format!("{jobs}/start-next")),
            true,
        ));
        out.push(mine(
            Action::Subscribe,
            arn("topicfilter", &format!("{jobs}/notify-next")),
            true,
        ));
        out.push(mine(
            Action::Receive,
            arn("topic", &format!("{jobs}/notify-next")),
            true,
        ));
        out.push(mine(
            Action::Publish,
            arn("topic", &format!("$aws/things/{other}/jobs/start-next")),
            false,
        ));
    }
    out.push(mine(
        Action::Publish,
        arn("topic", &format!("sensor/temperature/{other}")),
        false,
    ));
    out.push(Expectation {
        action: Action::Connect,
        resource: arn("client", other),
        client_id: other.to_string(),
        allowed: false,
    });
    out
}

/// Runs the expectations through TestAuthorization for the device's certificate and says,
/// for each one that does not hold, what was asked and what AWS answered.
pub async fn check(
    iot: &aws_sdk_iot::Client,
    d: &Deployment,
    thing: &str,
    certificate_arn: &str,
    other: &str,
) -> Check {
    let resource = format!("policy {} for {thing}", d.policy.name);
    let wanted = expectations(d, thing, other);
    let wrong = match evaluate(iot, &d.policy.name, certificate_arn, &wanted).await {
        Ok(w) => w,
        Err(e) => return Check::fail(DEVICE_AUTHORIZATION, &resource, e),
    };
    let allowed = wanted.iter().filter(|e| e.allowed).count();
    if wrong.is_empty() {
        Check::pass(
            DEVICE_AUTHORIZATION,
            &resource,
            format!(
                "TestAuthorization: {allowed} intended actions allowed ({}), acting as {other} denied",
                d.policy.origin
            ),
        )
    } else {
        Check::fail(
            DEVICE_AUTHORIZATION,
            &resource,
            format!("TestAuthorization: {}", wrong.join("; ")),
        )
    }
}

/// verify's check of the claim policy.
pub const CLAIM_AUTHORIZATION: &str = "provisioning.claim_authorization";

/// What the claim certificate must be allowed (connect; the certificate and this template's
/// provisioning topics) and refused (a device's topic and shadow, another template).
pub fn claim_expectations(d: &Deployment, template: &str) -> Vec<Expectation> {
    let arn = |kind: &str, rest: &str| {
        format!(
            "arn:{}:iot:{}:{}:{kind}/{rest}",
            d.partition, d.region, d.account
        )
    };
    let client = "SN-verify-claim";
    let e = |action, resource: String, allowed| Expectation {
        action,
        resource,
        client_id: client.to_string(),
        allowed,
    };
    let csr = "$aws/certificates/create-from-csr/json";
    let provision = format!("$aws/provisioning-templates/{template}/provision/json");
    vec![
        e(Action::Connect, arn("client", client), true),
        e(Action::Publish, arn("topic", csr), true),
        e(
            Action::Subscribe,
            arn("topicfilter", &format!("{csr}/accepted")),
            true,
        ),
        e(
            Action::Receive,
            arn("topic", &format!("{csr}/accepted")),
            true,
        ),
        e(Action::Publish, arn("topic", &provision), true),
        e(
            Action::Subscribe,
            arn("topicfilter", &format!("{provision}/rejected")),
            true,
        ),
        e(
            Action::Receive,
            arn("topic", &format!("{provision}/accepted")),
            true,
        ),
        e(
            Action::Publish,
            arn("topic", "sensor/temperature/any-device"),
            false,
        ),
        e(
            Action::Subscribe,
            arn("topicfilter", "$aws/things/any-device/shadow/update/delta"),
            false,
        ),
        e(
            Action::Publish,
            arn(
                "topic",
                "$aws/provisioning-templates/another-template/provision/json",
            ),
            false,
        ),
    ]
}

/// The claim policy through TestAuthorization for the claim certificate.
pub async fn claim_check(
    iot: &aws_sdk_iot::Client,
    d: &Deployment,
    certificate_arn: &str,
) -> Check {
    let Some(p) = &d.provisioning else {
        return Check::fail(
            CLAIM_AUTHORIZATION,
            "claim policy",
            "claim provisioning is not configured",
        );
    };
    let resource = format!("policy {} for the claim certificate", p.claim_policy.name);
    let wanted = claim_expectations(d, &p.template_name);
    match evaluate(iot, &p.claim_policy.name, certificate_arn, &wanted).await {
        Err(e) => Check::fail(CLAIM_AUTHORIZATION, &resource, e),
        Ok(wrong) if wrong.is_empty() => Check::pass(
            CLAIM_AUTHORIZATION,
            &resource,
            format!(
                "TestAuthorization: the provisioning topics of {} allowed ({} actions); a device topic, the shadow and another template denied",
                p.template_name,
                wanted.iter().filter(|e| e.allowed).count()
            ),
        ),
        Ok(wrong) => Check::fail(
            CLAIM_AUTHORIZATION,
            &resource,
            format!("TestAuthorization: {}", wrong.join("; ")),
        ),
    }
}

/// Asks TestAuthorization about each expectation for the certificate: what does not hold,
/// each as one phrase, or the call's failure.
async fn evaluate(
    iot: &aws_sdk_iot::Client,
    policy: &str,
    certificate_arn: &str,
    wanted: &[Expectation],
) -> Result<Vec<String>, String> {
    let mut wrong = Vec::new();
    // One call per client id (thing variables resolve from it); AWS takes 10 requests a call.
    let mut client_ids: Vec<&str> = wanted.iter().map(|e| e.client_id.as_str()).collect();
    client_ids.dedup();
    for client_id in client_ids {
        let batch: Vec<&Expectation> = wanted.iter().filter(|e| e.client_id == client_id).collect();
        for chunk in batch.chunks(10) {
            let mut call = iot
                .test_authorization()
                .principal(certificate_arn)
                .client_id(client_id);
            for e in chunk {
                let info = AuthInfo::builder()
                    .action_type(e.action.sdk())
                    .resources(&e.resource)
                    .build();
                match info {
                    Ok(info) => call = call.auth_infos(info),
                    Err(e) => return Err(e.to_string()),
                }
            }
            let answer = match call.send().await {
                Ok(a) => a,
                Err(e) => {
                    let failure = crate::aws::failed("policy", policy, "TestAuthorization", e);
                    return Err(format!(
                        "{failure} (an endpoint without TestAuthorization, such as plain moto, cannot check the device's side: --skip-device)"
                    ));
                }
            };
            let results = answer.auth_results();
            for (i, e) in chunk.iter().enumerate() {
                let decision = results.get(i).and_then(|r| r.auth_decision());
                let allowed = matches!(decision, Some(AuthDecision::Allowed));
                if allowed != e.allowed {
                    let said = decision.map(|d| d.as_str()).unwrap_or("no answer");
                    // The ARN's prefix is the same for every request: name what differs.
                    let short = e.resource.rsplit_once(':').map_or(&*e.resource, |(_, r)| r);
                    wrong.push(format!(
                        "{} {short} as {} is {said}, meant to be {}",
                        e.action.name(),
                        e.client_id,
                        if e.allowed { "allowed" } else { "denied" },
                    ));
                }
            }
        }
    }
    Ok(wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(preset: Option<PolicyPreset>) -> Deployment {
        let dir = std::path::Path::new("/nonexistent");
        let mut d = crate::resources::testing::deployment(dir);
        d.policy.preset = preset;
        d
    }

    #[test]
    fn the_mqtt_shadow_policy_is_expected_to_allow_the_shadow_topics() {
        let d = deployment(Some(PolicyPreset::MqttShadow));
        let e = expectations(&d, "t1", "t2");
        let allowed: Vec<_> = e
            .iter()
            .filter(|e| e.allowed)
            .map(|e| (e.action, e.resource.rsplit(":").next().unwrap().to_string()))
            .collect();
        assert_eq!(
            allowed,
            [
                (Action::Connect, "client/t1".to_string()),
                (Action::Publish, "topic/sensor/temperature/t1".into()),
                (Action::Publish, "topic/$aws/things/t1/shadow/update".into()),
                (
                    Action::Subscribe,
                    "topicfilter/$aws/things/t1/shadow/update/delta".into()
                ),
                (
                    Action::Receive,
                    "topic/$aws/things/t1/shadow/update/delta".into()
                ),
            ]
        );
        let denied: Vec<_> = e.iter().filter(|e| !e.allowed).collect();
        assert_eq!(denied.len(), 2);
        assert!(denied
            .iter()
            .any(|e| e.action == Action::Connect && e.client_id == "t2"));
        assert!(denied
            .iter()
            .any(|e| e.action == Action::Publish && e.client_id == "t1"));
    }

    #[test]
    fn with_job_templates_the_device_is_held_to_its_own_jobs_topics() {
        let mut d = deployment(Some(PolicyPreset::MqttShadow));
        let mut jobs = (*d.jobs).clone();
        jobs.templates = crate::resources::jobs::spec(
            &Default::default(),
            &[crate::config::jobs::JobTemplateConfig {
                name: "fw".into(),
                firmware: Some("fw.bin".into()),
                version: Some("1".into()),
                ..Default::default()
            }],
            None,
            "abc123",
            "us-east-1",
            "123456789012",
            "aws",
        )
        .templates;
        d.jobs = std::sync::Arc::new(jobs);
        let e = expectations(&d, "t1", "t2");
        let jobs: Vec<_> = e
            .iter()
            .filter(|e| e.resource.contains("/jobs/"))
            .map(|e| (e.action, e.allowed, e.resource.rsplit(':').next().unwrap()))
            .collect();
        assert_eq!(
            jobs,
            [
                (
                    Action::Publish,
                    true,
                    "topic/$aws/things/t1/jobs/start-next"
                ),
                (
                    Action::Subscribe,
                    true,
                    "topicfilter/$aws/things/t1/jobs/notify-next"
                ),
                (
                    Action::Receive,
                    true,
                    "topic/$aws/things/t1/jobs/notify-next"
                ),
                (
                    Action::Publish,
                    false,
                    "topic/$aws/things/t2/jobs/start-next"
                ),
            ]
        );
    }

    #[test]
    fn the_recipes_policy_and_templates_are_held_to_connect_and_publish() {
        for preset in [Some(PolicyPreset::Recipe), None] {
            let e = expectations(&deployment(preset), "t1", "t2");
            assert_eq!(e.iter().filter(|e| e.allowed).count(), 2);
            assert_eq!(e.iter().filter(|e| !e.allowed).count(), 2);
        }
    }
}

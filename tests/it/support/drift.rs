//! Changes made from outside iotreg with the SDK, as a console user or another tool would:
//! the five kinds of drift that `plan` must name and `up` must repair in place.

use super::Clients;

/// Names of a deployment's resources, from its suffix.
pub struct Names {
    pub thing: String,
    pub policy: String,
    pub function: String,
    pub rule: String,
}

impl Names {
    pub fn new(suffix: &str) -> Names {
        Names {
            thing: format!("temperature-sensor-{suffix}"),
            policy: format!("device-policy-{suffix}"),
            function: format!("iot-data-processor-{suffix}"),
            rule: format!("sensor_data_rule_{suffix}"),
        }
    }
}

pub async fn attribute(c: &Clients, n: &Names, key: &str, value: &str) {
    c.iot
        .update_thing()
        .thing_name(&n.thing)
        .attribute_payload(
            aws_sdk_iot::types::AttributePayload::builder()
                .attributes(key, value)
                .merge(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

pub async fn policy_document(c: &Clients, n: &Names, doc: &str) {
    c.iot
        .create_policy_version()
        .policy_name(&n.policy)
        .policy_document(doc)
        .set_as_default(true)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreatePolicyVersion: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )
        });
}

pub async fn rule_sql(c: &Clients, n: &Names, sql: &str) {
    let now = c
        .iot
        .get_topic_rule()
        .rule_name(&n.rule)
        .send()
        .await
        .unwrap();
    let rule = now.rule().unwrap();
    c.iot
        .replace_topic_rule()
        .rule_name(&n.rule)
        .topic_rule_payload(
            aws_sdk_iot::types::TopicRulePayload::builder()
                .sql(sql)
                .set_actions(Some(rule.actions().to_vec()))
                .set_description(rule.description().map(str::to_string))
                .rule_disabled(false)
                .aws_iot_sql_version("2016-03-23")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

pub async fn memory(c: &Clients, n: &Names, mb: i32) {
    c.lambda
        .update_function_configuration()
        .function_name(&n.function)
        .memory_size(mb)
        .send()
        .await
        .unwrap();
}

/// A shadow update as a device or an application sends it (merged into the document).
pub async fn shadow(c: &Clients, n: &Names, doc: serde_json::Value) {
    c.data
        .update_thing_shadow()
        .thing_name(&n.thing)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(doc.to_string()))
        .send()
        .await
        .unwrap();
}

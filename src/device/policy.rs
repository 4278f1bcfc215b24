//! What a device policy lets one device do over MQTT, read off the rendered policy document:
//! the topics it may publish to and the topic filters it may subscribe to (for a bundle), and
//! whether one action on one topic is allowed (to skip, with the reason, what would be refused).

use serde_json::Value;

/// The variables a device policy is written with, as they stand for one device.
fn substitute(resource: &str, thing: &str) -> String {
    resource
        .replace("${iot:Connection.Thing.ThingName}", thing)
        .replace("${iot:ClientId}", thing)
}

fn as_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => vec![],
    }
}

/// IAM-style wildcard match: `*` any run of characters, `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn action_matches(statement: &Value, action: &str) -> bool {
    as_list(statement.get("Action"))
        .iter()
        .any(|a| glob(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
}

/// The resources (after `arn:…:<kind>/`) an Allow statement grants `action` on, for `thing`.
fn granted(doc: &Value, action: &str, kind: &str, thing: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in statements(doc) {
        if s.get("Effect").and_then(Value::as_str) != Some("Allow") || !action_matches(s, action) {
            continue;
        }
        for r in as_list(s.get("Resource")) {
            let r = substitute(&r, thing);
            if r == "*" {
                out.push("#".to_string());
            } else if let Some((_, rest)) = r.split_once(&format!(":{kind}/")) {
                if !out.contains(&rest.to_string()) {
                    out.push(rest.to_string());
                }
            }
        }
    }
    out
}

/// The topics `thing` may publish to (`iot:Publish` on `topic/…`), as the policy writes them
/// (a `*` in one is a wildcard of the policy language, not of MQTT).
pub fn publish_topics(doc: &Value, thing: &str) -> Vec<String> {
    granted(doc, "iot:Publish", "topic", thing)
}

/// The topic filters `thing` may subscribe to (`iot:Subscribe` on `topicfilter/…`).
pub fn subscribe_filters(doc: &Value, thing: &str) -> Vec<String> {
    granted(doc, "iot:Subscribe", "topicfilter", thing)
}

/// Whether the policy allows `action` on `arn:…:<kind>/<name>` for `thing`: an Allow matches
/// and no Deny does.
pub fn allows(doc: &Value, action: &str, kind: &str, name: &str, thing: &str) -> bool {
    let target = format!(":{kind}/{name}");
    let matches = |s: &Value| {
        action_matches(s, action)
            && as_list(s.get("Resource")).iter().any(|r| {
                let r = substitute(r, thing);
                // The ARN's account and region are this deployment's: compare from the kind on.
                r == "*"
                    || r.find(&format!(":{kind}/"))
                        .is_some_and(|at| glob(&r[at..], &target))
            })
    };
    let effect = |s: &Value, e: &str| s.get("Effect").and_then(Value::as_str) == Some(e);
    let list = statements(doc);
    list.iter().any(|s| effect(s, "Allow") && matches(s))
        && !list.iter().any(|s| effect(s, "Deny") && matches(s))
}

/// What the device shadow's MQTT exchange needs that the policy does not allow (empty: all
/// of it is allowed).
pub fn shadow_gaps(doc: &Value, thing: &str) -> Vec<String> {
    let base = format!("$aws/things/{thing}/shadow/update");
    let mut gaps = Vec::new();
    if !allows(doc, "iot:Publish", "topic", &base, thing) {
        gaps.push(format!("iot:Publish on topic/{base}"));
    }
    for t in ["accepted", "rejected", "delta"] {
        let name = format!("{base}/{t}");
        if !allows(doc, "iot:Subscribe", "topicfilter", &name, thing) {
            gaps.push(format!("iot:Subscribe on topicfilter/{name}"));
        }
        if !allows(doc, "iot:Receive", "topic", &name, thing) {
            gaps.push(format!("iot:Receive on topic/{name}"));
        }
    }
    gaps
}

/// What the jobs MQTT API needs that the policy does not allow (empty: all of it is): publish
/// the requests, subscribe to and receive the answers and the next-execution notification.
pub fn jobs_gaps(doc: &Value, thing: &str) -> Vec<String> {
    let topics = super::jobs::Topics::new(thing);
    let mut gaps = Vec::new();
    // A job id stands for every job's update topic.
    for t in topics.requests("any-job") {
        if !allows(doc, "iot:Publish", "topic", &t, thing) {
            gaps.push(format!("iot:Publish on topic/{t}"));
        }
    }
    for filter in topics.subscriptions() {
        if !allows(doc, "iot:Subscribe", "topicfilter", &filter, thing) {
            gaps.push(format!("iot:Subscribe on topicfilter/{filter}"));
        }
        // What arrives on the `+` filter: one job's answer.
        let topic = filter.replace('+', "any-job");
        if !allows(doc, "iot:Receive", "topic", &topic, thing) {
            gaps.push(format!("iot:Receive on topic/{topic}"));
        }
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Value {
        rendered(crate::templates::DEVICE_POLICY_RECIPE)
    }

    fn rendered(text: &str) -> Value {
        let t = crate::templates::Template::builtin("device-policy.json", text);
        let vars = crate::settings::template_vars(
            &crate::config::Config::default(),
            "abc123",
            "us-east-1",
            "123456789012",
        );
        t.render_json(&vars).unwrap()
    }

    #[test]
    fn the_recipes_policy_gives_its_reading_topic_and_no_subscription() {
        let doc = recipe();
        assert_eq!(
            publish_topics(&doc, "t1"),
            vec!["sensor/temperature/t1".to_string()]
        );
        assert!(subscribe_filters(&doc, "t1").is_empty());
        assert!(allows(
            &doc,
            "iot:Publish",
            "topic",
            "sensor/temperature/t1",
            "t1"
        ));
        assert!(!allows(
            &doc,
            "iot:Publish",
            "topic",
            "sensor/temperature/t2",
            "t1"
        ));
        assert!(allows(&doc, "iot:Connect", "client", "t1", "t1"));
        // Get/UpdateThingShadow are the HTTP shadow API's actions, not the MQTT topics.
        assert_eq!(shadow_gaps(&doc, "t1").len(), 7);
    }

    #[test]
    fn the_default_policy_gives_the_shadow_topics_too() {
        let doc = rendered(crate::templates::DEVICE_POLICY);
        assert_eq!(
            publish_topics(&doc, "t1"),
            [
                "sensor/temperature/t1",
                "$aws/things/t1/shadow/update",
                "$aws/things/t1/shadow/get"
            ]
        );
        assert_eq!(subscribe_filters(&doc, "t1").len(), 5);
        assert!(shadow_gaps(&doc, "t1").is_empty());
        assert!(shadow_gaps(&doc, "t2").is_empty());
        assert!(!allows(
            &doc,
            "iot:Subscribe",
            "topicfilter",
            "$aws/things/t2/shadow/update/delta",
            "t1"
        ));
    }

    #[test]
    fn wildcards_and_denies() {
        let doc = serde_json::json!({
            "Statement": [
                {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
                 "Resource": "arn:aws:iot:eu-west-1:1:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"},
                {"Effect": "Allow", "Action": "iot:Subscribe",
                 "Resource": ["arn:aws:iot:eu-west-1:1:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"]},
                {"Effect": "Deny", "Action": "iot:Publish",
                 "Resource": "arn:aws:iot:eu-west-1:1:topic/$aws/things/*/shadow/delete"}
            ]
        });
        assert!(shadow_gaps(&doc, "t1").is_empty());
        assert!(!allows(
            &doc,
            "iot:Publish",
            "topic",
            "$aws/things/t1/shadow/delete",
            "t1"
        ));
        assert_eq!(
            subscribe_filters(&doc, "t1"),
            vec!["$aws/things/t1/shadow/*".to_string()]
        );
        assert_eq!(
            publish_topics(&doc, "t1"),
            vec!["$aws/things/t1/shadow/*".to_string()]
        );
    }

    #[test]
    fn the_jobs_statements_allow_the_jobs_api_for_the_thing_alone() {
        // The statements iotreg adds when jobs are configured.
        let doc = serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:Publish",
             "Resource": "arn:aws:iot:us-east-1:1:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": "arn:aws:iot:us-east-1:1:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
            {"Effect": "Allow", "Action": "iot:Receive",
             "Resource": "arn:aws:iot:us-east-1:1:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"}
        ]});
        assert_eq!(jobs_gaps(&doc, "t1"), Vec::<String>::new());
        // The default policy has none of it: every request, filter and answer is named.
        let gaps = jobs_gaps(&rendered(crate::templates::DEVICE_POLICY), "t1");
        assert_eq!(gaps.len(), 3 + 7 * 2, "{gaps:?}");
        assert!(gaps.contains(&"iot:Publish on topic/$aws/things/t1/jobs/start-next".to_string()));
        assert!(gaps.contains(
            &"iot:Subscribe on topicfilter/$aws/things/t1/jobs/+/update/accepted".to_string()
        ));
        assert!(gaps.contains(
            &"iot:Receive on topic/$aws/things/t1/jobs/any-job/update/rejected".to_string()
        ));
    }

    #[test]
    fn glob_matches_like_iam() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("a*d", "abc"));
        assert!(glob("iot:*", "iot:publish"));
    }
}

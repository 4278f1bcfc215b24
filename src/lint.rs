//! A least-privilege lint for the device policy, run before any AWS call. A device policy that
//! grants every IoT action, every resource, or lets a device connect under any client id
//! undoes the recipe's per-device isolation, so it is refused unless explicitly allowed.

const THING_VAR: &str = "${iot:Connection.Thing.ThingName}";

/// Problems found in a rendered IoT policy document; empty when it is least-privilege.
pub fn broad_policy(doc: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let statements: Vec<&serde_json::Value> = match &doc["Statement"] {
        serde_json::Value::Array(a) => a.iter().collect(),
        s @ serde_json::Value::Object(_) => vec![s],
        _ => {
            problems.push("has no Statement".into());
            return problems;
        }
    };
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    };
    for (i, s) in statements.iter().enumerate() {
        if s["Effect"] != "Allow" {
            continue;
        }
        let actions = list(&s["Action"]);
        let resources = list(&s["Resource"]);
        for a in &actions {
            if a == "*" || a.eq_ignore_ascii_case("iot:*") {
                problems.push(format!("statement {i} grants {a:?}"));
            }
        }
        for r in &resources {
            // A wildcard under the connection's own thing (its jobs topics, say) stays
            // within that device's namespace.
            let own = r.contains(THING_VAR);
            if r == "*" || (!own && (r.ends_with(":*") || r.ends_with("/*"))) {
                problems.push(format!("statement {i} applies to every resource ({r:?})"));
            }
        }
        if actions
            .iter()
            .any(|a| a.eq_ignore_ascii_case("iot:Connect"))
            && !resources.iter().all(|r| r.contains(THING_VAR))
        {
            problems.push(format!(
                "statement {i} allows iot:Connect without the {THING_VAR} policy variable, so a device could connect as any client"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_wildcard_under_the_things_own_topics_is_not_broad() {
        let doc = |r: &str| json!({"Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": r}]});
        let own =
            "arn:aws:iot:us-east-1:1:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*";
        assert!(broad_policy(&doc(own)).is_empty());
        assert_eq!(
            broad_policy(&doc("arn:aws:iot:us-east-1:1:topic/*")).len(),
            1
        );
        assert_eq!(
            broad_policy(&doc("arn:aws:iot:us-east-1:1:topic/$aws/things/*")).len(),
            1
        );
    }

    #[test]
    fn both_built_in_policies_pass() {
        let vars = crate::settings::template_vars(
            &crate::config::Config::default(),
            "abc123",
            "us-east-1",
            "123456789012",
        );
        for text in [
            crate::templates::DEVICE_POLICY,
            crate::templates::DEVICE_POLICY_RECIPE,
        ] {
            let t = crate::templates::Template::builtin("p", text);
            assert_eq!(
                broad_policy(&t.render_json(&vars).unwrap()),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn the_default_policy_scopes_every_grant_to_the_thing() {
        let t = crate::templates::Template::builtin("p", crate::templates::DEVICE_POLICY);
        let vars = crate::settings::template_vars(
            &crate::config::Config::default(),
            "abc123",
            "us-east-1",
            "123456789012",
        );
        let doc = t.render_json(&vars).unwrap();
        for s in doc["Statement"].as_array().unwrap() {
            for r in s["Resource"].as_array().unwrap() {
                assert!(r.as_str().unwrap().contains(THING_VAR), "{r}");
            }
        }
    }

    #[test]
    fn broad_grants_are_named() {
        let doc = json!({"Statement": [
            {"Effect": "Allow", "Action": "iot:*", "Resource": "arn:aws:iot:r:a:topic/x"},
            {"Effect": "Allow", "Action": ["iot:Publish"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["iot:Connect"], "Resource": ["arn:aws:iot:r:a:client/fixed"]},
            {"Effect": "Deny", "Action": "*", "Resource": "*"}
        ]});
        let p = broad_policy(&doc);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("statement 0 grants \"iot:*\""));
        assert!(p[1].contains("statement 1 applies to every resource"));
        assert!(p[2].contains("statement 2 allows iot:Connect without"));
    }
}

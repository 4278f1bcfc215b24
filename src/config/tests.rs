//! The config file's unit tests.

use super::*;

fn parse_str(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("iotreg.toml"))
}

#[test]
fn empty_config_is_the_recipe() {
    let c = parse_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.thing_type.name, "TemperatureSensor");
    assert_eq!(c.thing.attributes["location"], "ProductionFloor-A");
    assert_eq!(c.thing.attributes.len(), 5);
    assert_eq!(c.function.memory_mb, 256);
    assert_eq!(c.function.timeout_s, 60);
    assert_eq!(c.function.runtime, "python3.12");
    assert_eq!(
        c.rule.sql,
        "SELECT *, topic(3) as device, timestamp() as aws_timestamp FROM 'sensor/temperature/+'"
    );
    assert_eq!(c.rule.name, "sensor_data_rule_{{suffix}}");
}

#[test]
fn keys_override_defaults() {
    let c = parse_str(
            "suffix = \"abc123\"\n[function]\nmemory_mb = 512\n[thing.attributes]\nlocation = \"Line-3\"\n",
        )
        .unwrap();
    assert_eq!(c.function.memory_mb, 512);
    assert_eq!(c.function.timeout_s, 60);
    // A table replaces the default attributes wholesale: what you write is what you get.
    assert_eq!(c.thing.attributes.len(), 1);
    assert_eq!(c.suffix.as_deref(), Some("abc123"));
}

fn error_of(text: &str) -> String {
    parse_str(text).unwrap_err().to_string()
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let e = error_of("[function]\nmemroy_mb = 512\n");
    assert!(e.starts_with("iotreg.toml: "), "{e}");
    assert!(e.contains("memroy_mb"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn bad_values_name_file_and_field() {
    let cases = [
        ("[rule]\nname = \"sensor-rule\"\n", "rule.name"),
        ("[thing]\nname = \"{}\"\n", "thing.name"),
        (
            "[thing.attributes]\nlocation = \"Production Floor\"\n",
            "thing.attributes.location",
        ),
        ("[function]\nmemory_mb = 64\n", "function.memory_mb"),
        ("[function]\ntimeout_s = 901\n", "function.timeout_s"),
        (
            "[function.environment]\n\"1X\" = \"a\"\n",
            "function.environment.1X",
        ),
        ("[rule]\nsql = \"\"\n", "rule.sql"),
        ("[rule]\nsql = \"DELETE FROM x\"\n", "rule.sql"),
        ("suffix = \"ABC\"\n", "suffix"),
        ("[role]\nname = \"{}\"\n", "role.name"),
        (
            "[role]\nmanaged_policies = [\"nope\"]\n",
            "role.managed_policies[0]",
        ),
        (
            "[monitoring]\ntopic_name = \"alerts.fifo\"\n",
            "monitoring.topic_name",
        ),
        (
            "[monitoring]\ndashboard_name = \"IoT fleet\"\n",
            "monitoring.dashboard_name",
        ),
        (
            "[monitoring]\nalert_email = \"ops at example.com\"\n",
            "monitoring.alert_email",
        ),
        (
            "[function.environment]\nALERT_TOPIC_ARN = \"arn:x\"\n",
            "function.environment.ALERT_TOPIC_ARN",
        ),
    ];
    for (text, field) in cases {
        let text = text.replace("{}", &"x".repeat(129));
        let e = error_of(&text);
        assert!(
            e.starts_with(&format!("iotreg.toml: {field}: ")),
            "{text:?} gave {e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn monitoring_settings() {
    let c = parse_str("").unwrap();
    assert!(
        c.monitoring.enabled,
        "the diagram's monitoring is on by default"
    );
    assert_eq!(c.monitoring.topic_name, "iot-temperature-alerts-{{suffix}}");
    let c = parse_str("[monitoring]\nalert_email = \"ops+iot@example.com\"\n").unwrap();
    assert_eq!(
        c.monitoring.alert_email.as_deref(),
        Some("ops+iot@example.com")
    );
    // With monitoring off the variable is the user's own.
    let c = parse_str(
        "[monitoring]\nenabled = false\n[function.environment]\nALERT_TOPIC_ARN = \"arn:x\"\n",
    )
    .unwrap();
    assert_eq!(c.function.environment["ALERT_TOPIC_ARN"], "arn:x");
}

#[test]
fn wrong_types_and_syntax_are_one_line() {
    for text in [
        "[function]\nmemory_mb = \"big\"\n",
        "[thing\nname=1",
        "suffix = 3",
    ] {
        let e = error_of(text);
        assert!(e.starts_with("iotreg.toml: invalid TOML"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn missing_explicit_file_is_an_error() {
    let e = load(Some(Path::new("/nonexistent/iotreg.toml"))).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/iotreg.toml"));
}

#[test]
fn template_paths_are_relative_to_the_config_file() {
    let c = parse(
        "[policy]\ntemplate = \"p.json\"\n",
        Path::new("/etc/iotreg/iotreg.toml"),
    )
    .unwrap();
    assert_eq!(
        c.policy.template.as_deref(),
        Some(Path::new("/etc/iotreg/p.json"))
    );
}

#[test]
fn fleet_mode_and_bulk_bucket() {
    let c = parse_str("").unwrap();
    assert_eq!(c.fleet.mode, FleetMode::Api);
    assert_eq!(c.fleet.bulk_bucket, None);
    let c = parse_str("[fleet]\nmode = \"bulk\"\nbulk_bucket = \"my-fleet.inputs-1\"\n").unwrap();
    assert_eq!(c.fleet.mode, FleetMode::Bulk);
    assert_eq!(c.fleet.bulk_bucket.as_deref(), Some("my-fleet.inputs-1"));
    let e = error_of("[fleet]\nmode = \"batch\"\n");
    assert!(e.contains("batch") && e.contains("bulk"), "{e}");
    for (bad, why) in [
        ("My-Bucket", "contains 'M'"),
        ("ab", "3 to 63"),
        ("-bucket", "begin and end"),
        ("a..b", "adjacent dots"),
        ("192.168.1.10", "IP address"),
        ("under_score", "contains '_'"),
    ] {
        let e = error_of(&format!("[fleet]\nbulk_bucket = \"{bad}\"\n"));
        assert!(
            e.contains("fleet.bulk_bucket") && e.contains(why),
            "{bad}: {e}"
        );
    }
    let e = error_of("[fleet]\nmode = \"bulk\"\n[certificate]\nmode = \"aws-generated\"\n");
    assert!(
        e.contains("fleet.mode") && e.contains("certificate.mode"),
        "{e}"
    );
}

#[test]
fn bulk_and_claim_are_not_both_the_fleets_way() {
    let c: Config =
        toml::from_str("[fleet]\nmode = \"bulk\"\n[provisioning]\nmode = \"claim\"\n").unwrap();
    let e = c
        .validate(std::path::Path::new("iotreg.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fleet.mode") && e.contains("choose one"), "{e}");
}

//! Bad input: every case exits 2 with a message naming the file and field (or argument),
//! before any AWS call — the emulator's request log stays empty.

use crate::support::*;

struct Case {
    name: &'static str,
    config: Option<&'static str>,
    state: Option<String>,
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    /// Text the first stderr line must contain.
    expect: &'static str,
}

fn good_state(region: &str, account: &str) -> String {
    serde_json::json!({
        "schema_version": 1, "region": region, "account": account, "suffix": "abc123",
        "resources": []
    })
    .to_string()
}

fn cases() -> Vec<Case> {
    let c = |name, config, expect| Case {
        name,
        config: Some(config),
        state: None,
        files: &[],
        args: &["up"],
        expect,
    };
    let s = |name, state: String, expect| Case {
        name,
        config: None,
        state: Some(state),
        files: &[],
        args: &["up"],
        expect,
    };
    let a = |name, args, expect| Case {
        name,
        config: None,
        state: None,
        files: &[],
        args,
        expect,
    };
    let full = good_state("us-east-1", ACCOUNT);
    vec![
        c("toml syntax", "[thing\nname = 1", "iotreg.toml: invalid TOML"),
        c("unknown key", "[function]\nmemroy_mb = 512\n", "memroy_mb"),
        c("wrong type", "[function]\nmemory_mb = \"big\"\n", "iotreg.toml: invalid TOML"),
        c("memory too small", "[function]\nmemory_mb = 64\n", "iotreg.toml: function.memory_mb: 64"),
        c("timeout too large", "[function]\ntimeout_s = 901\n", "iotreg.toml: function.timeout_s: 901"),
        c(
            "analytics threshold out of range",
            "[analytics]\nenabled = true\nthreshold = 0.5\n",
            "iotreg.toml: analytics.threshold: 0.5 is out of range",
        ),
        c(
            "analytics stream of no shards",
            "[analytics]\nenabled = true\nshards = 0\n",
            "iotreg.toml: analytics.shards: 0 is out of range",
        ),
        c("rule name with hyphen", "[rule]\nname = \"sensor-rule\"\n", "iotreg.toml: rule.name: \"sensor-rule\""),
        c(
            "thing name too long",
            "[thing]\nname = \"ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt\"\n",
            "iotreg.toml: thing.name",
        ),
        c(
            "attribute value with spaces",
            "[thing.attributes]\nlocation = \"Production Floor\"\n",
            "iotreg.toml: thing.attributes.location",
        ),
        c("thing type name invalid", "[thing_type]\nname = \"Temp Sensor\"\n", "iotreg.toml: thing_type.name"),
        c("policy name invalid", "[policy]\nname = \"p/q\"\n", "iotreg.toml: policy.name"),
        c("role name too long", "[role]\nname = \"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\"\n", "iotreg.toml: role.name"),
        c("function name invalid", "[function]\nname = \"f.n\"\n", "iotreg.toml: function.name"),
        c("empty sql", "[rule]\nsql = \"\"\n", "iotreg.toml: rule.sql: must not be empty"),
        c("sql not a select", "[rule]\nsql = \"DELETE FROM 'x'\"\n", "iotreg.toml: rule.sql"),
        c("bad suffix", "suffix = \"ABC!\"\n", "iotreg.toml: suffix"),
        c("aws timeout zero", "[aws]\nattempt_timeout_s = 0\n", "iotreg.toml: aws.attempt_timeout_s"),
        c("aws attempts out of range", "[aws]\nmax_attempts = 99\n", "iotreg.toml: aws.max_attempts"),
        Case {
            name: "policy connects as any client",
            config: Some("[policy]\ntemplate = \"p.json\"\n"),
            state: None,
            files: &[(
                "p.json",
                "{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"iot:Connect\", \"Resource\": \"arn:aws:iot:{{region}}:{{account}}:client/x\"}]}",
            )],
            args: &["up"],
            expect: "p.json: the device policy is broader than least privilege",
        },
        c("missing template", "[policy]\ntemplate = \"nope.json\"\n", "nope.json: cannot read template"),
        Case {
            name: "template not json",
            config: Some("[policy]\ntemplate = \"p.json\"\n"),
            state: None,
            files: &[("p.json", "{ not json")],
            args: &["up"],
            expect: "p.json: not valid JSON",
        },
        Case {
            name: "template unknown placeholder",
            config: Some("[policy]\ntemplate = \"p.json\"\n"),
            state: None,
            files: &[("p.json", "{\"a\": \"{{acount}}\"}")],
            args: &["up"],
            expect: "p.json: unknown placeholder {{acount}}",
        },
        s("state truncated", full[..full.len() / 2].to_string(), "state.json: corrupt state file"),
        s("state not json", "hello".into(), "state.json: corrupt state file (not JSON"),
        s(
            "state newer schema",
            full.replace("\"schema_version\":1", "\"schema_version\":9"),
            "state.json: schema_version 9 is newer",
        ),
        s("state other region", good_state("eu-west-1", ACCOUNT), "state.json: region: the state belongs to region eu-west-1"),
        s(
            "state missing field",
            full.replace(",\"suffix\":\"abc123\"", "").replace("\"suffix\":\"abc123\",", ""),
            "state.json: corrupt state file (missing field `suffix`",
        ),
        a("missing config file", &["--config", "missing.toml", "up"], "missing.toml: cannot read config file"),
        a("unknown output", &["--output", "xml", "up"], "--output"),
        a("unknown subcommand", &["upp"], "upp"),
        a("plan with a missing config file", &["--config", "missing.toml", "plan", "--detailed-exitcode"], "missing.toml: cannot read config file"),
        a("up --dry-run with a missing config file", &["--config", "missing.toml", "up", "--dry-run"], "missing.toml: cannot read config file"),
        c("environment variable name invalid", "[function.environment]\n\"1X\" = \"a\"\n", "iotreg.toml: function.environment.1X"),
        c("alert email invalid", "[monitoring]\nalert_email = \"ops at example\"\n", "iotreg.toml: monitoring.alert_email"),
        c("topic name invalid", "[monitoring]\ntopic_name = \"alerts.fifo\"\n", "iotreg.toml: monitoring.topic_name"),
        c("alert topic variable set by hand", "[function.environment]\nALERT_TOPIC_ARN = \"arn:x\"\n", "iotreg.toml: function.environment.ALERT_TOPIC_ARN"),
        Case {
            name: "dashboard template without widgets",
            config: Some("[monitoring]\ndashboard_template = \"d.json\"\n"),
            state: None,
            files: &[("d.json", "{\"title\": \"{{function_name}}\"}")],
            args: &["up"],
            expect: "d.json: a dashboard body needs a \"widgets\" array",
        },
        a("bad endpoint", &["--endpoint-url", "ftp://x", "up"], "--endpoint-url"),
        a("bad region", &["--region", "US EAST", "up"], "--region"),
        a("verify timeout zero", &["verify", "--timeout", "0"], "--timeout"),
        a("verify timeout negative", &["verify", "--timeout=-5"], "--timeout"),
        a("verify timeout not a number", &["verify", "--timeout", "soon"], "--timeout"),
        a("verify junit in missing dir", &["verify", "--junit", "no/such/dir/r.xml"], "--junit: directory no/such/dir does not exist"),
        a("verify with nothing deployed", &["verify"], "nothing deployed"),
        Case {
            name: "down with corrupt state",
            config: None,
            state: Some("[]".into()),
            files: &[],
            args: &["down"],
            expect: "state.json: corrupt state file",
        },
        Case {
            name: "status with other region",
            config: None,
            state: Some(good_state("eu-west-1", ACCOUNT)),
            files: &[],
            args: &["status"],
            expect: "region",
        },
    ]
}

#[test]
fn every_bad_input_exits_2_before_any_aws_call() {
    let emu = Emulator::start();
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in &cases {
        let w = emu.workdir();
        if let Some(config) = case.config {
            std::fs::write(w.path().join("iotreg.toml"), config).unwrap();
        }
        if let Some(state) = &case.state {
            std::fs::create_dir_all(w.path().join(".iotreg")).unwrap();
            std::fs::write(w.path().join(".iotreg/state.json"), state).unwrap();
        }
        for (name, text) in case.files {
            std::fs::write(w.path().join(name), text).unwrap();
        }
        let r = w.run(case.args);
        let stderr = r.stderr();
        let first = stderr.lines().next().unwrap_or("");
        if r.code() != 2 || !first.contains(case.expect) {
            failures.push(format!(
                "{}: exit {} (want 2), first stderr line {first:?} (want it to contain {:?})",
                case.name,
                r.code(),
                case.expect
            ));
        }
        // Our own messages are one line; clap's usage errors add a usage hint after the first.
        if (case.config.is_some() || case.state.is_some()) && stderr.trim().lines().count() != 1 {
            failures.push(format!("{}: more than one line: {stderr:?}", case.name));
        }
        let requests = emu.requests();
        if !requests.is_empty() {
            failures.push(format!("{}: AWS calls were made: {requests:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn state_from_another_account_is_refused_before_any_write() {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::create_dir_all(w.path().join(".iotreg")).unwrap();
    std::fs::write(
        w.path().join(".iotreg/state.json"),
        good_state("us-east-1", "999999999999"),
    )
    .unwrap();
    for cmd in ["up", "down"] {
        let r = w.run(&[cmd]);
        assert_eq!(r.code(), 2, "{}", r.all());
        assert!(r
            .stderr()
            .contains("account: the state belongs to account 999999999999"));
        // Learning the account takes one read (sts:GetCallerIdentity); nothing is written.
        assert!(emu.writes_since(0).is_empty(), "{:?}", emu.requests());
    }
}

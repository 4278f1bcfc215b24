//! What a new user meets first: commands run with nothing deployed and no region, missing
//! credentials, an endpoint that answers HTML 500s (`--region mars-1`), and each command's
//! `--help`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::*;

/// Every line a person reads must be shorter than this.
const MAX_LINE: usize = 300;

#[derive(Clone, Copy, Debug)]
enum Env {
    /// Credentials, but no region anywhere (no AWS_REGION, no profile).
    NoRegion,
    /// A region, but no credentials anywhere: no AWS_* keys, an empty HOME, no instance
    /// metadata. The endpoint points nowhere: nothing may be sent.
    NoCredentials,
}

struct Case {
    args: &'static [&'static str],
    env: Env,
    code: i32,
    /// Text stdout or stderr must contain.
    expect: &'static str,
}

#[test]
fn first_runs_say_what_is_wrong_in_one_line_and_leave_nothing_behind() {
    use Env::*;
    let case = |args, env, code, expect| Case {
        args,
        env,
        code,
        expect,
    };
    let cases = [
        // With no state there is nothing to ask AWS: no region needed.
        case(&["status"], NoRegion, 0, "nothing deployed (.iotreg/state.json does not exist)"),
        case(&["status", "--output", "json"], NoRegion, 0, "\"deployed\": false"),
        case(&["down"], NoRegion, 0, "iotreg down: nothing to do (.iotreg/state.json does not exist)"),
        case(&["down", "--output", "json"], NoRegion, 0, "\"state_removed\": false"),
        case(&["verify"], NoRegion, 2, "nothing deployed: .iotreg/state.json does not exist; run `iotreg up` first"),
        case(&["status"], NoCredentials, 0, "nothing deployed"),
        case(&["down"], NoCredentials, 0, "nothing to do"),
        // up and plan need AWS: a region, and credentials (the user's input: exit 2).
        case(&["up"], NoRegion, 2, "no AWS region: pass --region"),
        case(&["plan"], NoRegion, 2, "no AWS region: pass --region"),
        case(&["up"], NoCredentials, 2, "iotreg: error: no AWS credentials found: looked in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile \"default\" in ~/.aws/credentials and ~/.aws/config"),
        case(&["plan"], NoCredentials, 2, "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"),
        case(&["up", "--dry-run"], NoCredentials, 2, "no AWS credentials found"),
        case(&["--profile", "ci", "plan"], NoCredentials, 2, "profile \"ci\" in ~/.aws/credentials"),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let w = Workdir::new("http://127.0.0.1:9");
        let mut cmd = w.command(c.args);
        match c.env {
            NoRegion => cmd.env_remove("AWS_REGION"),
            NoCredentials => cmd
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY"),
        };
        let r = Run(cmd.output().unwrap());
        let name = format!("{:?} {:?}", c.env, c.args);
        if r.code() != c.code {
            failures.push(format!(
                "{name}: exit {} (want {})\n{}",
                r.code(),
                c.code,
                r.all()
            ));
        }
        if !r.stdout().contains(c.expect) && !r.stderr().contains(c.expect) {
            failures.push(format!("{name}: no {:?} in\n{}", c.expect, r.all()));
        }
        if r.stderr().lines().count() > 1 {
            failures.push(format!(
                "{name}: more than one line on stderr:\n{}",
                r.stderr()
            ));
        }
        if let Some(long) = r.all().lines().find(|l| l.chars().count() >= MAX_LINE) {
            failures.push(format!("{name}: a line of {} chars: {long}", long.len()));
        }
        if w.path().join(".iotreg").exists() {
            failures.push(format!("{name}: left .iotreg/ behind"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `iotreg --help` and each subcommand's: global options under their own heading, and only
/// the options that apply (`--fleet` and `--concurrency` for up and plan only).
#[test]
fn help_groups_global_options_and_shows_only_what_applies() {
    for cmd in ["", "up", "plan", "down", "status", "verify"] {
        let mut args: Vec<&str> = vec![];
        if !cmd.is_empty() {
            args.push(cmd);
        }
        args.push("--help");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_iotreg"))
            .args(&args)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("\nGlobal options:\n"), "{text}");
        let fleet = matches!(cmd, "up" | "plan");
        assert_eq!(text.contains("--fleet"), fleet, "{cmd}: {text}");
        assert_eq!(text.contains("--concurrency"), fleet, "{cmd}: {text}");
        let name = if cmd.is_empty() {
            "help".to_string()
        } else {
            format!("help_{cmd}")
        };
        insta::assert_snapshot!(name, text);
    }
}

/// The fleet options go after the subcommand now. The older form, before it, still works for
/// the commands that take them; after a command that takes none they are a usage error.
#[test]
fn fleet_options_belong_to_up_and_plan() {
    let w = Workdir::new("http://127.0.0.1:9");
    for args in [
        &["up", "--fleet", "missing.csv"][..],
        &["--fleet", "missing.csv", "up"],
        &["plan", "--fleet", "missing.csv", "--concurrency", "4"],
        &["--concurrency", "4", "--fleet", "missing.csv", "plan"],
    ] {
        let r = w.run(args);
        assert_eq!(r.code(), 2, "{args:?}: {}", r.all());
        assert!(r.stderr().contains("missing.csv: 1 problem"), "{}", r.all());
    }
    for args in [
        &["verify", "--fleet", "x.csv"][..],
        &["down", "--concurrency", "4"],
    ] {
        let r = w.run(args);
        assert_eq!(r.code(), 2, "{args:?}: {}", r.all());
        assert!(r.stderr().contains("unexpected argument"), "{}", r.all());
    }
}

/// A local endpoint that answers every request with an HTML 500, as a proxy or a wrong
/// endpoint does; optionally STS's GetCallerIdentity properly, so that a run gets past the
/// account check to the plan's reads. Stopped when dropped.
struct Html500 {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const HTML: &str = "<html><body><h1>500 Internal Server Error</h1></body></html>";

impl Html500 {
    fn start(answer_sts: bool) -> Html500 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    let _ = answer(s, answer_sts);
                }
            }
        });
        Html500 {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Html500 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(stream: TcpStream, answer_sts: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let sts = answer_sts && String::from_utf8_lossy(&body).contains("Action=GetCallerIdentity");
    let (status, content_type, text) = if sts {
        (
            "200 OK",
            "text/xml",
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:user/test</Arn><UserId>AIDTEST</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
            ),
        )
    } else {
        ("500 Internal Server Error", "text/html", HTML.to_string())
    };
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    s.flush()
}

/// A state as a real `up` leaves it (from the bundled local AWS), moved to `region`.
fn recorded_state(region: &str) -> String {
    let emu = Emulator::start();
    let w = emu.workdir();
    std::fs::write(w.path().join("iotreg.toml"), "suffix = \"abc123\"\n").unwrap();
    w.ok(&["up"]);
    let mut state = w.state().unwrap();
    state["region"] = region.into();
    serde_json::to_string_pretty(&state).unwrap()
}

fn write_state(dir: &Path, state: &str) {
    std::fs::create_dir_all(dir.join(".iotreg")).unwrap();
    std::fs::write(dir.join(".iotreg/state.json"), state).unwrap();
}

/// `iotreg --region mars-1 up` against an endpoint that answers HTML 500s: every failure one
/// short line, at most one per failed resource, exit 1. Then the same with a deployment
/// recorded, and with missing credentials (exit 2, nothing changed).
#[test]
fn an_endpoint_answering_html_500s_gives_one_short_line_per_failed_resource() {
    let on_record = recorded_state("mars-1");
    let workdir = |server: &Html500, state: Option<&str>| {
        let w = Workdir::new(&server.url);
        // One attempt per call: the SDK retries 5xx answers otherwise.
        std::fs::write(w.path().join("iotreg.toml"), "[aws]\nmax_attempts = 1\n").unwrap();
        if let Some(s) = state {
            write_state(w.path(), s);
        }
        w
    };
    let mars = |w: &Workdir, server: &Html500, extra: &[&str]| {
        let mut args = vec!["--region", "mars-1", "--endpoint-url", &server.url];
        args.extend_from_slice(extra);
        args.push("up");
        let r = w.run(&args);
        assert_eq!(r.code(), 1, "{}", r.all());
        r
    };
    let short = |r: &Run| {
        for line in r.all().lines() {
            assert!(
                line.chars().count() < MAX_LINE,
                "{} chars: {line}",
                line.len()
            );
        }
    };
    let excerpt = "(HTTP 500 text/html: \"500 Internal Server Error\")";

    // Every call fails, so the first one (the account) is the only failed read.
    let all_500 = Html500::start(false);
    for state in [None, Some(on_record.as_str())] {
        let w = workdir(&all_500, state);
        let r = mars(&w, &all_500, &[]);
        short(&r);
        assert_eq!(
            r.stderr().trim_end(),
            format!("iotreg: error: credentials \"caller identity\": sts:GetCallerIdentity failed {excerpt}"),
            "{}",
            r.all()
        );
        assert_eq!(r.stdout(), "");
        if state.is_none() {
            assert!(!w.path().join(".iotreg").exists(), "nothing written");
        }
    }
    drop(all_500);

    // Past the account check, every read of the plan fails: a count and the first few.
    let sts_ok = Html500::start(true);
    let w = workdir(&sts_ok, Some(&on_record));
    let r = mars(&w, &sts_ok, &[]);
    short(&r);
    let stderr = r.stderr();
    let header = stderr
        .lines()
        .find(|l| l.starts_with("iotreg: error: cannot plan: "))
        .unwrap_or_else(|| panic!("{}", r.all()));
    let failed: usize = header
        .trim_start_matches("iotreg: error: cannot plan: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{header}"));
    assert!(failed > 10, "{}", r.all());
    let listed = stderr.lines().filter(|l| l.ends_with(excerpt)).count();
    assert_eq!(listed, 3, "{}", r.all());
    assert!(
        stderr.contains(&format!("  … and {} more (-v for all)", failed - 3)),
        "{}",
        r.all()
    );
    assert!(stderr.lines().count() <= failed, "{}", r.all());

    // -v lists every one, then the SDK's whole detail for each on a line of its own.
    let v = mars(&w, &sts_ok, &["-v"]);
    let listed = v
        .stderr()
        .lines()
        .filter(|l| l.starts_with("  ") && l.ends_with(excerpt))
        .count();
    assert_eq!(listed, failed, "{}", v.all());
    let details = v
        .stderr()
        .lines()
        .filter(|l| l.starts_with("    detail: "))
        .count();
    assert_eq!(details, failed, "{}", v.all());

    // Missing credentials with the deployment recorded: the user's input, nothing changed.
    let before = std::fs::read_to_string(w.path().join(".iotreg/state.json")).unwrap();
    for cmd in ["status", "down", "verify", "up"] {
        let r = Run(w
            .command(&["--region", "mars-1", cmd])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap());
        assert_eq!(r.code(), 2, "{cmd}: {}", r.all());
        assert!(
            r.stderr()
                .starts_with("iotreg: error: no AWS credentials found"),
            "{}",
            r.all()
        );
        assert_eq!(r.stderr().lines().count(), 1, "{}", r.all());
        let now = std::fs::read_to_string(w.path().join(".iotreg/state.json")).unwrap();
        assert_eq!(now, before, "{cmd}: the state is untouched");
    }
}

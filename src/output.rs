//! What the user sees. Progress and logs go to stderr (a live line per step on a terminal,
//! plain lines otherwise, colour only on a terminal without NO_COLOR); data goes to stdout, as
//! text or as one JSON document.

use std::collections::HashMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::engine::{Events, StepReport};

pub struct Progress {
    verbosity: i8,
    live: Option<Live>,
    color: bool,
    lock: Mutex<()>,
}

struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Progress {
    pub fn new(verbosity: i8) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Progress {
            verbosity,
            live: (tty && verbosity >= 0).then(|| Live {
                multi: indicatif::MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
            }),
            color,
            lock: Mutex::new(()),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A line on stderr that does not tear a live display.
    pub fn line(&self, text: &str) {
        if self.verbosity < 0 {
            return;
        }
        match &self.live {
            Some(live) => {
                let _ = live.multi.println(text);
            }
            None => {
                let _g = self.lock.lock();
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    pub fn warn(&self, text: &str) {
        let msg = format!("{} {text}", self.paint("33", "warning:"));
        match &self.live {
            Some(live) => {
                let _ = live.multi.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    pub fn debug(&self, text: &str) {
        if self.verbosity >= 1 {
            self.line(text);
        }
    }
}

impl Events for Progress {
    fn started(&self, key: &str, kind: &str, name: &str) {
        match &self.live {
            Some(live) => {
                let bar = live.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg}")
                        .expect("static template"),
                );
                bar.enable_steady_tick(Duration::from_millis(100));
                bar.set_message(format!("{kind} {name}"));
                live.bars.lock().expect("bars").insert(key.to_string(), bar);
            }
            None => self.debug(&format!("  … {kind} {name}")),
        }
    }

    fn progress(&self, key: &str, message: &str) {
        match &self.live {
            Some(live) => {
                if let Some(bar) = live.bars.lock().expect("bars").get(key) {
                    let base = bar.message();
                    let base = base.split(" — ").next().unwrap_or_default().to_string();
                    bar.set_message(format!("{base} — {message}"));
                }
            }
            None => self.line(&format!("  … {key}: {message}")),
        }
    }

    fn finished(&self, r: &StepReport) {
        if let Some(live) = &self.live {
            if let Some(bar) = live.bars.lock().expect("bars").remove(&r.key) {
                bar.finish_and_clear();
                live.multi.remove(&bar);
            }
        }
        let line = match &r.result {
            Ok(o) => {
                let detail = o.detail().map(|d| format!(": {d}")).unwrap_or_default();
                format!(
                    "  {} {:<9} {} {}{detail} ({})",
                    self.paint("32", "✔"),
                    o.label(),
                    r.kind,
                    r.name,
                    fmt_duration(r.elapsed)
                )
            }
            Err(e) => format!("  {} {} {}: {e}", self.paint("31", "✗"), r.kind, r.name),
        };
        if r.result.is_err() {
            // Errors are shown even with -q.
            match &self.live {
                Some(live) => {
                    let _ = live.multi.println(line);
                }
                None => eprintln!("{line}"),
            }
        } else {
            self.line(&line);
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One resource in a summary.
#[derive(Debug, Serialize)]
pub struct ResourceLine {
    pub key: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// created / adopted / updated / unchanged / deleted / absent / retained / pending / failed,
    /// or for status: present / missing / unknown.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub fn print_json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Prints a command's summary: its `Display` as text, or its `Serialize` as one JSON document.
pub fn print<T: fmt::Display + Serialize>(format: OutputFormat, value: &T) {
    match format {
        OutputFormat::Json => print_json(value),
        OutputFormat::Text => print_text(value),
    }
}

/// Text on stdout; a closed pipe (`iotreg status | head -1`) is not an error worth a panic.
pub fn print_text(value: &impl fmt::Display) {
    let _ = write!(std::io::stdout().lock(), "{value}");
}

/// Resources as aligned columns: outcome, kind, name, ARN (when not the name), detail.
pub struct Table<'a>(pub &'a [ResourceLine]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = self.0;
        let kind_w = lines
            .iter()
            .map(|l| l.kind.chars().count())
            .max()
            .unwrap_or(0);
        let name_w = lines
            .iter()
            .map(|l| l.name.chars().count())
            .max()
            .unwrap_or(0);
        for l in lines {
            let arn = l.arn.as_deref().filter(|a| *a != l.name).unwrap_or("");
            let detail = l
                .detail
                .as_deref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default();
            let line = format!(
                "  {:<10} {:<kind_w$}  {:<name_w$}  {arn}{detail}",
                l.outcome, l.kind, l.name
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Whether stdout gets colour: a terminal, and NO_COLOR unset or empty.
pub fn stdout_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Serializes a duration as whole milliseconds (`elapsed_ms`).
pub fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

pub struct Timer(Instant);

impl Timer {
    pub fn start() -> Timer {
        Timer(Instant::now())
    }
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Verification results, one line each: mark, check name, reason.
pub struct Checks<'a> {
    pub checks: &'a [crate::verify::Timed],
    pub color: bool,
}

impl fmt::Display for Checks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::verify::CheckStatus;
        let paint = |code: &str, t: &str| {
            if self.color {
                format!("\x1b[{code}m{t}\x1b[0m")
            } else {
                t.to_string()
            }
        };
        let width = self
            .checks
            .iter()
            .map(|c| c.check.name.len())
            .max()
            .unwrap_or(0);
        for t in self.checks {
            let c = &t.check;
            let mark = match c.status {
                CheckStatus::Pass => paint("32", "✔"),
                CheckStatus::Fail => paint("31", "✗"),
                CheckStatus::Skip => paint("33", "-"),
            };
            writeln!(f, "  {mark} {:<width$}  {}", c.name, c.reason)?;
        }
        Ok(())
    }
}

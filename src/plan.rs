//! The plan: what `up` would do to each resource, field by field, and where each difference
//! came from. Pure data and rendering; the engine fills it in from the resources (which alone
//! know AWS), so everything here is testable without a cloud.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A resource's comparable settings, flattened: `attributes.location` → `"Line-3"`. Resources
/// produce the same keys for what the config wants and for what is live.
pub type Fields = BTreeMap<String, Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// AWS cannot change it in place: a new one replaces the old one.
    Replace,
    Delete,
    /// Exists and is ours (an interrupted create, or a shared or sub-resource found live):
    /// `up` records it, and applies any listed change.
    Adopt,
    NoChange,
    /// Exists under the wanted name but this state does not own it: `up` would refuse.
    Conflict,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update | Action::Adopt => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoChange => "=",
            Action::Conflict => "!",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Adopt => "adopt",
            Action::NoChange => "no change",
            Action::Conflict => "conflict",
        }
    }

    /// Whether `up` would write anything for it.
    pub fn is_change(self) -> bool {
        !matches!(self, Action::NoChange)
    }
}

/// Why a field differs, judged against the value `up` last applied (kept in the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The config asks for something new; AWS still has what was applied.
    Config,
    /// The config is as applied; AWS was changed outside iotreg.
    Drift,
    /// The config changed, and AWS was also changed outside iotreg.
    ConfigAndDrift,
    /// No record of what was applied (a state written before iotreg kept it, or an adoption).
    Unknown,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Config => "config change",
            Origin::Drift => "drift: changed outside iotreg",
            Origin::ConfigAndDrift => "config change; also changed outside iotreg",
            Origin::Unknown => "origin unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    /// Live value; None when the field is absent live.
    pub from: Option<Value>,
    /// Wanted value; None when the config no longer has the field (it is removed).
    pub to: Option<Value>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub key: String,
    pub kind: String,
    pub name: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Why, when the action needs explaining (a replace, a delete, a conflict, a vanished
    /// resource).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// False when `up` cannot carry the action out by itself (the note says what to do).
    #[serde(skip_serializing_if = "is_true")]
    pub applicable: bool,
    /// A fleet's devices that differ, each with its planned steps (all of them; the text
    /// shows the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DevicePlan>,
}

/// One fleet device's planned steps (only those that change something).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    pub thing: String,
    pub steps: Vec<Planned>,
}

/// Devices listed in a fleet's text plan before "and N more".
pub const DEVICE_LINES: usize = 20;

fn is_true(b: &bool) -> bool {
    *b
}

impl Planned {
    pub fn new(key: &str, kind: &str, name: &str, action: Action) -> Planned {
        Planned {
            key: key.into(),
            kind: kind.into(),
            name: name.into(),
            action,
            changes: Vec::new(),
            note: None,
            applicable: true,
            devices: Vec::new(),
        }
    }
    pub fn with_note(mut self, note: impl Into<String>) -> Planned {
        self.note = Some(note.into());
        self
    }
}

/// The field-level differences between what is wanted and what is live, each attributed by
/// comparing with what was last applied.
pub fn compare(want: &Fields, live: &Fields, applied: Option<&Fields>) -> Vec<Change> {
    let mut keys: Vec<&String> = want.keys().chain(live.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| want.get(*k) != live.get(*k))
        .map(|k| {
            let to = want.get(k);
            let from = live.get(k);
            let origin = match applied {
                None => Origin::Unknown,
                Some(a) => {
                    let was = a.get(k);
                    match (was != to, was != from) {
                        (true, true) => Origin::ConfigAndDrift,
                        (true, false) => Origin::Config,
                        _ => Origin::Drift,
                    }
                }
            };
            Change {
                field: k.clone(),
                from: from.cloned(),
                to: to.cloned(),
                origin,
            }
        })
        .collect()
}

/// Counts per action, for the summary line.
pub fn counts(plan: &[Planned]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for p in plan {
        *m.entry(p.action.label()).or_insert(0) += 1;
    }
    m
}

pub fn has_changes(plan: &[Planned]) -> bool {
    plan.iter().any(|p| p.action.is_change())
}

/// One line of summary: `2 to create, 1 to update, 8 unchanged`.
pub fn summary(plan: &[Planned]) -> String {
    let n = |a: Action| plan.iter().filter(|p| p.action == a).count();
    let mut parts = Vec::new();
    for (a, what) in [
        (Action::Create, "to create"),
        (Action::Update, "to update"),
        (Action::Replace, "to replace"),
        (Action::Delete, "to delete"),
        (Action::Adopt, "to adopt"),
        (Action::Conflict, "in conflict"),
    ] {
        if n(a) > 0 {
            parts.push(format!("{} {what}", n(a)));
        }
    }
    parts.push(format!("{} unchanged", n(Action::NoChange)));
    parts.join(", ")
}

/// Field changes on one line, for an outcome or a failed check: `memory_mb: 128 → 256`; a
/// JSON document changed is named without its text (the plan shows its line diff).
pub fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| {
            if is_document(c) {
                format!("{} changed", c.field)
            } else {
                format!(
                    "{}: {} → {}",
                    c.field,
                    show(c.from.as_ref(), "(none)"),
                    show(c.to.as_ref(), "(removed)")
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_document(c: &Change) -> bool {
    [&c.from, &c.to]
        .iter()
        .all(|v| matches!(v, Some(Value::Object(_) | Value::Array(_))))
}

/// Longest value shown in text before it is shortened (JSON output always has it whole).
const SHOWN: usize = 160;

fn show(v: Option<&Value>, absent: &str) -> String {
    let Some(v) = v else {
        return absent.into();
    };
    let s = v.to_string();
    if s.chars().count() <= SHOWN {
        s
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{head}… ({} chars)", s.chars().count())
    }
}

/// The plan as text, one resource a line in `+ ~ - =` style with its field changes beneath.
pub fn render(plan: &[Planned]) -> String {
    let kind_w = plan.iter().map(|p| p.kind.len()).max().unwrap_or(0);
    let mut out = String::new();
    for p in plan {
        let head = format!("{:<3} {:<kind_w$}  {}", p.action.symbol(), p.kind, p.name);
        let tag = match p.action {
            Action::NoChange => String::new(),
            a => format!("  ({})", a.label()),
        };
        out.push_str(head.trim_end());
        out.push_str(&tag);
        out.push('\n');
        for c in &p.changes {
            if is_document(c) {
                // A JSON document (a policy): its changed lines, as a diff of the pretty form.
                out.push_str(&format!("      {}:   [{}]\n", c.field, c.origin.label()));
                for line in line_diff(&pretty(c.from.as_ref()), &pretty(c.to.as_ref())) {
                    out.push_str(&format!("        {line}\n"));
                }
            } else {
                out.push_str(&format!(
                    "      {}: {} → {}   [{}]\n",
                    c.field,
                    show(c.from.as_ref(), "(none)"),
                    show(c.to.as_ref(), "(removed)"),
                    c.origin.label()
                ));
            }
        }
        if let Some(note) = &p.note {
            out.push_str(&format!("      {note}\n"));
        }
        render_devices(&p.devices, &mut out);
    }
    out
}

/// A fleet's differing devices: the first [`DEVICE_LINES`], each step on a line.
fn render_devices(devices: &[DevicePlan], out: &mut String) {
    for dev in devices.iter().take(DEVICE_LINES) {
        out.push_str(&format!("      {}:\n", dev.thing));
        for step in &dev.steps {
            let what = if step.changes.is_empty() {
                step.action.label().to_string()
            } else {
                describe(&step.changes)
            };
            let why = step
                .changes
                .first()
                .map(|c| c.origin.label().to_string())
                .or_else(|| step.note.clone())
                .unwrap_or_default();
            let why = if why.is_empty() {
                why
            } else {
                format!("   [{why}]")
            };
            out.push_str(&format!(
                "        {} {}: {what}{why}\n",
                step.action.symbol(),
                step.kind
            ));
        }
    }
    if devices.len() > DEVICE_LINES {
        out.push_str(&format!(
            "      … and {} more devices (`--output json` lists every one)\n",
            devices.len() - DEVICE_LINES
        ));
    }
}

fn pretty(v: Option<&Value>) -> Vec<String> {
    let text = v
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        .unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

/// The lines that differ between two texts, `- ` removed and `+ ` added, in order (a longest
/// common subsequence; documents here are a few dozen lines).
fn line_diff(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, Value)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn compare_attributes_each_difference() {
        let applied = fields(&[("a", json!(1)), ("b", json!(2)), ("c", json!(3))]);
        // a: config changed, AWS as applied. b: config as applied, AWS changed.
        // c: both changed. d: new in config. e: live only (removed from config).
        let want = fields(&[
            ("a", json!(10)),
            ("b", json!(2)),
            ("c", json!(30)),
            ("d", json!(4)),
        ]);
        let live = fields(&[
            ("a", json!(1)),
            ("b", json!(20)),
            ("c", json!(31)),
            ("e", json!(5)),
        ]);
        let changes = compare(&want, &live, Some(&applied));
        let got: Vec<(&str, Origin)> = changes
            .iter()
            .map(|c| (c.field.as_str(), c.origin))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Origin::Config),
                ("b", Origin::Drift),
                ("c", Origin::ConfigAndDrift),
                ("d", Origin::Config),
                ("e", Origin::Drift),
            ]
        );
        assert_eq!(changes[4].to, None);
        assert!(compare(&want, &want, Some(&applied)).is_empty());
        assert!(compare(&want, &live, None)
            .iter()
            .all(|c| c.origin == Origin::Unknown));
    }

    #[test]
    fn line_diff_keeps_order_and_shows_only_changes() {
        let a: Vec<String> = ["{", "  \"a\": 1,", "  \"b\": 2", "}"]
            .map(String::from)
            .to_vec();
        let b: Vec<String> = ["{", "  \"a\": 1,", "  \"b\": 3", "}"]
            .map(String::from)
            .to_vec();
        assert_eq!(line_diff(&a, &b), ["-   \"b\": 2", "+   \"b\": 3"]);
        assert!(line_diff(&a, &a).is_empty());
        assert_eq!(line_diff(&[], &b[..1]), ["+ {"]);
    }

    #[test]
    fn long_values_are_shortened_in_text_only() {
        let long = Value::String("x".repeat(500));
        assert!(show(Some(&long), "").ends_with("… (502 chars)"));
        assert_eq!(show(None, "(none)"), "(none)");
    }
}

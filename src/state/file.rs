//! The state file's text: written with one fleet device per line, read back a line at a time.
//!
//! Schema 4 is schema 3's JSON with each device's entry replaced by its packed row
//! ([`super::devices`]), written compact on a line of its own:
//!
//! ```text
//! {
//!   "schema_version": 4,
//!   …the rest as before, pretty…
//!   "devices": {
//!     "sensor-000001": [["arn:aws:iot:us-east-1:123456789012:", …], [["certificate", …]], {…}],
//!     "sensor-000002": […]
//!   }
//! }
//! ```
//!
//! It is still one JSON document (`jq` reads it). iotreg reads its own layout a line at a
//! time, so a load holds the rows and one line, never the whole file; a file laid out any
//! other way (reformatted, edited by hand) and the older schemas are read whole instead.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::devices::{Devices, Row, UnpackedDevices};
use super::{Record, State, StateError, OLDEST_READABLE, SCHEMA_VERSION};

/// The line that opens the devices, as iotreg writes it.
const DEVICES_OPEN: &str = "  \"devices\": {";
const DEVICE_INDENT: &str = "    ";

type Applied = std::collections::BTreeMap<String, super::super::plan::Fields>;

/// Everything but the devices, in the order the file has it.
#[derive(Serialize)]
struct HeaderOut<'a> {
    schema_version: u32,
    region: &'a str,
    account: &'a str,
    suffix: &'a str,
    serial: u64,
    resources: &'a [Record],
    #[serde(skip_serializing_if = "Applied::is_empty")]
    applied: &'a Applied,
}

/// A stored state: the header, and the devices as `D` reads them (a header read alone has
/// none).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored<D> {
    #[allow(dead_code)]
    schema_version: u64,
    region: String,
    account: String,
    suffix: String,
    #[serde(default)]
    serial: u64,
    resources: Vec<Record>,
    #[serde(default)]
    applied: Applied,
    #[serde(default = "Option::default")]
    devices: Option<D>,
}

/// Just enough to tell what a file is.
#[derive(Deserialize)]
struct Peek {
    schema_version: Option<serde_json::Value>,
    moved_to: Option<serde_json::Value>,
}

/// Writes the state as stored.
pub fn write(state: &State, w: &mut impl Write) -> std::io::Result<()> {
    let header = HeaderOut {
        schema_version: SCHEMA_VERSION,
        region: &state.region,
        account: &state.account,
        suffix: &state.suffix,
        serial: state.serial,
        resources: &state.resources,
        applied: &state.applied,
    };
    let mut head = serde_json::to_vec_pretty(&header).map_err(std::io::Error::other)?;
    if state.devices.is_empty() {
        head.push(b'\n');
        return w.write_all(&head);
    }
    // Opened again to add the devices: drop the closing "\n}".
    head.truncate(head.len() - 2);
    w.write_all(&head)?;
    w.write_all(b",\n")?;
    w.write_all(DEVICES_OPEN.as_bytes())?;
    w.write_all(b"\n")?;
    let n = state.devices.len();
    for (i, (name, row)) in state.devices.rows().enumerate() {
        w.write_all(DEVICE_INDENT.as_bytes())?;
        serde_json::to_writer(&mut *w, name).map_err(std::io::Error::other)?;
        w.write_all(b": ")?;
        w.write_all(row.as_str().as_bytes())?;
        w.write_all(if i + 1 < n { b",\n" } else { b"\n" })?;
    }
    w.write_all(b"  }\n}\n")
}

/// What reading a file a line at a time came to.
pub enum Read {
    State(State),
    /// Not iotreg's own layout: read the whole text instead (`text`, when already read).
    Whole(Option<String>),
}

/// Reads a state a line at a time. Only the lines before the devices and one device's line
/// are held at once.
pub fn read_lines(mut r: impl BufRead, path: &Path) -> Result<Read, StateError> {
    let io = |source| StateError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut head = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(io)? == 0 {
            // No devices line: the whole text is read already.
            return Ok(Read::Whole(Some(head)));
        }
        if line.trim_end_matches(['\n', '\r']) == DEVICES_OPEN {
            break;
        }
        head.push_str(&line);
    }
    // The header alone: the text before the devices without its trailing comma, closed.
    let trimmed = head.trim_end();
    let Some(open) = trimmed.strip_suffix(',') else {
        return Ok(Read::Whole(None));
    };
    let header_text = format!("{open}\n}}");
    let Ok(p) = serde_json::from_str::<Peek>(&header_text) else {
        return Ok(Read::Whole(None));
    };
    if version(p, path)? < 4 {
        return Ok(Read::Whole(None));
    }
    let header: Stored<Devices> =
        serde_json::from_str(&header_text).map_err(|e| corrupt(path, e))?;
    let mut state = from_stored(header, |d| d.unwrap_or_default(), path)?;
    let mut closed = false;
    let mut number = head.lines().count() + 1;
    loop {
        line.clear();
        number += 1;
        if r.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if closed {
            if l.trim().is_empty() {
                continue;
            }
            return Ok(Read::Whole(None));
        }
        if l == "  }" {
            // The devices' end, then the document's.
            line.clear();
            r.read_line(&mut line).map_err(io)?;
            if line.trim() != "}" {
                return Ok(Read::Whole(None));
            }
            closed = true;
            continue;
        }
        let Some((name, row)) = device_line(l) else {
            return Ok(Read::Whole(None));
        };
        let row = match Row::parse(row) {
            Ok(row) => row,
            // JSON, but not a row.
            Err(e) if e.is_data() => {
                return Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("line {number}: device {name}: {e}"),
                })
            }
            // Not JSON on this line: a row spread over lines, or a file cut short.
            Err(_) => return Ok(Read::Whole(None)),
        };
        state.devices.insert_row(name, row);
    }
    if !closed {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: "cut short in its devices".into(),
        });
    }
    Ok(Read::State(state))
}

/// `    "name": row,` split into the name and the row's text; None when the line is not one.
fn device_line(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_prefix(DEVICE_INDENT)?;
    let mut names = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let name = names.next()?.ok()?;
    let rest = rest[names.byte_offset()..].strip_prefix(": ")?;
    let row = rest.strip_suffix(',').unwrap_or(rest);
    Some((name, row))
}

/// Reads a whole state text, of any schema and layout.
pub fn read_whole(text: &str, path: &Path) -> Result<State, StateError> {
    let p: Peek = serde_json::from_str(text).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: format!("not JSON: {e}"),
    })?;
    if version(p, path)? >= 4 {
        let s: Stored<Devices> = serde_json::from_str(text).map_err(|e| corrupt(path, e))?;
        from_stored(s, |d| d.unwrap_or_default(), path)
    } else {
        let s: Stored<UnpackedDevices> =
            serde_json::from_str(text).map_err(|e| corrupt(path, e))?;
        from_stored(s, |d| d.map(|d| d.0).unwrap_or_default(), path)
    }
}

/// The schema version of a file; an error for one that is not a state iotreg can read (or
/// one that has moved).
fn version(p: Peek, path: &Path) -> Result<u64, StateError> {
    if let Some(to) = p.moved_to.as_ref().and_then(|v| v.as_str()) {
        return Err(StateError::Moved {
            path: path.to_path_buf(),
            to: to.to_string(),
        });
    }
    let version = p
        .schema_version
        .as_ref()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| StateError::Corrupt {
            path: path.to_path_buf(),
            message: "missing field `schema_version`".into(),
        })?;
    if version > u64::from(SCHEMA_VERSION) {
        return Err(StateError::NewerSchema {
            path: path.to_path_buf(),
            found: version as u32,
        });
    }
    if version < OLDEST_READABLE {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!("unsupported schema_version {version}"),
        });
    }
    Ok(version)
}

fn from_stored<D>(
    s: Stored<D>,
    devices: impl FnOnce(Option<D>) -> Devices,
    path: &Path,
) -> Result<State, StateError> {
    if crate::config::validate_suffix(&s.suffix).is_err() {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!("invalid suffix {:?}", s.suffix),
        });
    }
    Ok(State {
        schema_version: SCHEMA_VERSION,
        region: s.region,
        account: s.account,
        suffix: s.suffix,
        serial: s.serial,
        resources: s.resources,
        applied: s.applied,
        devices: devices(s.devices),
    })
}

fn corrupt(path: &Path, e: serde_json::Error) -> StateError {
    StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{journal_path, load, save, DeviceState, Journal, Phase};
    use super::*;

    /// A state written by iotreg before schema 4 (`up --fleet` with two devices on the
    /// local AWS).
    const SCHEMA_3: &str = include_str!("testdata/schema3.json");

    fn with_devices(n: usize) -> State {
        let mut s = State::new("us-east-1", "123456789012", "abc123");
        s.put(Record::new(
            "policy",
            "IoT policy",
            Phase::Created,
            "p-abc123",
        ));
        for i in 0..n {
            let name = super::super::bench::device_name(i);
            s.devices.insert(name, super::super::bench::device(i));
        }
        s
    }

    #[test]
    fn a_schema_3_state_reads_and_is_written_as_schema_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, SCHEMA_3).unwrap();
        let old: serde_json::Value = serde_json::from_str(SCHEMA_3).unwrap();
        assert_eq!(old["schema_version"], 3);
        let state = load(&path).unwrap().unwrap();
        assert_eq!(state.serial, old["serial"].as_u64().unwrap());
        assert_eq!(
            state.resources.len(),
            old["resources"].as_array().unwrap().len()
        );
        assert_eq!(state.devices.len(), 2);
        for (name, entry) in old["devices"].as_object().unwrap() {
            let want: DeviceState = serde_json::from_value(entry.clone()).unwrap();
            assert_eq!(state.devices.get(name), Some(want), "{name}");
        }
        save(&path, &state).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"schema_version\": 4"), "{text}");
        assert_eq!(load(&path).unwrap().unwrap(), state);
        // Read whole (as `state push` of a copy might be) it is the same state.
        assert_eq!(read_whole(&text, &path).unwrap(), state);
    }

    #[test]
    fn devices_are_written_a_line_each_and_the_file_stays_json() {
        let state = with_devices(3);
        let bytes = state.to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["devices"].as_object().unwrap().len(), 3);
        let lines: Vec<&str> = text.lines().collect();
        let open = lines.iter().position(|l| *l == DEVICES_OPEN).unwrap();
        assert_eq!(&lines[open + 4..], ["  }", "}"]);
        for (i, l) in lines[open + 1..open + 4].iter().enumerate() {
            let (name, row) = device_line(l).unwrap();
            assert_eq!(name, super::super::bench::device_name(i));
            assert_eq!(state.devices.row(&name).unwrap().as_str(), row);
        }
        let path = Path::new("s.json");
        assert!(matches!(
            read_lines(text.as_bytes(), path).unwrap(),
            Read::State(s) if s == state
        ));
        // No devices: the header alone, as schema 3 wrote it.
        let empty = State::new("us-east-1", "123456789012", "abc123");
        let text = String::from_utf8(empty.to_bytes()).unwrap();
        assert!(!text.contains("devices"));
        assert_eq!(State::parse(&text, path).unwrap(), empty);
    }

    #[test]
    fn a_file_laid_out_otherwise_is_read_whole() {
        let state = with_devices(2);
        let json: serde_json::Value = serde_json::from_slice(&state.to_bytes()).unwrap();
        let path = Path::new("s.json");
        for text in [
            serde_json::to_string_pretty(&json).unwrap(),
            serde_json::to_string(&json).unwrap(),
        ] {
            assert_eq!(State::parse(&text, path).unwrap(), state, "{text}");
        }
        // `state pull` prints the same JSON.
        assert_eq!(serde_json::to_value(&state).unwrap(), json);
    }

    #[test]
    fn bad_device_lines_are_corrupt() {
        let text = String::from_utf8(with_devices(2).to_bytes()).unwrap();
        let path = Path::new("s.json");
        let cases = [
            // A row that is JSON but not a row.
            text.replacen("[[\"", "[[1, \"", 1),
            // A var the row does not have.
            text.replacen("\"$0", "\"$7", 1),
            // Cut short in the devices.
            text[..text.len() - 40].to_string(),
            text[..text.len() - 6].to_string(),
        ];
        for bad in cases {
            let e = State::parse(&bad, path).unwrap_err();
            assert!(e.is_bad_input(), "{e}");
            assert!(e.to_string().contains("corrupt"), "{e}");
        }
    }

    #[test]
    fn a_journal_of_unpacked_lines_still_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &State::new("us-east-1", "123456789012", "abc123")).unwrap();
        let (a, b) = (
            super::super::bench::device(1),
            super::super::bench::device(2),
        );
        let old = |name: &str, entry: Option<&DeviceState>| {
            let line = serde_json::json!({"device": name, "entry": entry});
            format!("{line}\n")
        };
        let lines = [
            old("a", Some(&a)),
            old("b", Some(&b)),
            String::from_utf8(Journal::line("c", Some(&b))).unwrap(),
            old("b", None),
        ];
        std::fs::write(journal_path(&path), lines.concat()).unwrap();
        let s = load(&path).unwrap().unwrap();
        assert_eq!(s.devices.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(s.devices.get("a"), Some(a));
        assert_eq!(s.devices.get("c"), Some(b));
    }
}

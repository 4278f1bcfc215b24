//! The fleet manifest: a CSV file with a header, one device a row. `thing_name` is required;
//! `csr` (optional) names the device's own CSR file; every other column is a thing attribute
//! (an empty cell leaves it unset), `serial_number` among them, which must be unique. Validated
//! whole before any AWS call (every CSR read and checked too), so a bad file creates nothing and
//! names every bad line at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::{check_attribute_name, check_attribute_value, check_thing_name};

/// AWS's limit of attributes on a thing with a thing type.
pub const MAX_ATTRIBUTES: usize = 50;
const NAME_COLUMN: &str = "thing_name";
/// A path to the device's PEM CSR, relative to the manifest's directory.
pub const CSR_COLUMN: &str = "csr";
/// The device's serial number: an attribute, unique in the manifest (fleet provisioning by claim
/// allows devices by it).
pub const SERIAL_COLUMN: &str = "serial_number";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub thing_name: String,
    /// The config's `thing.attributes`, overridden by the row's non-empty cells.
    pub attributes: BTreeMap<String, String>,
    /// The device's own CSR (its key never leaves the device), or None: a key is made here.
    pub csr: Option<crate::keys::Csr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub devices: Vec<Device>,
}

/// Every problem in the file, one a line: `devices.csv:12: column serial: why`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {} problem{}:\n  {}", .path, .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.join("\n  "))]
pub struct ManifestError {
    pub path: String,
    pub problems: Vec<String>,
}

pub fn load(path: &Path, defaults: &BTreeMap<String, String>) -> Result<Manifest, ManifestError> {
    let shown = path.display().to_string();
    let fail = |problems: Vec<String>| ManifestError {
        path: shown.clone(),
        problems,
    };
    let text = std::fs::read(path).map_err(|e| fail(vec![format!("cannot read: {e}")]))?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse(&text, defaults, base).map_err(fail)
}

/// `base`: the directory relative `csr` paths are read from (the manifest's own).
pub fn parse(
    text: &[u8],
    defaults: &BTreeMap<String, String>,
    base: &Path,
) -> Result<Manifest, Vec<String>> {
    let mut problems = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text);
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_string()).collect(),
        Err(e) => return Err(vec![format!("line 1: not CSV: {e}")]),
    };
    let Some(name_at) = header.iter().position(|c| c == NAME_COLUMN) else {
        return Err(vec![format!(
            "line 1: no `{NAME_COLUMN}` column (the header is {header:?})"
        )]);
    };
    let mut seen_columns = HashMap::new();
    for (i, column) in header.iter().enumerate() {
        if let Some(first) = seen_columns.insert(column.as_str(), i) {
            problems.push(format!(
                "line 1: column {column:?} appears twice (columns {} and {})",
                first + 1,
                i + 1
            ));
        } else if i != name_at && column != CSR_COLUMN {
            if let Err(why) = check_attribute_name(column) {
                problems.push(format!("line 1: column {}: attribute name {why}", i + 1));
            }
        }
    }
    let csr_at = header.iter().position(|c| c == CSR_COLUMN);
    let mut names: HashMap<String, u64> = HashMap::new();
    let mut serials: HashMap<String, u64> = HashMap::new();
    let mut devices = Vec::new();
    for row in reader.records() {
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problems.push(format!("line {line}: not CSV: {e}"));
                continue;
            }
        };
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        if row.iter().all(|c| c.trim().is_empty()) {
            continue; // a blank line
        }
        if row.len() != header.len() {
            problems.push(format!(
                "line {line}: {} fields, the header has {}",
                row.len(),
                header.len()
            ));
            continue;
        }
        let name = row[name_at].trim().to_string();
        if let Err(why) = check_thing_name(&name) {
            problems.push(format!("line {line}: column {NAME_COLUMN}: {why}"));
            continue;
        }
        if let Some(first) = names.insert(name.clone(), line) {
            problems.push(format!(
                "line {line}: column {NAME_COLUMN}: {name:?} is already on line {first}"
            ));
            continue;
        }
        let mut attributes = defaults.clone();
        let mut bad = false;
        let mut csr = None;
        if let Some(at) = csr_at.filter(|at| !row[*at].trim().is_empty()) {
            let file = base.join(row[at].trim());
            match crate::keys::Csr::load(&file) {
                Ok(c) => csr = Some(c),
                Err(e) => {
                    problems.push(format!("line {line}: column {CSR_COLUMN}: {e}"));
                    bad = true;
                }
            }
        }
        for (i, value) in row.iter().enumerate() {
            if i == name_at || Some(i) == csr_at || value.is_empty() {
                continue;
            }
            if let Err(why) = check_attribute_value(value) {
                problems.push(format!("line {line}: column {}: {why}", header[i]));
                bad = true;
                continue;
            }
            attributes.insert(header[i].clone(), value.to_string());
        }
        if attributes.len() > MAX_ATTRIBUTES {
            problems.push(format!(
                "line {line}: {} attributes with the config's defaults; AWS allows {MAX_ATTRIBUTES}",
                attributes.len()
            ));
            bad = true;
        }
        if let Some(serial) = attributes.get(SERIAL_COLUMN).filter(|_| !bad) {
            if let Some(first) = serials.insert(serial.clone(), line) {
                problems.push(format!(
                    "line {line}: column {SERIAL_COLUMN}: {serial:?} is already on line {first}"
                ));
                bad = true;
            }
        }
        if !bad {
            devices.push(Device {
                thing_name: name,
                attributes,
                csr,
            });
        }
    }
    if devices.is_empty() && problems.is_empty() {
        problems.push("no devices: the manifest has a header but no rows".into());
    }
    if problems.is_empty() {
        Ok(Manifest { devices })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> BTreeMap<String, String> {
        BTreeMap::from([("model".to_string(), "TC-2000".to_string())])
    }

    #[test]
    fn rows_become_devices_with_defaults_overridden() {
        let m = parse(
            b"thing_name,serial,model\nsensor-1,SN-1,\nsensor-2,SN-2,TC-3000\n\n",
            &defaults(),
            Path::new(""),
        )
        .unwrap();
        assert_eq!(m.devices.len(), 2);
        assert_eq!(m.devices[0].attributes["model"], "TC-2000");
        assert_eq!(m.devices[0].attributes["serial"], "SN-1");
        assert_eq!(m.devices[1].attributes["model"], "TC-3000");
    }

    #[test]
    fn every_bad_line_is_named() {
        let text = "thing_name,serial,bad col\n\
                    sensor-1,SN-1,x\n\
                    ,SN-2,x\n\
                    sensor 3,SN-3,x\n\
                    sensor-1,SN-4,x\n\
                    sensor-5,SN 5,x\n\
                    sensor-6,SN-6\n";
        let problems = parse(text.as_bytes(), &BTreeMap::new(), Path::new("")).unwrap_err();
        let joined = problems.join("\n");
        for expected in [
            "line 1: column 3: attribute name",
            "line 3: column thing_name: must not be empty",
            "line 4: column thing_name: \"sensor 3\" contains ' '",
            "line 5: column thing_name: \"sensor-1\" is already on line 2",
            "line 6: column serial: \"SN 5\" contains ' '",
            "line 7: 2 fields, the header has 3",
        ] {
            assert!(joined.contains(expected), "{expected} in:\n{joined}");
        }
        assert_eq!(problems.len(), 6, "{joined}");
    }

    #[test]
    fn header_problems_and_limits() {
        assert!(
            parse(b"serial\nSN-1\n", &BTreeMap::new(), Path::new("")).unwrap_err()[0]
                .contains("no `thing_name` column")
        );
        assert!(
            parse(b"thing_name\n", &BTreeMap::new(), Path::new("")).unwrap_err()[0]
                .contains("no devices")
        );
        let columns: Vec<String> = (0..51).map(|i| format!("a{i}")).collect();
        let text = format!(
            "thing_name,{}\nsensor-1,{}\n",
            columns.join(","),
            vec!["v"; 51].join(",")
        );
        assert!(
            parse(text.as_bytes(), &BTreeMap::new(), Path::new("")).unwrap_err()[0]
                .contains("51 attributes")
        );
    }

    #[test]
    fn csr_column_reads_each_devices_request_relative_to_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::keys::DeviceKey::generate().unwrap();
        std::fs::create_dir(dir.path().join("csrs")).unwrap();
        std::fs::write(
            dir.path().join("csrs/s1.csr"),
            key.csr_pem("sensor-1").unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("csrs/bad.csr"), "not a csr").unwrap();
        let text = "thing_name,csr,serial_number\n\
                    sensor-1,csrs/s1.csr,SN-1\n\
                    sensor-2,,SN-2\n\
                    sensor-3,csrs/bad.csr,SN-3\n\
                    sensor-4,csrs/missing.csr,SN-4\n\
                    sensor-5,,SN-1\n";
        let problems = parse(text.as_bytes(), &BTreeMap::new(), dir.path()).unwrap_err();
        let joined = problems.join("\n");
        for expected in [
            "line 4: column csr: ",
            "bad.csr: not a PEM CSR",
            "line 5: column csr: ",
            "missing.csr: No such file",
            "line 6: column serial_number: \"SN-1\" is already on line 2",
        ] {
            assert!(joined.contains(expected), "{expected} in:\n{joined}");
        }
        assert_eq!(problems.len(), 3, "{joined}");
        let good = "thing_name,csr,serial_number\nsensor-1,csrs/s1.csr,SN-1\nsensor-2,,SN-2\n";
        let m = parse(good.as_bytes(), &BTreeMap::new(), dir.path()).unwrap();
        assert_eq!(
            m.devices[0].csr.as_ref().unwrap().fingerprint,
            key.fingerprint()
        );
        assert!(m.devices[1].csr.is_none());
        // The CSR's path is not an attribute; the serial number is.
        assert!(!m.devices[0].attributes.contains_key("csr"));
        assert_eq!(m.devices[0].attributes[SERIAL_COLUMN], "SN-1");
    }
}

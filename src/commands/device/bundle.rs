//! `iotreg device bundle [THING] --out DIR`: everything one device needs to connect.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::{device_error, Deployed};
use crate::commands::{report, ExitStatus, Summary, Verdict};
use crate::device::{self, bundle::Bundle};
use crate::output::Progress;
use crate::settings::Settings;

pub async fn bundle(
    settings: &Settings,
    progress: &Progress,
    thing: Option<&str>,
    out: &Path,
) -> Result<ExitStatus> {
    let deployed = Deployed::load(settings).await?;
    let files = deployed.device(thing)?;
    let policy = deployed.policy()?;
    let endpoint = deployed.endpoint(progress).await?;
    let b = Bundle::new(endpoint, &files.thing, &policy);
    let message = device::normal_reading(&files.thing).to_string();
    let written = b.write(out, &files, &message).map_err(device_error)?;
    let summary = BundleSummary {
        command: "device bundle",
        thing: files.thing.clone(),
        directory: out.to_path_buf(),
        files: written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        connection: b.connection_json(),
        mosquitto_pub: b.mosquitto_pub(device::Protocol::Mqtt, &message),
    };
    Ok(report(settings, &summary))
}

#[derive(Serialize)]
pub struct BundleSummary {
    command: &'static str,
    thing: String,
    directory: PathBuf,
    files: Vec<String>,
    connection: serde_json::Value,
    mosquitto_pub: String,
}

impl fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bundle for {} written to {}: {}",
            self.thing,
            self.directory.display(),
            self.files.join(", ")
        )?;
        writeln!(f, "publish a reading from that directory with:")?;
        writeln!(f, "  {}", self.mosquitto_pub)
    }
}

impl Summary for BundleSummary {
    fn verdict(&self) -> Verdict {
        Verdict {
            ok: true,
            ..Verdict::default()
        }
    }
}

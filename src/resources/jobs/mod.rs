//! AWS IoT Jobs as code: the job templates of `[[job_templates]]` (`template.rs`), the bucket
//! their firmware goes to and the role AWS IoT assumes to sign its download links, and the
//! jobs `iotreg job start` started (`started.rs`), which `down` cancels and deletes.
//!
//! The job documents are iotreg's own format for firmware (below) and the user's file
//! otherwise. A firmware document carries the file's version, size and SHA-256, and a
//! placeholder AWS IoT replaces with a pre-signed link each time a device asks for the
//! document (AWS IoT developer guide, "Presigned Amazon S3 URLs"):
//! `${aws:iot:s3-presigned-url-v2:https://s3.<region>.amazonaws.com/<bucket>/<key>}`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::bucket::{BucketSpec, Slot as BucketSlot};
use super::{Deployment, InlinePolicy, RoleSpec};
use crate::config::jobs::{JobTemplateConfig, JobsConfig};

pub mod started;
pub mod template;

pub use started::Started;
pub use template::{JobTemplate, RetiredTemplate};

pub const JOBS_BUCKET: &str = "jobs_bucket";
pub const PRESIGN_ROLE: &str = "jobs_presign_role";
/// The records of templates are `job_template/<name>`, of started jobs `job/<id>`.
pub const TEMPLATE_PREFIX: &str = "job_template/";
pub const JOB_PREFIX: &str = "job/";
/// The key of the step that retires started jobs on `down`.
pub const STARTED: &str = "jobs_started";

/// The inline policy of the pre-signing role: read the firmware, nothing else.
pub const PRESIGN_POLICY: &str = "read-firmware";

/// The firmware bucket.
pub const BUCKET: BucketSlot = BucketSlot {
    key: JOBS_BUCKET,
    check: "jobs.bucket",
    field: "jobs.bucket",
    delete_note: "no job template has firmware any more",
    expiry_field: "expire_after_days",
    rule_id: "iotreg-jobs-expiry",
    forget_with: &[],
    spec: |d| &d.jobs.store,
};

#[derive(Debug, Clone)]
pub struct JobsSpec {
    /// Firmware goes here (`jobs.bucket`, or iotreg's own); objects are kept while jobs may
    /// still download them, and go with `down`.
    pub store: BucketSpec,
    /// The role AWS IoT assumes to pre-sign the firmware's links.
    pub presign_role: RoleSpec,
    pub url_expires_s: i64,
    pub templates: Vec<TemplateSpec>,
}

impl JobsSpec {
    /// Whether any template has firmware (then the bucket and the role are wanted).
    pub fn has_firmware(&self) -> bool {
        self.templates.iter().any(|t| t.firmware_file)
    }
    pub fn template(&self, name: &str) -> Option<&TemplateSpec> {
        self.templates.iter().find(|t| t.name == name)
    }
    pub fn role_arn(&self, d: &Deployment) -> String {
        format!(
            "arn:{}:iam::{}:role/{}",
            d.partition, d.account, self.presign_role.name
        )
    }
}

pub fn wanted(d: &Deployment) -> bool {
    !d.jobs.templates.is_empty()
}

pub fn firmware_wanted(d: &Deployment) -> bool {
    d.jobs.has_firmware()
}

/// The pre-signing role: wanted when a template's document has the placeholder.
pub fn presign_wanted(d: &Deployment) -> bool {
    d.jobs.templates.iter().any(|t| t.presigned)
}

/// One job template, resolved: its document built or read, its firmware hashed.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    /// The name in the config (what `iotreg job start` takes).
    pub name: String,
    /// The template's id in AWS.
    pub id: String,
    pub description: String,
    pub document: Value,
    /// The config gives a firmware file (known without reading it, as `down` does).
    pub firmware_file: bool,
    /// The firmware, hashed (None when the files were not read).
    pub firmware: Option<Firmware>,
    /// The document has a pre-signed URL placeholder: the template needs the role.
    pub presigned: bool,
    /// AWS's shapes, as JSON (what DescribeJobTemplate answers, camelCase).
    pub rollout: Option<Value>,
    pub abort: Option<Value>,
    pub timeout: Option<Value>,
    pub retry: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    pub path: PathBuf,
    pub version: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// The object's key in the bucket.
    pub key: String,
}

/// Why a template's files cannot be used (bad input: nothing was called).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("job_templates {name:?}: {path}: {message}")]
    File {
        name: String,
        path: PathBuf,
        message: String,
    },
}

/// AWS's largest job document (CreateJob / CreateJobTemplate: 32 kB).
pub const MAX_DOCUMENT: usize = 32 * 1024;

/// The placeholders AWS IoT replaces with a pre-signed link.
pub fn has_presigned_placeholder(document: &str) -> bool {
    document.contains("${aws:iot:s3-presigned-url:")
        || document.contains("${aws:iot:s3-presigned-url-v2:")
}

/// A template's files, read and checked before any call: its job document, or its
/// firmware's size and SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateFiles {
    Document(Value),
    Firmware { size: u64, sha256: String },
}

/// Every template's files, by template name.
pub type JobFiles = std::collections::BTreeMap<String, TemplateFiles>;

/// Reads every template's file: a document must be a JSON object within AWS's size, a
/// firmware file must be readable and not empty.
pub fn read_files(templates: &[JobTemplateConfig]) -> Result<JobFiles, SpecError> {
    templates
        .iter()
        .map(|t| {
            let file_error = |path: &Path, message: String| SpecError::File {
                name: t.name.clone(),
                path: path.to_path_buf(),
                message,
            };
            let files = match (&t.firmware, &t.document) {
                (Some(path), _) => {
                    let (size, sha256) = hash_file(path).map_err(|e| file_error(path, e))?;
                    TemplateFiles::Firmware { size, sha256 }
                }
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| file_error(path, e.to_string()))?;
                    if text.len() > MAX_DOCUMENT {
                        return Err(file_error(
                            path,
                            format!("{} bytes; AWS allows at most {MAX_DOCUMENT}", text.len()),
                        ));
                    }
                    let doc: Value = serde_json::from_str(&text)
                        .map_err(|e| file_error(path, format!("not JSON: {e}")))?;
                    if !doc.is_object() {
                        return Err(file_error(
                            path,
                            "a job document must be a JSON object".into(),
                        ));
                    }
                    TemplateFiles::Document(doc)
                }
                (None, None) => {
                    unreachable!("the config's validation requires firmware or document")
                }
            };
            Ok((t.name.clone(), files))
        })
        .collect()
}

/// The jobs part of the deployment. Without the files (`down`, `status`, which need only the
/// names) the templates have no document: their records say what to delete.
pub fn spec(
    jobs: &JobsConfig,
    templates: &[JobTemplateConfig],
    files: Option<&JobFiles>,
    suffix: &str,
    region: &str,
    account: &str,
    partition: &str,
) -> JobsSpec {
    let bucket = jobs.bucket.clone();
    let store = BucketSpec {
        // At most 12 + 12 + 1 + 14 + 1 + 6 = 46 characters, within S3's 63.
        name: bucket
            .clone()
            .unwrap_or_else(|| format!("iotreg-jobs-{account}-{region}-{suffix}")),
        own: bucket.is_none(),
        prefix: format!("iotreg-jobs/{suffix}/"),
        expire_days: None,
    };
    let presign_role = RoleSpec {
        name: crate::settings::name(&jobs.presign_role_name, suffix),
        trust_policy: super::role::trust_policy("iot.amazonaws.com"),
        managed_policies: vec![],
        inline_policy: Some(InlinePolicy {
            name: PRESIGN_POLICY.into(),
            document: json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": format!("arn:{partition}:s3:::{}/{}*", store.name, store.prefix)
                }]
            }),
        }),
    };
    let templates = templates
        .iter()
        .map(|t| {
            template_spec(
                t,
                files.and_then(|f| f.get(&t.name)),
                suffix,
                region,
                &store,
            )
        })
        .collect();
    JobsSpec {
        store,
        presign_role,
        url_expires_s: jobs.url_expires_s,
        templates,
    }
}

fn template_spec(
    t: &JobTemplateConfig,
    files: Option<&TemplateFiles>,
    suffix: &str,
    region: &str,
    store: &BucketSpec,
) -> TemplateSpec {
    let (document, firmware) = match (files, &t.firmware) {
        (Some(TemplateFiles::Firmware { size, sha256 }), Some(path)) => {
            let file = object_file_name(path);
            let firmware = Firmware {
                path: path.clone(),
                version: t.version.clone().unwrap_or_default(),
                key: format!(
                    "{}firmware/{}/{}/{file}",
                    store.prefix,
                    t.name,
                    &sha256[..16]
                ),
                file,
                size: *size,
                sha256: sha256.clone(),
            };
            (
                firmware_document(&firmware, region, &store.name),
                Some(firmware),
            )
        }
        (Some(TemplateFiles::Document(doc)), _) => (doc.clone(), None),
        _ => (Value::Null, None),
    };
    let text = document.to_string();
    let rollout = t.rollout.as_ref().map(|r| match r.maximum_per_minute {
        Some(m) => json!({ "maximumPerMinute": m }),
        None => {
            let criteria = match (r.notified_things, r.succeeded_things) {
                (Some(n), _) => json!({ "numberOfNotifiedThings": n }),
                (None, s) => json!({ "numberOfSucceededThings": s }),
            };
            json!({ "exponentialRate": {
                "baseRatePerMinute": r.base_rate_per_minute,
                "incrementFactor": r.increment_factor,
                "rateIncreaseCriteria": criteria,
            }})
        }
    });
    let abort = (!t.abort.is_empty()).then(|| {
        json!({ "criteriaList": t.abort.iter().map(|a| json!({
            "failureType": a.failure_type.as_str(),
            "action": "CANCEL",
            "thresholdPercentage": a.threshold_percentage,
            "minNumberOfExecutedThings": a.min_executed_things,
        })).collect::<Vec<_>>() })
    });
    let retry = (!t.retry.is_empty()).then(|| {
        json!({ "criteriaList": t.retry.iter().map(|r| json!({
            "failureType": r.failure_type.as_str(),
            "numberOfRetries": r.retries,
        })).collect::<Vec<_>>() })
    });
    TemplateSpec {
        id: crate::config::jobs::template_id(&t.name, suffix),
        name: t.name.clone(),
        description: t.description.clone().unwrap_or_else(|| match &firmware {
            Some(f) => format!("iotreg firmware {} ({})", f.version, f.file),
            None => "iotreg job template".into(),
        }),
        // A firmware document always links its file; `down` knows that without the file.
        presigned: t.firmware.is_some() || has_presigned_placeholder(&text),
        firmware_file: t.firmware.is_some(),
        document,
        firmware,
        rollout,
        abort,
        timeout: t
            .timeout_minutes
            .map(|m| json!({ "inProgressTimeoutInMinutes": m })),
        retry,
    }
}

/// The firmware job document devices act on (`operation = firmware_update`).
pub fn firmware_document(f: &Firmware, region: &str, bucket: &str) -> Value {
    json!({
        "operation": "firmware_update",
        "firmware": {
            "version": f.version,
            "file": f.file,
            "size": f.size,
            "sha256": f.sha256,
            "url": format!(
                "${{aws:iot:s3-presigned-url-v2:https://s3.{region}.amazonaws.com/{bucket}/{}}}",
                f.key
            ),
        }
    })
}

/// The configuration-change job document (`operation = config`).
pub fn config_document(set: &[(String, Value)]) -> Value {
    let map: serde_json::Map<String, Value> = set.iter().cloned().collect();
    json!({ "operation": "config", "set": map })
}

/// `KEY=VALUE` as a setting: numbers and booleans as such, anything else a string.
pub fn parse_setting(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{k:?}: a setting's name is letters, digits, '_' and '-'"
        ));
    }
    let value = match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match serde_json::from_str::<serde_json::Number>(v) {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(v.to_string()),
        },
    };
    Ok((k.to_string(), value))
}

/// The object's file name: the firmware's, with anything outside letters, digits, `.`, `-`
/// and `_` replaced, so the key needs no escaping in the placeholder's URL.
fn object_file_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firmware.bin".into());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The file's size and SHA-256 (hex), read in pieces.
pub fn hash_file(path: &Path) -> Result<(u64, String), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a file".into());
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    if size == 0 {
        return Err("the firmware file is empty".into());
    }
    Ok((size, crate::keys::hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::jobs::{AbortConfig, FailureType, RolloutConfig};

    #[test]
    fn settings_keep_numbers_and_booleans() {
        assert_eq!(
            parse_setting("reporting_interval=30").unwrap(),
            ("reporting_interval".into(), json!(30))
        );
        assert_eq!(parse_setting("ota=true").unwrap().1, json!(true));
        assert_eq!(parse_setting("mode=eco").unwrap().1, json!("eco"));
        assert_eq!(parse_setting("ratio=0.5").unwrap().1, json!(0.5));
        assert!(parse_setting("novalue").is_err());
        assert!(parse_setting("bad key=1").is_err());
    }

    #[test]
    fn a_firmware_template_hashes_its_file_and_names_it_in_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor fw.bin");
        std::fs::write(&path, b"firmware bytes").unwrap();
        let t = JobTemplateConfig {
            name: "fw".into(),
            firmware: Some(path),
            version: Some("2.0.0".into()),
            rollout: Some(RolloutConfig {
                base_rate_per_minute: Some(10),
                increment_factor: Some(2.0),
                succeeded_things: Some(5),
                ..Default::default()
            }),
            abort: vec![AbortConfig {
                failure_type: FailureType::Failed,
                threshold_percentage: 10.0,
                min_executed_things: 10,
            }],
            ..Default::default()
        };
        let files = read_files(std::slice::from_ref(&t)).unwrap();
        let jobs = spec(
            &JobsConfig::default(),
            &[t],
            Some(&files),
            "abc123",
            "eu-west-1",
            "123456789012",
            "aws",
        );
        let t = &jobs.templates[0];
        assert_eq!(t.id, "fw-abc123");
        let f = t.firmware.as_ref().unwrap();
        assert_eq!(f.size, 14);
        let want = crate::keys::hex(&Sha256::digest(b"firmware bytes"));
        assert_eq!(f.sha256, want);
        assert_eq!(f.file, "sensor_fw.bin");
        assert_eq!(
            f.key,
            format!(
                "iotreg-jobs/abc123/firmware/fw/{}/sensor_fw.bin",
                &want[..16]
            )
        );
        assert_eq!(
            t.document["firmware"]["url"],
            format!("${{aws:iot:s3-presigned-url-v2:https://s3.eu-west-1.amazonaws.com/iotreg-jobs-123456789012-eu-west-1-abc123/{}}}", f.key)
        );
        assert!(t.presigned);
        assert_eq!(
            t.rollout.as_ref().unwrap()["exponentialRate"]["rateIncreaseCriteria"],
            json!({"numberOfSucceededThings": 5})
        );
        assert_eq!(
            t.abort.as_ref().unwrap()["criteriaList"][0]["action"],
            "CANCEL"
        );
        let policy = &jobs.presign_role.inline_policy.as_ref().unwrap().document;
        assert_eq!(
            policy["Statement"][0]["Resource"],
            "arn:aws:s3:::iotreg-jobs-123456789012-eu-west-1-abc123/iotreg-jobs/abc123/*"
        );
    }

    #[test]
    fn bad_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("doc.json");
        std::fs::write(&doc, "{not json").unwrap();
        let t = JobTemplateConfig {
            name: "cfg".into(),
            document: Some(doc),
            ..Default::default()
        };
        let e = read_files(&[t]).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let t = JobTemplateConfig {
            name: "fw".into(),
            firmware: Some(dir.path().join("missing.bin")),
            version: Some("1".into()),
            ..Default::default()
        };
        let e = read_files(&[t]).unwrap_err();
        assert!(e.to_string().contains("missing.bin"), "{e}");
    }
}

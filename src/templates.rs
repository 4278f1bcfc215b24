//! Templates compiled into the binary, their rendering, and the Lambda deployment package.
//!
//! Placeholders are `{{name}}`. IoT policy variables look like `${iot:...}` and must reach AWS
//! untouched, so the two syntaxes were chosen not to overlap.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEVICE_POLICY: &str = include_str!("../templates/device-policy.json");
/// The recipe's device policy, word for word (`policy.preset = "recipe"`).
pub const DEVICE_POLICY_RECIPE: &str = include_str!("../templates/device-policy-recipe.json");
pub const TRUST_POLICY: &str = include_str!("../templates/lambda-trust-policy.json");
pub const HANDLER: &str = include_str!("../templates/lambda-function.py");
/// The pre-provisioning hook of claim provisioning (its allow-list travels beside it).
pub const PROVISIONING_HOOK: &str = include_str!("../templates/provisioning-hook.py");
/// The anomaly detector the analytics stream runs (`[analytics]`).
pub const ANOMALY_DETECTOR: &str = include_str!("../templates/anomaly-detector.py");
pub const RULE_SQL: &str = include_str!("../templates/rule.sql");
pub const SHADOW: &str = include_str!("../templates/device-shadow.json");
pub const DASHBOARD: &str = include_str!("../templates/dashboard.json");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}: cannot read template: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: unknown placeholder {{{{{name}}}}}; known: {known}")]
    UnknownPlaceholder {
        file: String,
        name: String,
        known: String,
    },
    #[error("{file}: unterminated placeholder (a '{{{{' without '}}}}')")]
    Unterminated { file: String },
    #[error("{file}: not valid JSON after rendering: {message}")]
    Json { file: String, message: String },
    #[error("cannot build the Lambda package: {0}")]
    Zip(String),
}

/// A template's text and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Template {
    pub origin: String,
    pub text: String,
}

impl Template {
    pub fn builtin(name: &str, text: &str) -> Template {
        Template {
            origin: format!("<built-in templates/{name}>"),
            text: text.to_string(),
        }
    }

    /// The override file when configured, else the built-in text.
    pub fn load(
        path: Option<&Path>,
        builtin_name: &str,
        builtin: &str,
    ) -> Result<Template, TemplateError> {
        match path {
            None => Ok(Template::builtin(builtin_name, builtin)),
            Some(p) => Ok(Template {
                origin: p.display().to_string(),
                text: std::fs::read_to_string(p).map_err(|source| TemplateError::Read {
                    file: p.to_path_buf(),
                    source,
                })?,
            }),
        }
    }

    pub fn render(&self, vars: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
        render(&self.text, vars, &self.origin)
    }

    /// Renders and parses as JSON, so a broken template is bad input, not an AWS error.
    pub fn render_json(
        &self,
        vars: &BTreeMap<&str, String>,
    ) -> Result<serde_json::Value, TemplateError> {
        let text = self.render(vars)?;
        serde_json::from_str(&text).map_err(|e| TemplateError::Json {
            file: self.origin.clone(),
            message: e.to_string(),
        })
    }
}

pub fn render(
    text: &str,
    vars: &BTreeMap<&str, String>,
    origin: &str,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated {
                file: origin.to_string(),
            })?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| TemplateError::UnknownPlaceholder {
                file: origin.to_string(),
                name: name.to_string(),
                known: vars.keys().copied().collect::<Vec<_>>().join(", "),
            })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The deployment package: one handler file in a zip, built in memory. Fixed timestamps and
/// permissions make the bytes (and so Lambda's CodeSha256) depend on the source alone, which is
/// what lets a second `up` recognise its own code.
pub fn lambda_zip(file_name: &str, source: &str) -> Result<Vec<u8>, TemplateError> {
    lambda_zip_files(&[(file_name, source.as_bytes())])
}

/// A deployment package of several files (a handler and the data it reads), built the same
/// reproducible way as [`lambda_zip`], the files in the order given.
pub fn lambda_zip_files(files: &[(&str, &[u8])]) -> Result<Vec<u8>, TemplateError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(0o644);
        for (name, bytes) in files {
            zip.start_file(*name, options)
                .map_err(|e| TemplateError::Zip(e.to_string()))?;
            zip.write_all(bytes)
                .map_err(|e| TemplateError::Zip(e.to_string()))?;
        }
        zip.finish()
            .map_err(|e| TemplateError::Zip(e.to_string()))?;
    }
    Ok(buf.into_inner())
}

/// Lambda's CodeSha256: base64 of the SHA-256 of the zip.
pub fn code_sha256(zip: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(zip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        [
            ("region", "eu-west-1"),
            ("account", "123456789012"),
            ("partition", "aws"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    }

    #[test]
    fn policy_fills_region_and_account_and_keeps_iot_variables() {
        let doc = Template::builtin("device-policy.json", DEVICE_POLICY)
            .render_json(&vars())
            .unwrap();
        let connect = doc["Statement"][0]["Resource"][0].as_str().unwrap();
        assert_eq!(
            connect,
            "arn:aws:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}"
        );
        let publish = doc["Statement"][1]["Resource"][0].as_str().unwrap();
        assert!(publish.ends_with(":topic/sensor/temperature/${iot:Connection.Thing.ThingName}"));
        assert_eq!(
            doc["Statement"][4]["Action"],
            serde_json::json!(["iot:GetThingShadow", "iot:UpdateThingShadow"])
        );
    }

    #[test]
    fn the_recipe_preset_is_the_recipes_policy_word_for_word() {
        let doc = Template::builtin("device-policy-recipe.json", DEVICE_POLICY_RECIPE)
            .render_json(&vars())
            .unwrap();
        let actions: Vec<_> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Action"].clone())
            .collect();
        assert_eq!(
            actions,
            [
                serde_json::json!(["iot:Connect"]),
                serde_json::json!(["iot:Publish"]),
                serde_json::json!(["iot:GetThingShadow", "iot:UpdateThingShadow"]),
            ]
        );
    }

    #[test]
    fn unknown_placeholder_names_file_and_placeholder() {
        let t = Template {
            origin: "p.json".into(),
            text: "{\"a\": \"{{acount}}\"}".into(),
        };
        let e = t.render(&vars()).unwrap_err().to_string();
        assert!(
            e.starts_with("p.json: unknown placeholder {{acount}}"),
            "{e}"
        );
    }

    #[test]
    fn invalid_json_is_reported_against_its_file() {
        let t = Template {
            origin: "p.json".into(),
            text: "{ nope".into(),
        };
        let e = t.render_json(&vars()).unwrap_err().to_string();
        assert!(e.starts_with("p.json: not valid JSON"), "{e}");
    }

    #[test]
    fn zip_is_deterministic_and_contains_the_handler() {
        let a = lambda_zip("lambda-function.py", HANDLER).unwrap();
        let b = lambda_zip("lambda-function.py", HANDLER).unwrap();
        assert_eq!(a, b);
        assert_eq!(code_sha256(&a), code_sha256(&b));
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(a)).unwrap();
        let mut f = archive.by_name("lambda-function.py").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!(text, HANDLER);
        assert!(text.contains("if temperature > 80:"));
    }
}

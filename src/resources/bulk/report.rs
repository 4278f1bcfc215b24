//! A bulk registration task's reports: ListThingRegistrationTaskReports gives links
//! (`resourceLinks`), fetched with a plain HTTP GET (on AWS, pre-signed HTTPS URLs: no AWS
//! signature of ours is added), each a file of JSON lines.
//!
//! AWS's format is not in the API reference. What it shows elsewhere (the AWS IoT Device
//! Management workshop's result reader): a RESULTS line is
//! `{"response": {"CertificatePem": …, "ResourceArns": {"thing": ARN, "certificate": ARN, …}},
//! "offset": N}`, `offset` being the input line. For ERRORS lines iotreg guesses
//! `{"offset": N, "errorCode": …, "errorMessage": …}`; both are read leniently (either case of
//! the first letter, with or without `response`), and a device is named by its thing ARN or,
//! failing that, by its input line.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::http_get::redact;
use serde_json::Value;

/// A device the RESULTS report says was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub thing: String,
    pub thing_arn: String,
    pub certificate_pem: String,
    pub certificate_arn: String,
    pub certificate_id: String,
}

/// A device the ERRORS report says failed, with AWS's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub thing: String,
    pub code: String,
    pub message: String,
}

/// A field by either case of its first letter (`CertificatePem` or `certificatePem`).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let mut lower = name.to_string();
    lower[..1].make_ascii_lowercase();
    v.get(name).or_else(|| v.get(&lower))
}

fn text(v: &Value, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| field(v, n))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
}

/// The device an input line was for.
fn by_offset(line: &Value, input: &[String]) -> Option<String> {
    let offset = field(line, "Offset")?;
    let i = offset
        .as_u64()
        .or_else(|| offset.as_str().and_then(|s| s.parse().ok()))?;
    input.get(i as usize).cloned()
}

/// The RESULTS lines: the devices registered, and the lines that could not be read.
pub fn results(text_: &str, input: &[String]) -> (Vec<Registered>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text_.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("RESULTS line {}: not JSON: {e}", n + 1));
                continue;
            }
        };
        let response = field(&parsed, "Response").unwrap_or(&parsed);
        let arns = field(response, "ResourceArns").cloned().unwrap_or_default();
        let thing_arn = text(&arns, &["thing"]).unwrap_or_default();
        let certificate_arn = text(&arns, &["certificate"]).unwrap_or_default();
        let pem = text(response, &["CertificatePem"]).unwrap_or_default();
        let thing = thing_arn
            .rsplit_once("thing/")
            .map(|(_, n)| n.to_string())
            .or_else(|| by_offset(&parsed, input));
        match thing {
            Some(thing) if !pem.is_empty() && certificate_arn.contains("cert/") => {
                out.push(Registered {
                    thing,
                    certificate_id: certificate_arn
                        .rsplit_once("cert/")
                        .map(|(_, id)| id.to_string())
                        .unwrap_or_default(),
                    thing_arn,
                    certificate_pem: pem,
                    certificate_arn,
                })
            }
            _ => problems.push(format!(
                "RESULTS line {}: no thing, certificate ARN or certificate PEM in it",
                n + 1
            )),
        }
    }
    (out, problems)
}

/// The ERRORS lines, each naming its device (by its input line) with AWS's code and message.
pub fn errors(text_: &str, input: &[String]) -> Vec<Failure> {
    let mut out = Vec::new();
    for (n, line) in text_.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.into()));
        let inner = field(&parsed, "Response").unwrap_or(&parsed);
        let thing = by_offset(&parsed, input)
            .or_else(|| text(inner, &["ThingName"]))
            .unwrap_or_else(|| format!("(ERRORS line {})", n + 1));
        out.push(Failure {
            thing,
            code: text(inner, &["ErrorCode", "Code"]).unwrap_or_else(|| "unknown".into()),
            message: text(inner, &["ErrorMessage", "Message"])
                .unwrap_or_else(|| line.trim().to_string()),
        });
    }
    out
}

/// GETs a report link: `http://` (a local endpoint) or `https://` (AWS's pre-signed URLs,
/// checked against the system's root certificates).
pub async fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, fetch_unbounded(url))
        .await
        .map_err(|_| format!("GET {}: no answer in {timeout:?}", redact(url)))?
}

async fn fetch_unbounded(url: &str) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET {}: {e}", redact(url));
    let response = crate::http_get::get(url).await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        return Err(fail(&format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        )));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Vec<String> {
        vec!["s-0".into(), "s-1".into(), "s-2".into()]
    }

    #[test]
    fn a_results_line_as_aws_writes_it() {
        let line = r#"{"response":{"CertificatePem":"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n","ResourceArns":{"certificate":"arn:aws:iot:us-east-1:123456789012:cert/abc","thing":"arn:aws:iot:us-east-1:123456789012:thing/s-1","policy":"arn:aws:iot:us-east-1:123456789012:policy/p"}},"offset":1}"#;
        let (ok, problems) = results(line, &input());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].thing, "s-1");
        assert_eq!(ok[0].certificate_id, "abc");
        assert!(ok[0]
            .certificate_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn a_results_line_without_a_thing_arn_is_named_by_its_offset_and_junk_is_reported() {
        let text = "{\"certificatePem\":\"PEM\",\"resourceArns\":{\"certificate\":\"arn:aws:iot:r:1:cert/x\"},\"offset\":2}\nnot json\n{\"offset\":0}\n";
        let (ok, problems) = results(text, &input());
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].thing, "s-2");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("RESULTS line 2: not JSON"));
        assert!(problems[1].starts_with("RESULTS line 3: no thing"));
    }

    #[test]
    fn errors_name_the_device_with_code_and_message() {
        let text = "{\"offset\":0,\"errorCode\":\"ResourceNotFoundException\",\"errorMessage\":\"Thing type X does not exist\"}\n{\"response\":{\"ErrorCode\":\"InvalidRequestException\",\"ErrorMessage\":\"bad CSR\"},\"offset\":\"2\"}\n";
        let e = errors(text, &input());
        assert_eq!(
            e,
            [
                Failure {
                    thing: "s-0".into(),
                    code: "ResourceNotFoundException".into(),
                    message: "Thing type X does not exist".into()
                },
                Failure {
                    thing: "s-2".into(),
                    code: "InvalidRequestException".into(),
                    message: "bad CSR".into()
                }
            ]
        );
    }

    #[tokio::test]
    async fn fetch_gets_a_plain_http_link_and_reports_a_refusal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "403 Forbidden"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(
                    req.starts_with("GET /r/results.jsonl?X-Amz-Signature=s HTTP/1.1"),
                    "{req}"
                );
                let body = if status.starts_with("200") {
                    "{\"a\":1}\n"
                } else {
                    "denied"
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/r/results.jsonl?X-Amz-Signature=s");
        assert_eq!(
            fetch(&url, Duration::from_secs(10)).await.unwrap(),
            "{\"a\":1}\n"
        );
        let e = fetch(&url, Duration::from_secs(10)).await.unwrap_err();
        assert!(e.contains("HTTP 403: denied"), "{e}");
        assert!(
            !e.contains("Signature"),
            "the signature stays out of messages: {e}"
        );
    }
}

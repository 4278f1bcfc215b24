//! What a failed AWS call comes to: one line a person reads, and the SDK's whole detail
//! kept for `-v`.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// An AWS call that failed, reduced to what a person needs: which resource and call, and what
/// came back (or why nothing did). `Display` is one line; `detail` has everything for `-v`.
/// Boxed: it travels inside `StepError`, in every `Result` of the engine.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AwsFailure(Box<Failure>);

/// The parts of an [`AwsFailure`].
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: String,
    pub name: String,
    pub call: String,
    pub cause: Cause,
    /// The SDK's whole cause chain and debug form (`DisplayErrorContext`): long, for `-v` only.
    pub detail: String,
}

/// What came back from a failed call, one variant per kind of [`SdkError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The service answered with an error status. `code` and `message` when it sent a body
    /// the SDK could parse; otherwise `body`, a short excerpt of what it sent.
    Service {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// No usable AWS credentials: the request was never sent.
    Credentials(CredentialsProblem),
    /// The request did not reach the service (connection refused, DNS, TLS): the innermost
    /// cause the SDK reports.
    Network(String),
    /// A call or attempt timeout ran out (`aws.*timeout_s` in the config).
    Timeout(String),
    /// An answer came back that could not be read.
    Response { status: Option<u16>, cause: String },
    /// The request could not be built (an invalid parameter or endpoint).
    Construction(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsProblem {
    /// No provider in the chain had any credentials.
    NotFound,
    /// A provider is configured but its configuration is invalid (a profile, for one).
    Invalid(String),
    /// A provider failed (SSO expired, assume-role refused, a timeout).
    Failed(String),
}

/// Longest excerpt of a message, body or cause kept in the one-line text.
const MESSAGE_CHARS: usize = 200;
const EXCERPT_CHARS: usize = 80;

impl AwsFailure {
    pub fn new<E>(kind: &str, name: &str, call: &str, err: &SdkError<E, HttpResponse>) -> AwsFailure
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        AwsFailure(Box::new(Failure {
            kind: kind.to_string(),
            name: name.to_string(),
            call: call.to_string(),
            cause: Cause::of(err),
            detail: DisplayErrorContext(err).to_string(),
        }))
    }

    /// The user's input, not AWS, is at fault: no credentials, or a broken credentials setup.
    pub fn is_credentials_problem(&self) -> bool {
        matches!(
            self.cause,
            Cause::Credentials(CredentialsProblem::NotFound | CredentialsProblem::Invalid(_))
        )
    }
}

impl Failure {
    /// What to do about it, for the codes where that is known.
    fn advice(&self) -> &'static str {
        let Cause::Service {
            code: Some(code), ..
        } = &self.cause
        else {
            return "";
        };
        match code.as_str() {
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedException" => {
                "; check that the credentials have the permissions in docs/aws-permissions.md"
            }
            c if c.contains("Throttl") || c == "TooManyRequestsException" => {
                "; AWS is throttling this account: retry later"
            }
            _ => "",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}: {} failed ", self.kind, self.name, self.call)?;
        match &self.cause {
            Cause::Service {
                status,
                code: Some(code),
                message,
                ..
            } => match message {
                Some(m) => write!(f, "({code}): {} (HTTP {status})", excerpt(m, MESSAGE_CHARS))?,
                None => write!(f, "({code}): HTTP {status}")?,
            },
            Cause::Service {
                status,
                code: None,
                message: Some(m),
                ..
            } => write!(f, "(HTTP {status}): {}", excerpt(m, MESSAGE_CHARS))?,
            Cause::Service {
                status,
                content_type,
                body,
                ..
            } => {
                write!(f, "(HTTP {status}")?;
                if let Some(t) = content_type {
                    write!(f, " {}", excerpt(t, 40))?;
                }
                match body {
                    Some(b) => write!(f, ": {b:?})")?,
                    None => write!(f, ", empty body)")?,
                }
            }
            Cause::Credentials(CredentialsProblem::NotFound) => {
                write!(f, "(no AWS credentials found)")?
            }
            Cause::Credentials(CredentialsProblem::Invalid(why)) => {
                write!(f, "(invalid AWS credentials setup: {why})")?
            }
            Cause::Credentials(CredentialsProblem::Failed(why)) => {
                write!(f, "(could not load AWS credentials: {why})")?
            }
            Cause::Network(why) => write!(f, "(cannot connect: {why})")?,
            Cause::Timeout(why) => write!(f, "(timed out: {why})")?,
            Cause::Response {
                status: Some(status),
                cause,
            } => write!(f, "(unreadable answer, HTTP {status}: {cause})")?,
            Cause::Response {
                status: None,
                cause,
            } => write!(f, "(unreadable answer: {cause})")?,
            Cause::Construction(why) => write!(f, "(request not built: {why})")?,
        }
        f.write_str(self.advice())
    }
}

impl std::ops::Deref for AwsFailure {
    type Target = Failure;

    fn deref(&self) -> &Failure {
        &self.0
    }
}

impl Cause {
    fn of<E>(err: &SdkError<E, HttpResponse>) -> Cause
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let innermost = || excerpt(&innermost_cause(err), MESSAGE_CHARS);
        match err {
            SdkError::ServiceError(se) => {
                let raw = se.raw();
                let code = se.err().code().map(str::to_string);
                let content_type = raw.headers().get("content-type").map(str::to_string);
                Cause::Service {
                    status: raw.status().as_u16(),
                    message: se.err().message().map(str::to_string),
                    // The body is worth showing only when it did not parse as an AWS error.
                    body: match code {
                        Some(_) => None,
                        None => raw
                            .body()
                            .bytes()
                            .and_then(|b| body_excerpt(b, content_type.as_deref())),
                    },
                    code,
                    content_type,
                }
            }
            SdkError::DispatchFailure(df) => {
                // A credentials provider's error reaches us as a dispatch failure (the
                // orchestrator resolves the identity just before sending): found by its type.
                if let Some(c) = credentials_error(err) {
                    return Cause::Credentials(c);
                }
                if df.is_timeout() {
                    Cause::Timeout(innermost())
                } else {
                    Cause::Network(innermost())
                }
            }
            SdkError::TimeoutError(_) => Cause::Timeout(innermost()),
            SdkError::ResponseError(re) => Cause::Response {
                status: Some(re.raw().status().as_u16()),
                cause: innermost(),
            },
            SdkError::ConstructionFailure(_) => Cause::Construction(innermost()),
            // SdkError is non-exhaustive: a future kind still gets a line.
            _ => Cause::Construction(innermost()),
        }
    }
}

/// The credentials provider's error somewhere in the chain, classified.
fn credentials_error(err: &(dyn std::error::Error + 'static)) -> Option<CredentialsProblem> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            let why = || excerpt(&innermost_cause(c), MESSAGE_CHARS);
            return Some(match c {
                CredentialsError::CredentialsNotLoaded(_) => CredentialsProblem::NotFound,
                CredentialsError::InvalidConfiguration(_) => CredentialsProblem::Invalid(why()),
                _ => CredentialsProblem::Failed(why()),
            });
        }
        next = e.source();
    }
    None
}

/// The last error in the source chain: the outer ones are the SDK's generic wrappers
/// ("dispatch failure", "io error", "client error (Connect)"), the last one says what happened.
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A short, printable excerpt of a body the SDK could not parse: an HTML page's title (or its
/// text without tags), else the text itself; None for an empty or binary body.
fn body_excerpt(body: &[u8], content_type: Option<&str>) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let html =
        content_type.is_some_and(|t| t.contains("html")) || text.trim_start().starts_with('<');
    let text = if html {
        html_text(text)
    } else {
        text.to_string()
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then(|| excerpt(&text, EXCERPT_CHARS))
}

fn html_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>")) {
        if start + 7 <= end {
            return html[start + 7..end].to_string();
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// At most `max` characters of `text` on one line, marked with … when cut.
fn excerpt(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    //! `failed` against the answers a new user meets: real SDK clients where the failure can be
    //! produced locally (a closed port, a silent server, no credentials), hand-built
    //! `SdkError`s for what a service answers.
    use super::*;
    use crate::aws::failed;
    use crate::engine::StepError;
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    use aws_config::BehaviorVersion;
    use aws_sdk_iot::operation::describe_thing::DescribeThingError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use std::time::Duration;

    /// What the done-when asks of every line: short enough to read.
    const MAX_LINE: usize = 300;

    fn service_error(
        status: u16,
        content_type: Option<&str>,
        body: &str,
        meta: ErrorMetadata,
    ) -> SdkError<DescribeThingError, HttpResponse> {
        let mut raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body));
        if let Some(t) = content_type {
            raw.headers_mut().insert("content-type", t.to_string());
        }
        SdkError::service_error(DescribeThingError::generic(meta), raw)
    }

    fn line(err: SdkError<DescribeThingError, HttpResponse>) -> (String, AwsFailure) {
        let StepError::Aws(f) = failed("thing", "sensor-1", "DescribeThing", err) else {
            panic!("not an AWS failure");
        };
        let text = f.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(
            text.chars().count() < MAX_LINE,
            "{} chars: {text}",
            text.len()
        );
        (text, f)
    }

    /// A client with test credentials, no retries and a short attempt timeout.
    fn iot(endpoint: &str) -> aws_sdk_iot::Client {
        aws_sdk_iot::Client::from_conf(
            aws_sdk_iot::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(endpoint)
                .credentials_provider(aws_sdk_iot::config::Credentials::new(
                    "testing", "testing", None, None, "tests",
                ))
                .retry_config(RetryConfig::disabled())
                .timeout_config(
                    TimeoutConfig::builder()
                        .operation_attempt_timeout(Duration::from_millis(300))
                        .build(),
                )
                .build(),
        )
    }

    #[test]
    fn an_html_500_is_its_status_type_and_text() {
        let html = "<html><body><h1>500 Internal Server Error</h1></body></html>";
        let (text, f) = line(service_error(
            500,
            Some("text/html"),
            html,
            ErrorMetadata::builder().build(),
        ));
        assert_eq!(
            text,
            r#"thing "sensor-1": DescribeThing failed (HTTP 500 text/html: "500 Internal Server Error")"#
        );
        // -v keeps what the SDK said, debug form included.
        assert!(f.detail.contains("ServiceError"), "{}", f.detail);
        assert!(!f.is_credentials_problem());
    }

    #[test]
    fn a_long_body_is_cut_and_an_empty_one_said_so() {
        let page = format!(
            "<html><head><title>Bad Gateway</title></head><body>{}</body></html>",
            "x".repeat(5000)
        );
        let (text, _) = line(service_error(
            502,
            Some("text/html; charset=utf-8"),
            &page,
            ErrorMetadata::builder().build(),
        ));
        assert!(
            text.ends_with(r#"(HTTP 502 text/html; charset=utf-8: "Bad Gateway")"#),
            "{text}"
        );
        let (text, _) = line(service_error(
            503,
            Some("text/plain"),
            &"y".repeat(5000),
            ErrorMetadata::builder().build(),
        ));
        assert!(text.contains("(HTTP 503 text/plain: \"yyy"), "{text}");
        assert!(text.ends_with("…\")"), "{text}");
        let (text, _) = line(service_error(
            500,
            None,
            "",
            ErrorMetadata::builder().build(),
        ));
        assert!(text.ends_with("failed (HTTP 500, empty body)"), "{text}");
    }

    #[test]
    fn a_modelled_error_is_its_code_message_and_advice() {
        let meta = ErrorMetadata::builder()
            .code("AccessDeniedException")
            .message("User: arn:aws:iam::123456789012:user/dev is not authorized to perform: iot:DescribeThing")
            .build();
        let (text, f) = line(service_error(403, Some("application/json"), "{}", meta));
        assert_eq!(
            text,
            "thing \"sensor-1\": DescribeThing failed (AccessDeniedException): User: arn:aws:iam::123456789012:user/dev is not authorized to perform: iot:DescribeThing (HTTP 403); check that the credentials have the permissions in docs/aws-permissions.md"
        );
        assert!(matches!(
            f.cause,
            Cause::Service {
                status: 403,
                code: Some(_),
                body: None,
                ..
            }
        ));
        let meta = ErrorMetadata::builder()
            .code("ThrottlingException")
            .message("Rate exceeded")
            .build();
        let (text, _) = line(service_error(400, None, "{}", meta));
        assert!(
            text.ends_with("failed (ThrottlingException): Rate exceeded (HTTP 400); AWS is throttling this account: retry later"),
            "{text}"
        );
        // A service's long message is cut; -v has it whole.
        let meta = ErrorMetadata::builder()
            .code("InvalidRequestException")
            .message("z".repeat(2000))
            .build();
        let (_, f) = line(service_error(400, None, "{}", meta));
        assert!(f.detail.contains(&"z".repeat(2000)));
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port nothing listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = iot(&format!("http://127.0.0.1:{port}"))
            .describe_thing()
            .thing_name("sensor-1")
            .send()
            .await
            .unwrap_err();
        let (text, f) = line(err);
        assert!(matches!(f.cause, Cause::Network(_)), "{:?}", f.cause);
        assert!(
            text.starts_with("thing \"sensor-1\": DescribeThing failed (cannot connect: "),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        // Connections are accepted by the kernel (the backlog) and never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let err = iot(&url)
            .describe_thing()
            .thing_name("sensor-1")
            .send()
            .await
            .unwrap_err();
        let (text, f) = line(err);
        assert!(matches!(f.cause, Cause::Timeout(_)), "{:?}", f.cause);
        assert!(
            text.starts_with("thing \"sensor-1\": DescribeThing failed (timed out: "),
            "{text}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn no_credentials_are_told_apart_by_type() {
        use aws_credential_types::provider::error::CredentialsError;
        let conf = aws_sdk_iot::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::credential_fn::provide_credentials_fn(|| async {
                        Err(CredentialsError::not_loaded(
                            "no providers in chain provided credentials",
                        ))
                    }),
                ),
            )
            .retry_config(RetryConfig::disabled())
            .build();
        let err = aws_sdk_iot::Client::from_conf(conf)
            .describe_thing()
            .thing_name("sensor-1")
            .send()
            .await
            .unwrap_err();
        let (text, f) = line(err);
        assert_eq!(
            text,
            "thing \"sensor-1\": DescribeThing failed (no AWS credentials found)"
        );
        assert!(f.is_credentials_problem());
    }

    #[test]
    fn construction_and_response_failures_keep_their_cause() {
        let (text, f) = line(SdkError::construction_failure("thing name is required"));
        assert_eq!(
            f.cause,
            Cause::Construction("thing name is required".into())
        );
        assert!(
            text.ends_with("(request not built: thing name is required)"),
            "{text}"
        );
        let raw = HttpResponse::new(200u16.try_into().unwrap(), SdkBody::from("{"));
        let (text, _) = line(SdkError::response_error("unexpected end of JSON", raw));
        assert!(
            text.ends_with("(unreadable answer, HTTP 200: unexpected end of JSON)"),
            "{text}"
        );
    }
}

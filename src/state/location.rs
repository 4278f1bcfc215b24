//! Where a deployment's state lives: a local file (the default) or an object in S3.

use std::fmt;
use std::path::{Path, PathBuf};

/// The state's home, resolved once from `--state` or `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

/// A state object in S3, and how iotreg writes to its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
    /// The bucket's region when it differs from the run's.
    pub region: Option<String>,
    /// SSE-KMS with this key for every object iotreg writes (else the bucket's default).
    pub kms_key_id: Option<String>,
}

impl S3Location {
    /// `s3://bucket/key`, checked: a bucket name as S3 allows it, and a key that names an
    /// object (not empty, not a folder).
    pub fn parse(url: &str) -> Result<S3Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://BUCKET/KEY URL"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?} has no object key: write s3://BUCKET/KEY"))?;
        check_bucket(bucket).map_err(|why| format!("{url:?}: bucket {bucket:?} {why}"))?;
        check_key(key).map_err(|why| format!("{url:?}: key {key:?} {why}"))?;
        Ok(S3Location {
            bucket: bucket.into(),
            key: key.into(),
            region: None,
            kms_key_id: None,
        })
    }

    pub fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    /// The prefix of the fleet journal's segments.
    pub fn journal_prefix(&self) -> String {
        format!("{}.journal/", self.key)
    }
}

/// S3's bucket naming rules for general purpose buckets.
pub fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    let bytes = bucket.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
    {
        return Err("may hold only lowercase letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) || bucket.contains("..") {
        return Err("must begin and end with a letter or digit, without '..'");
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("is empty: write s3://BUCKET/KEY");
    }
    if key.ends_with('/') {
        return Err("names a folder: end it with a file name such as state.json");
    }
    if key.len() > 900 {
        // S3 allows 1024 bytes; the lock and journal objects add to the key.
        return Err("is longer than 900 bytes");
    }
    if key.chars().any(|c| c.is_control()) {
        return Err("holds control characters");
    }
    Ok(())
}

impl Location {
    /// `--state`: an `s3://` URL, else a local path.
    pub fn parse_arg(arg: &str) -> Result<Location, String> {
        if arg.starts_with("s3:") {
            S3Location::parse(arg).map(Location::S3)
        } else {
            Ok(Location::Local(PathBuf::from(arg)))
        }
    }

    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }

    /// How messages name it, as a path-like label (a file path, or `s3://bucket/key`).
    pub fn label(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) => write!(f, "s3://{}/{}", s.bucket, s.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_and_paths() {
        let l = Location::parse_arg("s3://acme-iot.state/prod/state.json").unwrap();
        let Location::S3(s) = &l else { panic!() };
        assert_eq!(
            (s.bucket.as_str(), s.key.as_str()),
            ("acme-iot.state", "prod/state.json")
        );
        assert_eq!(s.lock_key(), "prod/state.json.lock");
        assert_eq!(s.journal_prefix(), "prod/state.json.journal/");
        assert_eq!(l.to_string(), "s3://acme-iot.state/prod/state.json");
        assert_eq!(
            Location::parse_arg(".iotreg/state.json").unwrap(),
            Location::Local(".iotreg/state.json".into())
        );
    }

    #[test]
    fn malformed_s3_urls_say_what_is_wrong() {
        for (url, says) in [
            ("s3:/bucket/key", "is not an s3://BUCKET/KEY URL"),
            ("s3://bucket", "has no object key"),
            ("s3://bucket/", "is empty"),
            ("s3://bucket/dir/", "names a folder"),
            ("s3://Bucket/key", "lowercase"),
            ("s3://ab/key", "3 to 63"),
            ("s3://-ab/key", "begin and end"),
            ("s3://a..b/key", "begin and end"),
            ("s3:///key", "3 to 63"),
        ] {
            let e = Location::parse_arg(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}

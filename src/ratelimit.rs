//! Client-side request rates per AWS API operation, so a fleet stays under the account's
//! quotas instead of provoking throttling. One process-wide table (quotas are per account and
//! region, and one iotreg run talks to one), installed once by the command; unset (unit
//! tests), every call goes at once. A call named in no entry is not limited.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// AWS IoT Core's default "API TPS" quotas (Service Quotas, service `iotcore`, per account
/// and region; most can be raised on request, then set `aws.rate_limits` to match), and the
/// Device Shadow service's per-account request rate in most regions.
pub const DEFAULT_RATES: &[(&str, f64)] = &[
    // Thing-group membership: no per-account figure found in AWS's quota table; set as the
    // other registry writes (CreateThing, UpdateThing) until one is (override in
    // [aws.rate_limits]).
    ("AddThingToThingGroup", 100.0),
    ("AttachPolicy", 15.0),
    ("AttachThingPrincipal", 100.0),
    ("CreateCertificateFromCsr", 15.0),
    ("CreateKeysAndCertificate", 10.0),
    ("CreateThing", 100.0),
    ("CreateThingType", 15.0),
    ("DeleteCertificate", 10.0),
    ("DeleteThing", 100.0),
    ("DeleteThingShadow", 400.0),
    ("DeleteThingType", 15.0),
    ("DeprecateThingType", 15.0),
    ("DescribeCertificate", 10.0),
    ("DescribeThing", 350.0),
    ("DescribeThingType", 100.0),
    ("DetachPolicy", 15.0),
    ("DetachThingPrincipal", 100.0),
    // Fleet indexing and the group listing: no figure in the quota table this project could
    // read offline; paced as the other list calls (docs/decisions.md).
    ("GetIndexingConfiguration", 10.0),
    ("GetThingShadow", 400.0),
    ("ListAttachedPolicies", 15.0),
    ("ListPrincipalThings", 10.0),
    ("ListCertificates", 10.0),
    ("ListTagsForResource", 10.0),
    ("ListTargetsForPolicy", 10.0),
    ("ListThingPrincipals", 10.0),
    ("ListThingGroupsForThing", 10.0),
    ("ListThings", 10.0),
    ("ListThingsInThingGroup", 10.0),
    ("RemoveThingFromThingGroup", 100.0),
    // Assumed, as GetIndexingConfiguration above.
    ("SearchIndex", 15.0),
    ("UpdateCertificate", 10.0),
    // Assumed; one call per `up` that turns indexing on.
    ("UpdateIndexingConfiguration", 1.0),
    ("UpdateThing", 100.0),
    ("UpdateThingShadow", 400.0),
];

/// A token bucket: `rate` calls a second on average, bursts of up to one second's worth.
/// The rate drops when AWS throttles anyway (the quota was raised elsewhere, or another
/// client shares it) and creeps back up to the configured one as calls succeed.
struct Bucket {
    max: f64,
    inner: Mutex<BucketState>,
}

struct BucketState {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

/// The lowest share of the configured rate throttling can push a bucket to.
const FLOOR_SHARE: f64 = 0.1;

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            max: rate,
            inner: Mutex::new(BucketState {
                rate,
                tokens: rate.max(1.0),
                last: None,
            }),
        }
    }

    /// Takes a token, returning how long to wait before using it (a reservation: tokens may
    /// go negative, so concurrent callers queue fairly instead of all retrying).
    fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.inner.lock().expect("bucket mutex");
        let burst = s.rate.max(1.0);
        if let Some(last) = s.last {
            s.tokens = (s.tokens + now.duration_since(last).as_secs_f64() * s.rate).min(burst);
        }
        s.last = Some(now);
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / s.rate)
        }
    }

    /// AWS throttled a call: slow down by 30% (multiplicative decrease), never below a
    /// tenth of the configured rate (the SDK's retry backoff handles the rest).
    fn throttled(&self) {
        let mut s = self.inner.lock().expect("bucket mutex");
        s.rate = (s.rate * 0.7).max(self.max * FLOOR_SHARE);
        s.tokens = s.tokens.min(0.0);
    }

    /// A call went through: win back 5% of the configured rate (additive increase).
    fn succeeded(&self) {
        let mut s = self.inner.lock().expect("bucket mutex");
        if s.rate < self.max {
            s.rate = (s.rate + self.max / 20.0).min(self.max);
        }
    }
}

pub struct Limiter {
    buckets: HashMap<String, Bucket>,
}

impl Limiter {
    /// The defaults with `overrides` applied; a rate of 0 removes the limit, and `"*"` sets
    /// every default at once (`"*" = 0`: no limits, e.g. against a local emulator).
    pub fn new(overrides: &BTreeMap<String, f64>) -> Limiter {
        let all = overrides.get("*");
        let mut rates: BTreeMap<String, f64> = DEFAULT_RATES
            .iter()
            .map(|(k, v)| (k.to_string(), *all.unwrap_or(v)))
            .collect();
        rates.extend(
            overrides
                .iter()
                .filter(|(k, _)| *k != "*")
                .map(|(k, v)| (k.clone(), *v)),
        );
        Limiter {
            buckets: rates
                .into_iter()
                .filter(|(_, r)| *r > 0.0)
                .map(|(k, r)| (k, Bucket::new(r)))
                .collect(),
        }
    }

    fn delay(&self, op: &str, now: Instant) -> Duration {
        self.buckets
            .get(op)
            .map(|b| b.reserve(now))
            .unwrap_or_default()
    }
}

static LIMITER: OnceLock<Limiter> = OnceLock::new();

/// Feeds each attempt's answer back into its operation's bucket: a throttling answer slows
/// that operation down for every caller, not only the one the SDK is retrying.
#[derive(Debug)]
pub struct Feedback;

impl aws_smithy_runtime_api::client::interceptors::Intercept for Feedback {
    fn name(&self) -> &'static str {
        "iotreg rate feedback"
    }

    fn read_after_attempt(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (Some(limiter), Some(meta), Some(response)) = (
            LIMITER.get(),
            cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>(),
            context.response(),
        ) else {
            return Ok(());
        };
        let Some(bucket) = limiter.buckets.get(meta.name()) else {
            return Ok(());
        };
        let kind = response.headers().get("x-amzn-ErrorType").unwrap_or("");
        if response.status().as_u16() == 429 || is_throttling_code(kind) {
            bucket.throttled();
        } else if response.status().is_success() {
            bucket.succeeded();
        }
        Ok(())
    }
}

/// Whether an `x-amzn-ErrorType` value (`Code` or `Code:uri`) is a throttling error.
fn is_throttling_code(kind: &str) -> bool {
    let code = kind.split(':').next().unwrap_or("");
    matches!(
        code,
        "ThrottlingException" | "TooManyRequestsException" | "Throttling" | "RequestLimitExceeded"
    )
}

/// Installs the process's limits (the first call wins).
pub fn install(limiter: Limiter) {
    let _ = LIMITER.set(limiter);
}

/// Waits for `op`'s turn. Call right before sending the request.
pub async fn acquire(op: &str) {
    if let Some(l) = LIMITER.get() {
        let wait = l.delay(op, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_second_of_burst_then_paces() {
        let b = Bucket::new(10.0);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..12).map(|_| b.reserve(t0)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        assert_eq!(waits[10], Duration::from_millis(100));
        assert_eq!(waits[11], Duration::from_millis(200));
        // A second later the bucket has refilled what the reservations took.
        let later = b.reserve(t0 + Duration::from_secs(2));
        assert!(later <= Duration::from_millis(100), "{later:?}");
    }

    #[test]
    fn throttling_slows_the_rate_and_success_wins_it_back() {
        let b = Bucket::new(10.0);
        b.throttled();
        assert!((b.inner.lock().unwrap().rate - 7.0).abs() < 1e-9);
        b.succeeded();
        assert!((b.inner.lock().unwrap().rate - 7.5).abs() < 1e-9);
        for _ in 0..30 {
            b.throttled();
        }
        assert_eq!(b.inner.lock().unwrap().rate, 1.0, "a tenth at least");
        for _ in 0..1000 {
            b.succeeded();
        }
        assert_eq!(
            b.inner.lock().unwrap().rate,
            10.0,
            "never above the configured rate"
        );
        assert!(is_throttling_code(
            "ThrottlingException:http://internal.amazon.com/"
        ));
        assert!(!is_throttling_code("ResourceNotFoundException"));
    }

    #[test]
    fn overrides_change_and_remove_limits() {
        let l = Limiter::new(&BTreeMap::from([
            ("CreateThing".to_string(), 1.0),
            ("AttachPolicy".to_string(), 0.0),
        ]));
        let t0 = Instant::now();
        assert!(l.delay("CreateThing", t0).is_zero());
        assert_eq!(l.delay("CreateThing", t0), Duration::from_secs(1));
        for _ in 0..100 {
            assert!(l.delay("AttachPolicy", t0).is_zero());
            assert!(l.delay("NotAnOperation", t0).is_zero());
        }
        let none = Limiter::new(&BTreeMap::from([
            ("*".to_string(), 0.0),
            ("CreateThing".to_string(), 2.0),
        ]));
        for _ in 0..100 {
            assert!(none.delay("AttachPolicy", t0).is_zero());
        }
        assert!(none.delay("CreateThing", t0).is_zero());
        assert!(none.delay("CreateThing", t0).is_zero());
        assert!(!none.delay("CreateThing", t0).is_zero());
    }
}

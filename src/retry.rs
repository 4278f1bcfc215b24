//! Bounded exponential backoff for conditions the SDK's own retry does not cover (IAM
//! propagation, a thing type's deprecation delay). Injected, so tests run without real waits.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max_delay: Duration,
    /// Total time budget; the last attempt is made before it runs out.
    pub budget: Duration,
}

impl Backoff {
    /// IAM roles usually become assumable by Lambda within ~10 s; allow two minutes.
    pub const IAM_PROPAGATION: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max_delay: Duration::from_secs(8),
        budget: Duration::from_secs(120),
    };

    /// AWS documents DetachThingPrincipal as asynchronous; deletes wait for it, briefly.
    pub const DETACH_PROPAGATION: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
        budget: Duration::from_secs(60),
    };

    /// iotreg's own retry of a create the SDK must not repeat blindly.
    pub const CREATE_RETRY: Backoff = Backoff {
        initial: Duration::from_millis(200),
        max_delay: Duration::from_secs(4),
        budget: Duration::from_secs(30),
    };

    /// Delays before attempt 2, 3, ...; stops when the budget would be exceeded.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut next = self.initial;
        let mut spent = Duration::ZERO;
        std::iter::from_fn(move || {
            if spent + next > self.budget {
                return None;
            }
            let d = next;
            spent += d;
            next = (next * 2).min(self.max_delay);
            Some(d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_cap_and_stop_within_budget() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            budget: Duration::from_secs(15),
        };
        let d: Vec<u64> = b.delays().map(|d| d.as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 4, 4]);
        assert!(Backoff::IAM_PROPAGATION.delays().count() > 10);
    }
}

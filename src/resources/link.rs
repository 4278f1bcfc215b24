//! The device certificate's two attachments, to the IoT policy and to the thing: one kind of
//! link, told apart only by the calls that list, attach and detach it ([`Target`]).

use super::fleet::view::Paged;
use super::CERTIFICATE;
use crate::engine::{planning, Ctx, Kind, Meta, Outcome, Seen, Step, StepError};
use crate::plan::Fields;
use crate::state::{Phase, Record};
use crate::verify::{Check, CheckStatus};

/// A link found live: it attaches the certificate with this ARN (the recorded one).
pub struct Attached {
    pub certificate_arn: String,
}

/// What the certificate is attached to, and the calls that do it.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// The link's key in the state.
    const KEY: &'static str;
    /// The label users see.
    const KIND: &'static str;
    /// verify's check of it.
    const CHECK: &'static str;
    /// The key of the certificate it attaches (the device's, or claim provisioning's claim
    /// certificate).
    const CERTIFICATE_KEY: &'static str = CERTIFICATE;
    fn name(&self) -> String;
    fn depends_on(&self) -> &'static [&'static str];
    /// Whether `cert` is attached (the list call; false when what it lists is gone).
    async fn attached(&self, cert: &str, name: &str) -> Result<bool, StepError>;
    /// Whether `cert` is attached, as a fleet's pages say (Unread: no page covers it).
    fn paged(&self, _cert: &str) -> Paged<()> {
        Paged::Unread
    }
    /// Attaches `cert` (idempotent on AWS).
    async fn attach(&self, cert: &str, name: &str) -> Result<(), StepError>;
    /// Detaches `cert`; false when it was not attached any more.
    async fn detach(&self, cert: &str, name: &str) -> Result<bool, StepError>;
    /// verify's words for the link, attached or not.
    fn says(&self, attached: bool) -> String;
}

/// The certificate's link to a [`Target`].
pub struct CertificateLink<T>(pub T);

impl<T: Target> Meta for CertificateLink<T> {
    fn key(&self) -> &str {
        T::KEY
    }
    fn kind(&self) -> &str {
        T::KIND
    }
    fn name(&self) -> String {
        self.0.name()
    }
    fn depends_on(&self) -> &[&'static str] {
        self.0.depends_on()
    }
}

#[async_trait::async_trait]
impl<T: Target> Kind for CertificateLink<T> {
    type Live = Attached;

    /// Attached or not is all there is to compare.
    fn desired(&self, _cx: &Ctx) -> Fields {
        Fields::new()
    }

    /// Whether the recorded certificate is attached (None without one).
    async fn read(&self, cx: &Ctx) -> Result<Option<Attached>, StepError> {
        let Ok(cert) = certificate_arn_of(cx, T::CERTIFICATE_KEY) else {
            return Ok(None);
        };
        let attached = match self.0.paged(&cert) {
            Paged::Found(()) => true,
            Paged::Absent => false,
            Paged::Unread => self.0.attached(&cert, &self.name()).await?,
        };
        Ok(attached.then_some(Attached {
            certificate_arn: cert,
        }))
    }

    fn fields(&self, _live: &Attached) -> Fields {
        Fields::new()
    }

    fn identify(&self, _live: &Attached) -> String {
        self.name()
    }

    fn link(&self) -> bool {
        true
    }

    /// Nothing recorded: attach straight away (the attach calls are idempotent), sparing a
    /// list call AWS allows 10 to 15 times a second, which would set a fleet's pace.
    fn create_unread(&self) -> bool {
        true
    }

    async fn apply(&self, cx: &Ctx, step: Step<Attached>) -> Result<Outcome, StepError> {
        let name = self.name();
        let record = |cert: &str| {
            let mut rec = Record::new(T::KEY, T::KIND, Phase::Created, &name);
            rec.data.insert("certificate_arn".into(), cert.into());
            rec
        };
        if let Some(live) = &step.live {
            // Adopt or no change: attached as wanted; only the record may need writing.
            return cx.keep(step.record.as_ref(), record(&live.certificate_arn));
        }
        // Create, or the replace of a rename (a link follows it): attach.
        let cert = certificate_arn_of(cx, T::CERTIFICATE_KEY)?;
        let rec = record(&cert);
        cx.intent(rec.clone())?;
        self.0.attach(&cert, &name).await?;
        cx.commit(rec)?;
        Ok(Outcome::Created)
    }

    fn check_name(&self) -> &'static str {
        T::CHECK
    }

    async fn checks(&self, _cx: &Ctx, seen: Seen<'_, Attached>) -> Vec<Check> {
        let mut check = planning::comparison_check(self.check_name(), &seen);
        check.reason = self.0.says(check.status == CheckStatus::Pass);
        vec![check]
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(T::KEY) else {
            return Ok(Outcome::Absent);
        };
        let Some(cert) = rec.data_str("certificate_arn").map(str::to_string) else {
            cx.forget(T::KEY)?;
            return Ok(Outcome::Absent);
        };
        let detached = self.0.detach(&cert, &rec.name).await?;
        cx.forget(T::KEY)?;
        Ok(Outcome::deleted_if(detached))
    }
}

/// The ARN of the certificate recorded under `key`, which its links attach.
pub fn certificate_arn_of(cx: &Ctx, key: &str) -> Result<String, StepError> {
    cx.record(key)
        .and_then(|r| r.arn)
        .ok_or_else(|| StepError::Failed(format!("{key} ARN missing from state")))
}

/// The tests every link passes, each run for both targets (see the `link_tests!` in their
/// files): a target gives how its list and attach calls are mocked and what verify says.
#[cfg(test)]
pub mod tests {
    use std::sync::Arc;

    use aws_smithy_mocks::Rule;

    use super::*;
    use crate::engine::Resource;
    use crate::plan::Action;
    use crate::resources::testing::*;
    use crate::resources::Env;

    pub const CERT: &str = "arn:aws:iot:us-east-1:123456789012:cert/c1";

    pub struct Fixture<T> {
        pub make: fn(Arc<Env>) -> CertificateLink<T>,
        /// The list call: the certificate attached, or something else only.
        pub listed: fn(bool) -> Rule,
        /// The attach call, for the certificate.
        pub attach: fn() -> Rule,
        /// The link's name, as its record holds it.
        pub name: &'static str,
        /// verify's reason when attached, and when not.
        pub says: [&'static str; 2],
    }

    fn certificate() -> Record {
        let mut r = recorded(CERTIFICATE, "certificate", "c1", Some(CERT));
        r.id = Some("c1".into());
        r
    }

    fn attachment<T: Target>(f: &Fixture<T>, phase: Phase) -> Record {
        let mut r = Record::new(T::KEY, T::KIND, phase, f.name);
        r.data.insert("certificate_arn".into(), CERT.into());
        r
    }

    async fn plan_then_ensure<T: Target>(f: &Fixture<T>, h: &Harness) -> (Action, Outcome) {
        let r = (f.make)(h.env.clone());
        let plan = Resource::plan(&r, &h.cx, true).await.unwrap();
        (plan.action, r.ensure(&h.cx).await.unwrap())
    }

    pub async fn no_change_writes_nothing<T: Target>(f: &Fixture<T>) {
        let list = (f.listed)(true);
        let records = vec![certificate(), attachment(f, Phase::Created)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let (action, outcome) = plan_then_ensure(f, &h).await;
        assert_eq!((action, outcome), (Action::NoChange, Outcome::Unchanged));
        assert_eq!(list.num_calls(), 2, "one read each");
        assert_eq!(h.cx.record(T::KEY), Some(attachment(f, Phase::Created)));
    }

    /// The attach calls are idempotent: up spares the rate-limited list.
    pub async fn unrecorded_it_is_attached_without_a_list_call<T: Target>(f: &Fixture<T>) {
        let attach = (f.attach)();
        let h = harness(&[&attach], &[], &[], &[], vec![certificate()], |_| {});
        let r = (f.make)(h.env.clone());
        assert_eq!(r.ensure(&h.cx).await.unwrap(), Outcome::Created);
        assert_eq!(attach.num_calls(), 1);
        assert_eq!(h.cx.record(T::KEY), Some(attachment(f, Phase::Created)));
    }

    pub async fn plan_reads_an_unrecorded_one_and_agrees<T: Target>(f: &Fixture<T>) {
        let (list, attach) = ((f.listed)(false), (f.attach)());
        let h = harness(
            &[&list, &attach],
            &[],
            &[],
            &[],
            vec![certificate()],
            |_| {},
        );
        let (action, outcome) = plan_then_ensure(f, &h).await;
        assert_eq!((action, outcome), (Action::Create, Outcome::Created));
        assert_eq!(list.num_calls(), 1, "plan reads; up does not");
        assert_eq!(attach.num_calls(), 1);
    }

    pub async fn detached_outside_it_is_attached_again<T: Target>(f: &Fixture<T>) {
        let (list, attach) = ((f.listed)(false), (f.attach)());
        let records = vec![certificate(), attachment(f, Phase::Created)];
        let h = harness(&[&list, &attach], &[], &[], &[], records, |_| {});
        let (action, outcome) = plan_then_ensure(f, &h).await;
        assert_eq!((action, outcome), (Action::Create, Outcome::Created));
        assert_eq!(attach.num_calls(), 1);
    }

    pub async fn an_interrupted_attach_that_happened_is_adopted<T: Target>(f: &Fixture<T>) {
        let list = (f.listed)(true);
        let records = vec![certificate(), attachment(f, Phase::Intent)];
        let h = harness(&[&list], &[], &[], &[], records, |_| {});
        let (action, outcome) = plan_then_ensure(f, &h).await;
        assert_eq!((action, outcome), (Action::Adopt, Outcome::Adopted));
        assert_eq!(h.cx.record(T::KEY), Some(attachment(f, Phase::Created)));
    }

    pub async fn verify_says_whether_it_is_attached<T: Target>(f: &Fixture<T>) {
        for (attached, status, says) in [
            (false, CheckStatus::Fail, f.says[1]),
            (true, CheckStatus::Pass, f.says[0]),
        ] {
            let list = (f.listed)(attached);
            let records = vec![certificate(), attachment(f, Phase::Created)];
            let h = harness(&[&list], &[], &[], &[], records, |_| {});
            let checks = (f.make)(h.env.clone()).check(&h.cx).await;
            assert_eq!(checks.len(), 1);
            assert_eq!(checks[0].name, T::CHECK);
            assert_eq!(
                (checks[0].status, checks[0].reason.as_str()),
                (status, says)
            );
        }
    }

    /// One `#[tokio::test]` per scenario of this module for a target's fixture.
    macro_rules! link_tests {
        ($fixture:expr) => {
            #[tokio::test]
            async fn no_change_writes_nothing() {
                crate::resources::link::tests::no_change_writes_nothing(&$fixture).await
            }
            #[tokio::test]
            async fn unrecorded_it_is_attached_without_a_list_call() {
                crate::resources::link::tests::unrecorded_it_is_attached_without_a_list_call(
                    &$fixture,
                )
                .await
            }
            #[tokio::test]
            async fn plan_reads_an_unrecorded_one_and_agrees() {
                crate::resources::link::tests::plan_reads_an_unrecorded_one_and_agrees(&$fixture)
                    .await
            }
            #[tokio::test]
            async fn detached_outside_it_is_attached_again() {
                crate::resources::link::tests::detached_outside_it_is_attached_again(&$fixture)
                    .await
            }
            #[tokio::test]
            async fn an_interrupted_attach_that_happened_is_adopted() {
                crate::resources::link::tests::an_interrupted_attach_that_happened_is_adopted(
                    &$fixture,
                )
                .await
            }
            #[tokio::test]
            async fn verify_says_whether_it_is_attached() {
                crate::resources::link::tests::verify_says_whether_it_is_attached(&$fixture).await
            }
        };
    }
    pub(crate) use link_tests;
}

//! A bucket of the deployment's: the bulk registration's input (`fleet.bulk_bucket`) and the
//! jobs' firmware (`jobs.bucket`). Unnamed in the config, iotreg creates one named from the
//! account, region and suffix (the bulk input's with a lifecycle rule that expires its objects,
//! see [`super::bulk::EXPIRE_DAYS`]) and deletes it on `down`. A bucket named in the config is
//! the user's: iotreg only checks that it exists, and `down` removes only the objects under
//! this deployment's prefix.
//!
//! AWS (S3 API reference): CreateBucket outside us-east-1 needs a LocationConstraint naming the
//! region (us-east-1 refuses one); DeleteBucket refuses a bucket that still holds objects
//! (BucketNotEmpty), so the objects go first (ListObjectsV2, then DeleteObject); a bucket
//! without a lifecycle configuration answers GetBucketLifecycleConfiguration with
//! NoSuchLifecycleConfiguration; a rule's `Expiration` in `Days` deletes objects that many days
//! after their creation.

use std::sync::Arc;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};

use super::Deployment;
use crate::engine::{Ctx, Kind, Meta, Outcome, Step, StepError};
use crate::plan::Fields;
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::state::{Phase, Record};

const KIND: &str = "S3 bucket";
/// Recorded when iotreg created the bucket (and so deletes it).
const OWNED: &str = "created_by_iotreg";

/// What a bucket is for: its key in the state, its check, the config field that names a
/// user's bucket, and its lifecycle rule.
pub struct Slot {
    pub key: &'static str,
    pub check: &'static str,
    /// The config field naming the user's own bucket.
    pub field: &'static str,
    pub delete_note: &'static str,
    /// The field of the plan showing the expiry, and the lifecycle rule's id (iotreg's own
    /// rule, told apart from any other on the bucket).
    pub expiry_field: &'static str,
    pub rule_id: &'static str,
    /// Records that name objects in the bucket, forgotten with it.
    pub forget_with: &'static [&'static str],
    pub spec: fn(&Deployment) -> &BucketSpec,
}

/// A bucket as the deployment wants it.
#[derive(Debug, Clone)]
pub struct BucketSpec {
    pub name: String,
    /// iotreg names, creates and deletes the bucket (the config names none).
    pub own: bool,
    /// Where this deployment's objects go in the bucket.
    pub prefix: String,
    /// A bucket of iotreg's own expires the objects under the prefix after this many days.
    pub expire_days: Option<i32>,
}

pub struct Bucket(pub Arc<Env>, pub &'static Slot);

/// The live bucket: it exists, with its lifecycle rule's expiry (None: no such rule).
pub struct LiveBucket {
    expiry_days: Option<i32>,
}

impl Bucket {
    fn spec(&self) -> &BucketSpec {
        (self.1.spec)(&self.0.d)
    }
    /// The expiry the lifecycle rule should have: only on a bucket of iotreg's own.
    fn expiry(&self) -> Option<i32> {
        let spec = self.spec();
        spec.expire_days.filter(|_| spec.own)
    }
}

impl Meta for Bucket {
    fn key(&self) -> &str {
        self.1.key
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec().name.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
    fn delete_note(&self) -> String {
        self.1.delete_note.into()
    }
}

#[async_trait::async_trait]
impl Kind for Bucket {
    type Live = LiveBucket;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let mut f = Fields::new();
        if let Some(days) = self.expiry() {
            f.insert(self.1.expiry_field.into(), days.into());
        }
        f
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<LiveBucket>, StepError> {
        let s3 = &self.0.aws.s3;
        let name = &self.spec().name;
        let head = sdk::find(
            op(KIND, name, "HeadBucket"),
            s3.head_bucket().bucket(name).send(),
            |e| e.is_not_found(),
        )
        .await?;
        if head.is_none() {
            return Ok(None);
        }
        if self.expiry().is_none() {
            return Ok(Some(LiveBucket { expiry_days: None }));
        }
        let lifecycle = sdk::find_by_code(
            op(KIND, name, "GetBucketLifecycleConfiguration"),
            s3.get_bucket_lifecycle_configuration().bucket(name).send(),
            "NoSuchLifecycleConfiguration",
        )
        .await?;
        let expiry_days = lifecycle.and_then(|l| {
            l.rules()
                .iter()
                .find(|r| {
                    r.id() == Some(self.1.rule_id) && r.status() == &ExpirationStatus::Enabled
                })
                .and_then(|r| r.expiration())
                .and_then(|e| e.days())
        });
        Ok(Some(LiveBucket { expiry_days }))
    }

    fn fields(&self, live: &LiveBucket) -> Fields {
        let mut f = Fields::new();
        if self.expiry().is_some() {
            f.insert(
                self.1.expiry_field.into(),
                live.expiry_days
                    .map(serde_json::Value::from)
                    .unwrap_or_default(),
            );
        }
        f
    }

    fn identify(&self, _live: &LiveBucket) -> String {
        format!("s3://{}", self.spec().name)
    }

    /// A bucket named in the config is the user's: found, it is used, never owned.
    fn adopts_unowned(&self) -> bool {
        !self.spec().own
    }

    fn shared(&self) -> bool {
        !self.spec().own
    }

    async fn apply(&self, cx: &Ctx, step: Step<LiveBucket>) -> Result<Outcome, StepError> {
        let s3 = &self.0.aws.s3;
        let spec = self.spec();
        let name = &spec.name;
        let key = self.1.key;
        let record = |owned: bool| {
            let mut rec = Record::new(key, KIND, Phase::Created, name);
            rec.arn = Some(format!("arn:{}:s3:::{name}", self.0.d.partition));
            rec.data.insert(OWNED.into(), owned.into());
            rec.data.insert("prefix".into(), spec.prefix.clone().into());
            rec
        };
        let Some(live) = &step.live else {
            if !spec.own {
                let field = self.1.field;
                return Err(StepError::Failed(format!(
                    "{KIND} {name:?} ({field}) does not exist: create it, or leave {field} unset for iotreg to make one"
                )));
            }
            let mut rec = cx.intent(record(true))?;
            let mut create = s3.create_bucket().bucket(name);
            // us-east-1 is the default location and refuses to be named as a constraint.
            if self.0.d.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(
                            self.0.d.region.as_str(),
                        ))
                        .build(),
                );
            }
            crate::ratelimit::acquire("CreateBucket").await;
            match create.send().await {
                Ok(_) => {}
                // Our own earlier attempt (a lost answer, or a run killed after the call):
                // the intent says so. Another owner's bucket answers BucketAlreadyExists.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
                Err(e) => return Err(crate::aws::failed(KIND, name, "CreateBucket", e)),
            }
            self.put_lifecycle().await?;
            rec.phase = Phase::Created;
            cx.commit(rec)?;
            return Ok(Outcome::Created);
        };
        let updated = if self.expiry().is_some() && live.expiry_days != self.expiry() {
            self.put_lifecycle().await?;
            Some(step.summary())
        } else {
            None
        };
        let outcome = step.outcome(updated);
        let mut rec = record(spec.own);
        rec.intent_at_ms = step.record.as_ref().and_then(|r| r.intent_at_ms);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        self.1.check
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let key = self.1.key;
        let Some(rec) = cx.record(key) else {
            for k in self.1.forget_with {
                cx.forget(k)?;
            }
            return Ok(Outcome::Absent);
        };
        let owned = rec.data.get(OWNED).and_then(|v| v.as_bool()) == Some(true);
        let prefix = rec
            .data_str("prefix")
            .map(str::to_string)
            .unwrap_or_else(|| self.spec().prefix.clone());
        let name = rec.name.clone();
        // A bucket of our own goes whole; in the user's bucket only our prefix.
        let existed = self
            .delete_objects(&name, if owned { None } else { Some(&prefix) })
            .await?;
        let outcome = if owned {
            let deleted = sdk::find(
                op(KIND, &name, "DeleteBucket"),
                self.0.aws.s3.delete_bucket().bucket(&name).send(),
                |e| e.meta().code() == Some("NoSuchBucket"),
            )
            .await?;
            Outcome::deleted_if(deleted.is_some())
        } else if existed {
            Outcome::Retained(format!(
                "the objects under {prefix} are deleted; the bucket is not iotreg's"
            ))
        } else {
            Outcome::Absent
        };
        // Records naming objects in this bucket (the bulk run's): nothing to resume any more.
        for k in self.1.forget_with {
            cx.forget(k)?;
        }
        cx.forget(key)?;
        Ok(outcome)
    }
}

impl Bucket {
    async fn put_lifecycle(&self) -> Result<(), StepError> {
        let spec = self.spec();
        let Some(days) = self.expiry() else {
            return Ok(());
        };
        let rule = LifecycleRule::builder()
            .id(self.1.rule_id)
            .filter(LifecycleRuleFilter::builder().prefix(&spec.prefix).build())
            .status(ExpirationStatus::Enabled)
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: lifecycle rule: {e}")))?;
        let config = BucketLifecycleConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: lifecycle configuration: {e}")))?;
        sdk::send(
            op(KIND, &spec.name, "PutBucketLifecycleConfiguration"),
            self.0
                .aws
                .s3
                .put_bucket_lifecycle_configuration()
                .bucket(&spec.name)
                .lifecycle_configuration(config)
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Deletes every object (under `prefix`); false when the bucket does not exist.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        prefix: Option<&str>,
    ) -> Result<bool, StepError> {
        let s3 = &self.0.aws.s3;
        loop {
            let page = sdk::find(
                op(KIND, bucket, "ListObjectsV2"),
                s3.list_objects_v2()
                    .bucket(bucket)
                    .set_prefix(prefix.map(str::to_string))
                    .send(),
                |e| e.is_no_such_bucket(),
            )
            .await?;
            let Some(page) = page else {
                return Ok(false);
            };
            if page.contents().is_empty() {
                return Ok(true);
            }
            // One object at a time: DeleteObjects needs a Content-MD5 some S3-compatible
            // endpoints do not check the same way, and a bulk run or a jobs deployment leaves a handful of objects.
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                sdk::send(
                    op(KIND, bucket, "DeleteObject"),
                    s3.delete_object().bucket(bucket).key(key).send(),
                )
                .await?;
            }
        }
    }
}

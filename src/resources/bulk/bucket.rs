//! The bucket a bulk registration's input goes to. Without `fleet.bulk_bucket`, iotreg creates
//! one named from the account, region and suffix, with a lifecycle rule that expires the
//! input objects (see [`super::EXPIRE_DAYS`]), and deletes it on `down`. A bucket named in
//! the config is the user's: iotreg only checks that it exists, and `down` removes only the
//! objects under this deployment's prefix.
//!
//! AWS (S3 API reference): CreateBucket outside us-east-1 needs a LocationConstraint naming the
//! region (us-east-1 refuses one); DeleteBucket refuses a bucket that still holds objects
//! (BucketNotEmpty), so the objects go first (ListObjectsV2, then DeleteObjects, up to 1,000
//! keys a call); a bucket without a lifecycle configuration answers
//! GetBucketLifecycleConfiguration with NoSuchLifecycleConfiguration; a rule's `Expiration`
//! in `Days` deletes objects that many days after their creation.

use std::sync::Arc;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};

use super::{BulkSpec, BULK_BUCKET, BULK_TASK};
use crate::engine::{Ctx, Kind, Meta, Outcome, Step, StepError};
use crate::plan::Fields;
use crate::resources::sdk::{self, op};
use crate::resources::Env;
use crate::state::{Phase, Record};

const KIND: &str = "S3 bucket";
const EXPIRY: &str = "expire_input_after_days";
/// The lifecycle rule's id: iotreg's own rule, told apart from any other on a bucket.
const RULE_ID: &str = "iotreg-bulk-input-expiry";
/// Recorded when iotreg created the bucket (and so deletes it).
const OWNED: &str = "created_by_iotreg";

pub struct BulkBucket(pub Arc<Env>);

/// The live bucket: it exists, with its lifecycle rule's expiry (None: no such rule).
pub struct LiveBucket {
    expiry_days: Option<i32>,
}

impl BulkBucket {
    fn spec(&self) -> &BulkSpec {
        &self.0.d.bulk
    }
}

impl Meta for BulkBucket {
    fn key(&self) -> &str {
        BULK_BUCKET
    }
    fn kind(&self) -> &str {
        KIND
    }
    fn name(&self) -> String {
        self.spec().bucket.clone()
    }
    fn depends_on(&self) -> &[&'static str] {
        &[]
    }
    fn delete_note(&self) -> String {
        "fleet.mode is no longer \"bulk\"".into()
    }
}

#[async_trait::async_trait]
impl Kind for BulkBucket {
    type Live = LiveBucket;

    fn desired(&self, _cx: &Ctx) -> Fields {
        let mut f = Fields::new();
        if self.spec().own_bucket {
            f.insert(EXPIRY.into(), self.spec().expire_days.into());
        }
        f
    }

    async fn read(&self, _cx: &Ctx) -> Result<Option<LiveBucket>, StepError> {
        let s3 = &self.0.aws.s3;
        let name = &self.spec().bucket;
        let head = sdk::find(
            op(KIND, name, "HeadBucket"),
            s3.head_bucket().bucket(name).send(),
            |e| e.is_not_found(),
        )
        .await?;
        if head.is_none() {
            return Ok(None);
        }
        if !self.spec().own_bucket {
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
                .find(|r| r.id() == Some(RULE_ID) && r.status() == &ExpirationStatus::Enabled)
                .and_then(|r| r.expiration())
                .and_then(|e| e.days())
        });
        Ok(Some(LiveBucket { expiry_days }))
    }

    fn fields(&self, live: &LiveBucket) -> Fields {
        let mut f = Fields::new();
        if self.spec().own_bucket {
            f.insert(
                EXPIRY.into(),
                live.expiry_days
                    .map(serde_json::Value::from)
                    .unwrap_or_default(),
            );
        }
        f
    }

    fn identify(&self, _live: &LiveBucket) -> String {
        format!("s3://{}", self.spec().bucket)
    }

    /// A bucket named in the config is the user's: found, it is used, never owned.
    fn adopts_unowned(&self) -> bool {
        !self.spec().own_bucket
    }

    fn shared(&self) -> bool {
        !self.spec().own_bucket
    }

    async fn apply(&self, cx: &Ctx, step: Step<LiveBucket>) -> Result<Outcome, StepError> {
        let s3 = &self.0.aws.s3;
        let spec = self.spec();
        let name = &spec.bucket;
        let record = |owned: bool| {
            let mut rec = Record::new(BULK_BUCKET, KIND, Phase::Created, name);
            rec.arn = Some(format!("arn:{}:s3:::{name}", self.0.d.partition));
            rec.data.insert(OWNED.into(), owned.into());
            rec.data.insert("prefix".into(), spec.prefix.clone().into());
            rec
        };
        let Some(live) = &step.live else {
            if !spec.own_bucket {
                return Err(StepError::Failed(format!(
                    "{KIND} {name:?} (fleet.bulk_bucket) does not exist: create it, or leave fleet.bulk_bucket unset for iotreg to make one"
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
        let updated = if spec.own_bucket && live.expiry_days != Some(spec.expire_days) {
            self.put_lifecycle().await?;
            Some(step.summary())
        } else {
            None
        };
        let outcome = step.outcome(updated);
        let mut rec = record(spec.own_bucket);
        rec.intent_at_ms = step.record.as_ref().and_then(|r| r.intent_at_ms);
        cx.save(step.record.as_ref(), rec)?;
        Ok(outcome)
    }

    fn check_name(&self) -> &'static str {
        "bulk.bucket"
    }

    async fn destroy(&self, cx: &Ctx) -> Result<Outcome, StepError> {
        let Some(rec) = cx.record(BULK_BUCKET) else {
            cx.forget(BULK_TASK)?;
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
        // The bulk run's record names objects in this bucket: nothing to resume any more.
        cx.forget(BULK_TASK)?;
        cx.forget(BULK_BUCKET)?;
        Ok(outcome)
    }
}

impl BulkBucket {
    async fn put_lifecycle(&self) -> Result<(), StepError> {
        let spec = self.spec();
        let rule = LifecycleRule::builder()
            .id(RULE_ID)
            .filter(LifecycleRuleFilter::builder().prefix(&spec.prefix).build())
            .status(ExpirationStatus::Enabled)
            .expiration(
                LifecycleExpiration::builder()
                    .days(spec.expire_days)
                    .build(),
            )
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: lifecycle rule: {e}")))?;
        let config = BucketLifecycleConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| StepError::Failed(format!("{KIND}: lifecycle configuration: {e}")))?;
        sdk::send(
            op(KIND, &spec.bucket, "PutBucketLifecycleConfiguration"),
            self.0
                .aws
                .s3
                .put_bucket_lifecycle_configuration()
                .bucket(&spec.bucket)
                .lifecycle_configuration(config)
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Deletes every object (under `prefix`); false when the bucket does not exist.
    async fn delete_objects(&self, bucket: &str, prefix: Option<&str>) -> Result<bool, StepError> {
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
            // endpoints do not check the same way, and a bulk run leaves a handful of objects.
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

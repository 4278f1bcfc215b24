//! A fleet's live state read in pages: the calls AWS answers with up to 250 records each
//! (ListThings by thing type, ListCertificates, ListTargetsForPolicy, ListThingsInThingGroup)
//! and Fleet Indexing's SearchIndex (shadows and connectivity, 100 things a page) when the
//! account's index has them. A device's resources read from this view instead of one call
//! each; what no page returns (a certificate's attachment to its thing, a certificate's PEM)
//! is read per device, for the sampled devices only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use aws_sdk_iot::operation::describe_thing::DescribeThingOutput;
use aws_sdk_iot::types::{
    CertificateDescription, CertificateStatus, ThingConnectivityIndexingMode, ThingIndexingMode,
};
use serde_json::Value;

use crate::engine::StepError;
use crate::resources::sdk::{self, op};
use crate::resources::{Env, CERTIFICATE, GROUP_MEMBERSHIP, POLICY_ATTACHMENT, SHADOW, THING};

/// The index Fleet Indexing keeps of things.
pub const INDEX: &str = "AWS_Things";
/// Page sizes: AWS's maximum for each call.
const LIST_PAGE: i32 = 250;
const SEARCH_PAGE: i32 = 100;

const KIND: &str = "fleet";

/// What a page said of one resource of one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Paged<T> {
    /// Listed, as here.
    Found(T),
    /// The page that would list it does not: it does not exist (or is not attached).
    Absent,
    /// No page covers it: read it per device.
    Unread,
}

/// A thing's connectivity as the index has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Connectivity {
    pub connected: bool,
    /// Epoch milliseconds of the last connect or disconnect; None when never connected.
    pub timestamp_ms: Option<i64>,
}

/// One thing's index document: what iotreg uses of it.
#[derive(Debug, Clone, Default)]
struct IndexDoc {
    /// The classic shadow as the index has it (`{"desired":…, "reported":…, …}`); None: no
    /// shadow.
    shadow: Option<Value>,
    connectivity: Option<Connectivity>,
}

/// A listed thing: what ListThings returns.
#[derive(Debug, Clone)]
struct ListedThing {
    arn: Option<String>,
    thing_type: Option<String>,
    attributes: HashMap<String, String>,
}

/// What the index holds for the fleet's things (None fields: that part is not indexed).
#[derive(Debug, Default)]
struct Index {
    shadows: bool,
    connectivity: bool,
    docs: HashMap<String, IndexDoc>,
}

/// The fleet's live state from pages.
#[derive(Debug, Default)]
pub struct FleetView {
    things: HashMap<String, ListedThing>,
    /// Certificates by id: ARN and status (every certificate of the account).
    certificates: HashMap<String, (String, CertificateStatus)>,
    /// The certificates (and other targets) the device policy is attached to; None when the
    /// policy goes on the group instead.
    policy_targets: Option<HashSet<String>>,
    /// The fleet group's members; None without a group.
    group_members: Option<HashSet<String>>,
    index: Option<Index>,
    /// Calls made to build it, by operation.
    pub calls: BTreeMap<&'static str, usize>,
    /// What the view could not cover and why (an index still building).
    pub notes: Vec<String>,
}

/// Counts calls as they are made (the pages run concurrently).
#[derive(Default)]
struct Calls(Mutex<BTreeMap<&'static str, usize>>);

impl Calls {
    fn one(&self, call: &'static str) {
        *self.0.lock().expect("calls").entry(call).or_insert(0) += 1;
    }
}

impl FleetView {
    /// Reads every page, the listings concurrently (each paced by its own rate limit).
    pub async fn read(env: &Env) -> Result<FleetView, StepError> {
        let calls = Calls::default();
        let d = &env.d;
        let group_policy = d.group.as_ref().is_some_and(|g| g.policy);
        let (things, certificates, targets, members, index) = tokio::try_join!(
            list_things(env, &calls),
            list_certificates(env, &calls),
            async {
                if group_policy {
                    Ok(None)
                } else {
                    list_policy_targets(env, &calls, &d.policy.name)
                        .await
                        .map(Some)
                }
            },
            async {
                match &d.group {
                    Some(g) => list_group(env, &calls, &g.name).await.map(Some),
                    None => Ok(None),
                }
            },
            search_index(env, &calls),
        )?;
        let (index, notes) = index;
        Ok(FleetView {
            things,
            certificates,
            policy_targets: targets,
            group_members: members,
            index,
            calls: calls.0.into_inner().expect("calls"),
            notes,
        })
    }

    /// The thing as DescribeThing would describe it, from its listing; Unread when the
    /// listing of the fleet's thing type does not have it (gone, or of another type: one
    /// DescribeThing tells).
    pub fn thing(&self, name: &str, id: Option<String>) -> Paged<DescribeThingOutput> {
        match self.things.get(name) {
            Some(t) => Paged::Found(
                DescribeThingOutput::builder()
                    .thing_name(name)
                    .set_thing_arn(t.arn.clone())
                    .set_thing_type_name(t.thing_type.clone())
                    .set_thing_id(id)
                    .set_attributes(Some(t.attributes.clone()))
                    .build(),
            ),
            None => Paged::Unread,
        }
    }

    /// The certificate with this id as listed (no PEM: ListCertificates has none); Absent
    /// when no longer listed (deleted).
    pub fn certificate(&self, id: &str) -> Paged<CertificateDescription> {
        match self.certificates.get(id) {
            Some((arn, status)) => Paged::Found(
                CertificateDescription::builder()
                    .certificate_id(id)
                    .certificate_arn(arn)
                    .status(status.clone())
                    .build(),
            ),
            None => Paged::Absent,
        }
    }

    /// Whether the device policy is attached to this certificate.
    pub fn policy_attached(&self, certificate_arn: &str) -> Paged<()> {
        match &self.policy_targets {
            Some(t) if t.contains(certificate_arn) => Paged::Found(()),
            Some(_) => Paged::Absent,
            None => Paged::Unread,
        }
    }

    /// Whether the thing is a member of the fleet's group.
    pub fn member(&self, thing: &str) -> Paged<()> {
        match &self.group_members {
            Some(m) if m.contains(thing) => Paged::Found(()),
            Some(_) => Paged::Absent,
            None => Paged::Unread,
        }
    }

    /// The thing's classic shadow, as GetThingShadow's document (`{"state": {"desired": …,
    /// "reported": …}, …}`), when the index has shadows.
    pub fn shadow(&self, thing: &str) -> Paged<Value> {
        let Some(index) = self.index.as_ref().filter(|i| i.shadows) else {
            return Paged::Unread;
        };
        // A thing missing from the index (created a moment ago, the index is eventually
        // consistent) is read per device rather than taken for shadowless.
        let Some(doc) = index.docs.get(thing) else {
            return Paged::Unread;
        };
        match &doc.shadow {
            Some(s) => Paged::Found(serde_json::json!({
                "state": {
                    "desired": s.get("desired").cloned().unwrap_or(Value::Null),
                    "reported": s.get("reported").cloned().unwrap_or(Value::Null),
                },
                "version": s.get("version").cloned().unwrap_or(Value::Null),
            })),
            None => Paged::Absent,
        }
    }

    /// Whether the pages say everything about the resource `key` of a device found in them
    /// (so that device needs no call of its own for it).
    pub fn covers(&self, key: &str) -> bool {
        match key {
            THING | CERTIFICATE => true,
            POLICY_ATTACHMENT => self.policy_targets.is_some(),
            GROUP_MEMBERSHIP => self.group_members.is_some(),
            SHADOW => self.has_shadows(),
            _ => false,
        }
    }

    /// Whether the pages cover the shadows (the index has them).
    pub fn has_shadows(&self) -> bool {
        self.index.as_ref().is_some_and(|i| i.shadows)
    }

    /// The thing's connectivity, when the index has connectivity.
    pub fn connectivity(&self, thing: &str) -> Option<Connectivity> {
        let index = self.index.as_ref().filter(|i| i.connectivity)?;
        Some(
            index
                .docs
                .get(thing)
                .and_then(|d| d.connectivity.clone())
                .unwrap_or(Connectivity {
                    connected: false,
                    timestamp_ms: None,
                }),
        )
    }

    /// Whether the index has connectivity.
    pub fn has_connectivity(&self) -> bool {
        self.index.as_ref().is_some_and(|i| i.connectivity)
    }

    /// Whether the index has the thing (for the counts over the index's documents).
    pub fn indexed(&self, thing: &str) -> bool {
        self.index
            .as_ref()
            .is_some_and(|i| i.docs.contains_key(thing))
    }

    /// The thing's shadow as the index has it (`{"desired":…,"reported":…}`).
    pub fn indexed_shadow(&self, thing: &str) -> Option<&Value> {
        self.index.as_ref()?.docs.get(thing)?.shadow.as_ref()
    }

    /// The calls made, e.g. `ListThings 8, ListCertificates 9, SearchIndex 20`.
    pub fn calls_text(&self) -> String {
        self.calls
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn total_calls(&self) -> usize {
        self.calls.values().sum()
    }
}

async fn list_things(env: &Env, calls: &Calls) -> Result<HashMap<String, ListedThing>, StepError> {
    let ty = &env.d.thing_type.name;
    let mut out = HashMap::new();
    let pages = env.aws.iot.list_things().thing_type_name(ty);
    sdk::each_page(
        op(KIND, ty, "ListThings"),
        pages.max_results(LIST_PAGE).into_paginator().send(),
        |_| false,
        |page| {
            calls.one("ListThings");
            for t in page.things() {
                let Some(name) = t.thing_name() else { continue };
                out.insert(
                    name.to_string(),
                    ListedThing {
                        arn: t.thing_arn().map(str::to_string),
                        thing_type: t.thing_type_name().map(str::to_string),
                        attributes: t.attributes().cloned().unwrap_or_default(),
                    },
                );
            }
        },
    )
    .await?;
    Ok(out)
}

async fn list_certificates(
    env: &Env,
    calls: &Calls,
) -> Result<HashMap<String, (String, CertificateStatus)>, StepError> {
    let mut out = HashMap::new();
    sdk::each_page(
        op(KIND, "certificates", "ListCertificates"),
        env.aws
            .iot
            .list_certificates()
            .page_size(LIST_PAGE)
            .into_paginator()
            .send(),
        |_| false,
        |page| {
            calls.one("ListCertificates");
            for c in page.certificates() {
                if let (Some(id), Some(arn), Some(status)) =
                    (c.certificate_id(), c.certificate_arn(), c.status())
                {
                    out.insert(id.to_string(), (arn.to_string(), status.clone()));
                }
            }
        },
    )
    .await?;
    Ok(out)
}

/// The targets the policy is attached to (none when there is no such policy).
async fn list_policy_targets(
    env: &Env,
    calls: &Calls,
    policy: &str,
) -> Result<HashSet<String>, StepError> {
    let mut out = HashSet::new();
    let pages = env.aws.iot.list_targets_for_policy().policy_name(policy);
    sdk::each_page(
        op(KIND, policy, "ListTargetsForPolicy"),
        pages.page_size(LIST_PAGE).into_paginator().send(),
        |e| e.is_resource_not_found_exception(),
        |page| {
            calls.one("ListTargetsForPolicy");
            out.extend(page.targets().iter().cloned());
        },
    )
    .await?;
    Ok(out)
}

/// The group's members (none when there is no such group).
async fn list_group(env: &Env, calls: &Calls, group: &str) -> Result<HashSet<String>, StepError> {
    let mut out = HashSet::new();
    let pages = env
        .aws
        .iot
        .list_things_in_thing_group()
        .thing_group_name(group);
    sdk::each_page(
        op(KIND, group, "ListThingsInThingGroup"),
        pages.max_results(LIST_PAGE).into_paginator().send(),
        |e| e.is_resource_not_found_exception(),
        |page| {
            calls.one("ListThingsInThingGroup");
            out.extend(page.things().iter().cloned());
        },
    )
    .await?;
    Ok(out)
}

/// The fleet's index documents, when the account indexes shadows or connectivity; with the
/// reason when it cannot be used (not built yet).
async fn search_index(env: &Env, calls: &Calls) -> Result<(Option<Index>, Vec<String>), StepError> {
    calls.one("GetIndexingConfiguration");
    let config = sdk::send(
        op(KIND, INDEX, "GetIndexingConfiguration"),
        env.aws.iot.get_indexing_configuration().send(),
    )
    .await?;
    let thing = config.thing_indexing_configuration();
    let shadows =
        thing.is_some_and(|t| t.thing_indexing_mode() == &ThingIndexingMode::RegistryAndShadow);
    let connectivity = thing.is_some_and(|t| {
        t.thing_connectivity_indexing_mode() == Some(&ThingConnectivityIndexingMode::Status)
    });
    if !shadows && !connectivity {
        return Ok((None, Vec::new()));
    }
    let ty = &env.d.thing_type.name;
    let query = format!("thingTypeName:{ty}");
    let mut docs = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        calls.one("SearchIndex");
        let res = {
            crate::ratelimit::acquire("SearchIndex").await;
            env.aws
                .iot
                .search_index()
                .index_name(INDEX)
                .query_string(&query)
                .max_results(SEARCH_PAGE)
                .set_next_token(token.take())
                .send()
                .await
        };
        let page = match res {
            Ok(p) => p,
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_index_not_ready_exception() || e.is_resource_not_found_exception()
                }) =>
            {
                // Indexing was just turned on: AWS builds the index first. Until then the
                // shadows and connectivity are read per device, for the sample.
                return Ok((
                    None,
                    vec![format!(
                        "the fleet index is not ready yet ({}): shadows read per device, connectivity not counted",
                        aws_smithy_types::error::display::DisplayErrorContext(&e)
                    )],
                ));
            }
            Err(e) => return Err(crate::aws::failed(KIND, &query, "SearchIndex", e)),
        };
        for t in page.things() {
            let Some(name) = t.thing_name() else { continue };
            // Only what is compared: the per-key metadata would multiply a fleet's memory.
            let shadow = t
                .shadow()
                .filter(|_| shadows)
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .map(|mut s| {
                    if let Some(o) = s.as_object_mut() {
                        o.retain(|k, _| matches!(k.as_str(), "desired" | "reported" | "version"));
                    }
                    s
                });
            let conn = t
                .connectivity()
                .filter(|_| connectivity)
                .map(|c| Connectivity {
                    connected: c.connected().unwrap_or(false),
                    timestamp_ms: c.timestamp(),
                });
            docs.insert(
                name.to_string(),
                IndexDoc {
                    shadow,
                    connectivity: conn,
                },
            );
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok((
        Some(Index {
            shadows,
            connectivity,
            docs,
        }),
        Vec::new(),
    ))
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::get_indexing_configuration::GetIndexingConfigurationOutput;
    use aws_sdk_iot::operation::list_certificates::ListCertificatesOutput;
    use aws_sdk_iot::operation::list_targets_for_policy::ListTargetsForPolicyOutput;
    use aws_sdk_iot::operation::list_things::ListThingsOutput;
    use aws_sdk_iot::operation::search_index::{SearchIndexError, SearchIndexOutput};
    use aws_sdk_iot::types::{
        Certificate, ThingAttribute, ThingConnectivity, ThingDocument, ThingIndexingConfiguration,
    };
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::resources::testing::harness;

    /// ListThings in two pages: sensor-1 on the first, sensor-2 on the second.
    fn things() -> [Rule; 2] {
        let thing = |n: &str, line: &str| {
            ThingAttribute::builder()
                .thing_name(n)
                .thing_type_name("sensor-type")
                .thing_arn(format!("arn:aws:iot:us-east-1:123456789012:thing/{n}"))
                .attributes("line", line)
                .build()
        };
        let first = mock!(aws_sdk_iot::Client::list_things)
            .match_requests(|r| r.next_token().is_none() && r.max_results() == Some(250))
            .then_output(move || {
                ListThingsOutput::builder()
                    .things(thing("sensor-1", "L1"))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(aws_sdk_iot::Client::list_things)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_output(move || {
                ListThingsOutput::builder()
                    .things(thing("sensor-2", "L2"))
                    .build()
            });
        [first, second]
    }

    fn certificates() -> Rule {
        mock!(aws_sdk_iot::Client::list_certificates).then_output(|| {
            ListCertificatesOutput::builder()
                .certificates(
                    Certificate::builder()
                        .certificate_id("c1")
                        .certificate_arn("arn:cert/c1")
                        .status(CertificateStatus::Inactive)
                        .build(),
                )
                .build()
        })
    }

    fn targets() -> Rule {
        mock!(aws_sdk_iot::Client::list_targets_for_policy).then_output(|| {
            ListTargetsForPolicyOutput::builder()
                .targets("arn:cert/c1")
                .build()
        })
    }

    fn indexing(mode: ThingIndexingMode) -> Rule {
        mock!(aws_sdk_iot::Client::get_indexing_configuration).then_output(move || {
            GetIndexingConfigurationOutput::builder()
                .thing_indexing_configuration(
                    ThingIndexingConfiguration::builder()
                        .thing_indexing_mode(mode.clone())
                        .thing_connectivity_indexing_mode(ThingConnectivityIndexingMode::Status)
                        .build()
                        .unwrap(),
                )
                .build()
        })
    }

    #[tokio::test]
    async fn a_fleet_is_read_in_pages_and_each_device_found_in_them() {
        let [t1, t2] = things();
        let (certs, targets, idx) = (
            certificates(),
            targets(),
            indexing(ThingIndexingMode::RegistryAndShadow),
        );
        let search = mock!(aws_sdk_iot::Client::search_index)
            .match_requests(|r| {
                r.index_name() == Some(INDEX)
                    && r.query_string() == Some("thingTypeName:sensor-type")
                    && r.max_results() == Some(100)
            })
            .then_output(|| {
                SearchIndexOutput::builder()
                    .things(
                        ThingDocument::builder()
                            .thing_name("sensor-1")
                            .shadow(r#"{"desired":{"a":1},"reported":{"a":2},"version":3}"#)
                            .connectivity(
                                ThingConnectivity::builder()
                                    .connected(true)
                                    .timestamp(1_700_000_000_000)
                                    .build(),
                            )
                            .build(),
                    )
                    .things(ThingDocument::builder().thing_name("sensor-2").build())
                    .build()
            });
        let h = harness(
            &[&t1, &t2, &certs, &targets, &idx, &search],
            &[],
            &[],
            &[],
            vec![],
            |d| d.thing_type.name = "sensor-type".into(),
        );
        let v = FleetView::read(&h.env).await.unwrap();
        assert_eq!(v.calls.get("ListThings"), Some(&2), "{:?}", v.calls);
        assert_eq!(v.total_calls(), 6, "{}", v.calls_text());
        let Paged::Found(t) = v.thing("sensor-2", Some("id-2".into())) else {
            panic!("sensor-2 is on the second page");
        };
        assert_eq!(t.attributes().unwrap()["line"], "L2");
        assert_eq!(t.thing_id(), Some("id-2"));
        assert_eq!(v.thing("sensor-9", None), Paged::Unread);
        let Paged::Found(c) = v.certificate("c1") else {
            panic!("listed")
        };
        assert_eq!(c.status(), Some(&CertificateStatus::Inactive));
        assert_eq!(v.certificate("c2"), Paged::Absent);
        assert_eq!(v.policy_attached("arn:cert/c1"), Paged::Found(()));
        assert_eq!(v.policy_attached("arn:cert/c2"), Paged::Absent);
        assert_eq!(v.member("sensor-1"), Paged::Unread, "no group configured");
        let Paged::Found(doc) = v.shadow("sensor-1") else {
            panic!("indexed shadow")
        };
        assert_eq!(doc["state"]["desired"]["a"], 1);
        assert_eq!(
            v.shadow("sensor-2"),
            Paged::Absent,
            "indexed without a shadow"
        );
        assert_eq!(v.shadow("sensor-3"), Paged::Unread, "not indexed yet");
        assert!(v.connectivity("sensor-1").unwrap().connected);
        assert_eq!(v.connectivity("sensor-2").unwrap().timestamp_ms, None);
        assert!(v.covers(SHADOW) && v.covers(POLICY_ATTACHMENT) && !v.covers(GROUP_MEMBERSHIP));
    }

    #[tokio::test]
    async fn an_index_still_building_leaves_shadows_to_the_sample() {
        let [t1, t2] = things();
        let (certs, targets, idx) = (
            certificates(),
            targets(),
            indexing(ThingIndexingMode::RegistryAndShadow),
        );
        let search = mock!(aws_sdk_iot::Client::search_index).then_error(|| {
            SearchIndexError::IndexNotReadyException(
                aws_sdk_iot::types::error::IndexNotReadyException::builder()
                    .message("index is building")
                    .build(),
            )
        });
        let h = harness(
            &[&t1, &t2, &certs, &targets, &idx, &search],
            &[],
            &[],
            &[],
            vec![],
            |_| {},
        );
        let v = FleetView::read(&h.env).await.unwrap();
        assert!(!v.has_shadows() && !v.covers(SHADOW));
        assert_eq!(v.shadow("sensor-1"), Paged::Unread);
        assert!(v.notes[0].contains("not ready"), "{:?}", v.notes);
    }

    #[tokio::test]
    async fn without_the_index_no_search_is_made() {
        let [t1, t2] = things();
        let (certs, targets, idx) = (certificates(), targets(), indexing(ThingIndexingMode::Off));
        // Connectivity alone (STATUS needs registry indexing on AWS; here only the modes
        // matter): shadows are not in the index.
        let search = mock!(aws_sdk_iot::Client::search_index)
            .then_output(|| SearchIndexOutput::builder().build());
        let h = harness(
            &[&t1, &t2, &certs, &targets, &idx, &search],
            &[],
            &[],
            &[],
            vec![],
            |_| {},
        );
        let v = FleetView::read(&h.env).await.unwrap();
        assert!(!v.has_shadows());
        assert!(v.has_connectivity());
    }
}

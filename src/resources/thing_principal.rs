//! The certificate → thing attachment: the device certificate's link to its thing.

use std::sync::Arc;

use super::link::{CertificateLink, Target};
use super::sdk::{self, op};
use super::{Env, CERTIFICATE, THING, THING_PRINCIPAL};
use crate::engine::StepError;

const KIND: &str = "thing attachment";

/// The thing the certificate is attached to.
pub struct ToThing(pub Arc<Env>);

pub type ThingPrincipal = CertificateLink<ToThing>;

pub fn new(env: Arc<Env>) -> ThingPrincipal {
    CertificateLink(ToThing(env))
}

#[async_trait::async_trait]
impl Target for ToThing {
    const KEY: &'static str = THING_PRINCIPAL;
    const KIND: &'static str = KIND;
    const CHECK: &'static str = "certificate.attached_to_thing";

    fn name(&self) -> String {
        format!("certificate → {}", self.0.d.thing.name)
    }
    fn depends_on(&self) -> &'static [&'static str] {
        &[THING, CERTIFICATE]
    }

    async fn attached(&self, cert: &str, name: &str) -> Result<bool, StepError> {
        let principals = sdk::find(
            op(KIND, name, "ListThingPrincipals"),
            self.0
                .aws
                .iot
                .list_thing_principals()
                .thing_name(&self.0.d.thing.name)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(principals.is_some_and(|p| p.principals().iter().any(|c| c == cert)))
    }

    async fn attach(&self, cert: &str, name: &str) -> Result<(), StepError> {
        sdk::send(
            op(KIND, name, "AttachThingPrincipal"),
            self.0
                .aws
                .iot
                .attach_thing_principal()
                .thing_name(&self.0.d.thing.name)
                .principal(cert)
                .send(),
        )
        .await?;
        Ok(())
    }

    async fn detach(&self, cert: &str, name: &str) -> Result<bool, StepError> {
        let detached = sdk::find(
            op(KIND, name, "DetachThingPrincipal"),
            self.0
                .aws
                .iot
                .detach_thing_principal()
                .thing_name(&self.0.d.thing.name)
                .principal(cert)
                .send(),
            |e| e.is_resource_not_found_exception(),
        )
        .await?;
        Ok(detached.is_some())
    }

    fn says(&self, attached: bool) -> String {
        let thing = &self.0.d.thing.name;
        if attached {
            format!("the certificate is attached to {thing}")
        } else {
            format!("the certificate is not attached to {thing}")
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_iot::operation::attach_thing_principal::AttachThingPrincipalOutput;
    use aws_sdk_iot::operation::list_thing_principals::ListThingPrincipalsOutput;
    use aws_smithy_mocks::{mock, Rule};

    use super::*;
    use crate::resources::link::tests::{Fixture, CERT};

    const THING_NAME: &str = "temperature-sensor-abc123";

    /// ListThingPrincipals on the thing: our certificate among them, or another one only.
    fn listed(attached: bool) -> Rule {
        mock!(aws_sdk_iot::Client::list_thing_principals)
            .match_requests(|r| r.thing_name() == Some(THING_NAME))
            .then_output(move || {
                let principal = if attached {
                    CERT
                } else {
                    "arn:aws:iot:us-east-1:123456789012:cert/other"
                };
                ListThingPrincipalsOutput::builder()
                    .principals(principal)
                    .build()
            })
    }

    fn attach() -> Rule {
        mock!(aws_sdk_iot::Client::attach_thing_principal)
            .match_requests(|r| r.thing_name() == Some(THING_NAME) && r.principal() == Some(CERT))
            .then_output(|| AttachThingPrincipalOutput::builder().build())
    }

    const FIXTURE: Fixture<ToThing> = Fixture {
        make: new,
        listed,
        attach,
        name: "certificate → temperature-sensor-abc123",
        says: [
            "the certificate is attached to temperature-sensor-abc123",
            "the certificate is not attached to temperature-sensor-abc123",
        ],
    };

    crate::resources::link::tests::link_tests!(FIXTURE);
}

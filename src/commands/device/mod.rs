//! `iotreg device …`: acting as a device, with the certificate and key `up` wrote. What the
//! three commands share: the deployment's devices from the state, the endpoint (configured,
//! or DescribeEndpoint), AWS credentials for WebSockets, and the rendered device policy.
//!
//! Nothing here asks AWS anything it does not need: with the endpoint configured, MQTT and
//! HTTPS need no AWS credentials at all, as on a device.

pub mod bundle;
pub mod provision;
pub mod publish;
pub mod simulate;
pub mod simulate_jobs;

use anyhow::Result;
use aws_credential_types::provider::ProvideCredentials;

use super::ExitStatus;
use crate::aws::{self, Clients};
use crate::device::{sigv4::Signer, DeviceError, DeviceFiles, Endpoint, Protocol, Roster};
use crate::engine::StepError;
use crate::output::Progress;
use crate::settings::{BadInput, DeviceAction, Settings};
use crate::state::State;

pub async fn run(
    settings: &Settings,
    progress: &Progress,
    action: &DeviceAction,
) -> Result<ExitStatus> {
    match action {
        DeviceAction::Bundle { thing, out } => {
            bundle::bundle(settings, progress, thing.as_deref(), out).await
        }
        DeviceAction::Publish {
            thing,
            protocol,
            message,
        } => {
            publish::publish(
                settings,
                progress,
                thing.as_deref(),
                *protocol,
                message.as_deref(),
            )
            .await
        }
        DeviceAction::Simulate(options) if options.claim => {
            provision::simulate(settings, progress, options).await
        }
        DeviceAction::Simulate(options) => match &options.jobs {
            Some(jobs) => simulate_jobs::simulate(settings, progress, options, jobs).await,
            None => simulate::simulate(settings, progress, options).await,
        },
        DeviceAction::Provision { serial, thing } => {
            provision::provision(settings, progress, serial, thing.as_deref()).await
        }
    }
}

/// A device error as the commands report it: bad input (exit 2) or a failure (exit 1).
pub fn device_error(e: DeviceError) -> anyhow::Error {
    if e.is_bad_input() {
        anyhow::Error::new(BadInput(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

/// The deployment as a device command sees it: read from the state file, no lock (nothing
/// is written), and AWS only when asked.
pub struct Deployed<'a> {
    settings: &'a Settings,
    pub state: State,
    pub roster: Roster,
}

impl<'a> Deployed<'a> {
    pub async fn load(settings: &'a Settings) -> Result<Deployed<'a>> {
        let state = super::read_unlocked(settings).await?.ok_or_else(|| {
            BadInput(format!(
                "nothing deployed: {} does not exist; run `iotreg up` first",
                settings.state
            ))
        })?;
        Ok(Deployed::new(settings, state))
    }

    /// The deployment of a state already loaded (verify has it).
    pub fn new(settings: &'a Settings, state: State) -> Deployed<'a> {
        let roster = Roster {
            single: state.get(crate::resources::THING).map(|r| r.name.clone()),
            fleet: state.devices.keys().cloned().collect(),
        };
        Deployed {
            settings,
            state,
            roster,
        }
    }

    /// One device's files, by name or as the only one.
    pub fn device(&self, thing: Option<&str>) -> Result<DeviceFiles> {
        let name = self.roster.pick(thing).map_err(device_error)?;
        Ok(DeviceFiles::for_thing(&self.settings.key_dir, &name))
    }

    /// The device policy as deployed for this state (rendered from the same template `up`
    /// used, for the state's region and account).
    pub fn policy(&self) -> Result<serde_json::Value> {
        let vars = crate::settings::template_vars(
            &self.settings.config,
            &self.state.suffix,
            &self.state.region,
            &self.state.account,
        );
        Ok(self
            .settings
            .device_policy(&vars)
            .map_err(|e| BadInput(e.to_string()))?)
    }

    /// The SDK configuration, in the state's region unless one is given.
    async fn sdk(&self) -> aws_types::SdkConfig {
        let mut remote = self.settings.remote.clone();
        remote
            .region
            .get_or_insert_with(|| self.state.region.clone());
        aws::sdk_config(&remote).await
    }

    /// The gateway: configured (`device.endpoint`, `IOTREG_DEVICE_ENDPOINT`), else the account's
    /// `iot:Data-ATS` endpoint.
    pub async fn endpoint(&self, progress: &Progress) -> Result<Endpoint> {
        let d = &self.settings.device;
        if let Some(host) = &d.endpoint {
            return Ok(d.endpoint_at(host.clone()));
        }
        let clients = Clients::new(&self.sdk().await);
        match clients.data_endpoint().await {
            Ok(host) => {
                progress.debug(&format!("device endpoint (DescribeEndpoint iot:Data-ATS): {host}"));
                Ok(d.endpoint_at(host))
            }
            Err(StepError::Aws(f)) if f.is_credentials_problem() => Err(BadInput(format!(
                "the device endpoint is not configured (device.endpoint or IOTREG_DEVICE_ENDPOINT) and looking it up needs AWS credentials: {f}"
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// What signs WebSocket URLs: the standard chain's credentials, for WSS only.
    pub async fn signer(&self, protocol: Protocol) -> Result<Option<Signer>> {
        if protocol != Protocol::Wss {
            return Ok(None);
        }
        let sdk = self.sdk().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| self.state.region.clone());
        let provider = sdk.credentials_provider().ok_or_else(|| {
            device_error(DeviceError::Credentials(
                "no credentials provider is configured".into(),
            ))
        })?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| device_error(DeviceError::Credentials(e.to_string())))?;
        Ok(Some(Signer::new(credentials, region)))
    }
}

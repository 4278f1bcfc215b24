//! An MQTT session as the device: connect (TLS with the device certificate, ALPN on the HTTPS
//! port, or a SigV4-signed WebSocket), publish at QoS 1 and wait for the PUBACK, subscribe
//! and wait for the SUBACK, and the shadow's update/accepted/rejected/delta exchange.
//!
//! The event loop is driven by the operation that waits (no background task): every wait has
//! a deadline, messages that arrive meanwhile are kept for whoever asks for them, and once the
//! connection has failed the session stays failed (rumqttc would otherwise reconnect on the
//! next poll, hiding the refusal).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions,
    NetworkOptions, Outgoing, QoS, StateError, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};

use super::{sigv4, tls, DeviceError, DeviceFiles, Endpoint, Protocol, ALPN_MQTT};

/// AWS IoT's largest message (128 KB), so a whole shadow document always fits.
const MAX_PACKET: usize = 128 * 1024;
/// AWS IoT accepts 30 to 1200 seconds; pings go out while an operation waits or idles.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A message received on a subscribed topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

pub struct Session {
    client: AsyncClient,
    events: EventLoop,
    thing: String,
    /// `host:port`, as errors name it.
    endpoint: String,
    timeout: Duration,
    inbox: VecDeque<Message>,
    /// Set once the connection has failed: every later operation reports it.
    failed: Option<String>,
    shadow_subscribed: bool,
    tokens: u64,
}

/// What a session is doing when the connection fails: says what the failure means.
#[derive(Debug, Clone, Copy)]
enum Stage<'a> {
    Connect,
    After(&'a str),
}

impl Session {
    /// Connects as `files.thing`'s device with client id `client_id`. `signer` is needed for
    /// [`Protocol::Wss`] only (the other protocols present the device's certificate).
    pub async fn connect(
        endpoint: &Endpoint,
        files: &DeviceFiles,
        client_id: &str,
        protocol: Protocol,
        signer: Option<&sigv4::Signer>,
        timeout: Duration,
    ) -> Result<Session, DeviceError> {
        let port = endpoint.port(protocol);
        let label = endpoint.authority(port);
        let mut options = match protocol {
            Protocol::Mqtt | Protocol::Mqtt443 => {
                let identity = files.identity()?;
                let alpn = (protocol == Protocol::Mqtt443).then_some(ALPN_MQTT);
                let config = tls::client_config(&endpoint.ca, Some(&identity), alpn)?;
                let mut o = MqttOptions::new(client_id, endpoint.host.clone(), port);
                o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
                o
            }
            Protocol::Wss => {
                let signer = signer.ok_or_else(|| {
                    DeviceError::Credentials("no AWS credentials were given".into())
                })?;
                let url = signer.presign(endpoint, std::time::SystemTime::now())?;
                let config = tls::client_config(&endpoint.ca, None, None)?;
                let mut o = MqttOptions::new(client_id, url, port);
                o.set_transport(Transport::Wss(TlsConfiguration::Rustls(Arc::new(config))));
                o
            }
            Protocol::Https => {
                return Err(DeviceError::Protocol(
                    "https publishes without a session: use device::https::publish".into(),
                ))
            }
        };
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut events) = AsyncClient::new(options, 16);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(timeout.as_secs().max(1));
        events.set_network_options(network);
        let mut session = Session {
            client,
            events,
            thing: files.thing.clone(),
            endpoint: label,
            timeout,
            inbox: VecDeque::new(),
            failed: None,
            shadow_subscribed: false,
            tokens: 0,
        };
        let deadline = Instant::now() + timeout;
        let awaited = format!("CONNACK from {}", session.endpoint);
        loop {
            match session.next(deadline, &awaited, Stage::Connect).await? {
                Event::Incoming(Incoming::ConnAck(_)) => return Ok(session),
                _ => continue,
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK: the time from handing the message over to
    /// the PUBACK.
    pub async fn publish_qos1(
        &mut self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Duration, DeviceError> {
        self.usable()?;
        let started = Instant::now();
        let deadline = started + self.timeout;
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .map_err(|e| DeviceError::Protocol(format!("publish to {topic}: {e}")))?;
        let what = format!("a publish to {topic}");
        let awaited = format!("the PUBACK for {what}");
        let mut pkid = None;
        loop {
            match self.next(deadline, &awaited, Stage::After(&what)).await? {
                Event::Outgoing(Outgoing::Publish(id)) if pkid.is_none() => pkid = Some(id),
                Event::Incoming(Incoming::PubAck(ack)) if Some(ack.pkid) == pkid => {
                    return Ok(started.elapsed())
                }
                _ => {}
            }
        }
    }

    /// Subscribes at QoS 1 and waits for the SUBACK; a filter the server refuses is an error
    /// naming it.
    pub async fn subscribe(&mut self, filters: &[String]) -> Result<(), DeviceError> {
        self.usable()?;
        let deadline = Instant::now() + self.timeout;
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
            )
            .await
            .map_err(|e| DeviceError::Protocol(format!("subscribe to {filters:?}: {e}")))?;
        let what = format!("a subscribe to {}", filters.join(", "));
        let awaited = format!("the SUBACK for {what}");
        let mut pkid = None;
        loop {
            match self.next(deadline, &awaited, Stage::After(&what)).await? {
                Event::Outgoing(Outgoing::Subscribe(id)) if pkid.is_none() => pkid = Some(id),
                Event::Incoming(Incoming::SubAck(ack)) if Some(ack.pkid) == pkid => {
                    return match refused_filter(filters, &ack.return_codes) {
                        Some(filter) => {
                            self.failed = Some(format!("subscription to {filter} refused"));
                            Err(DeviceError::SubscribeRefused {
                                endpoint: self.endpoint.clone(),
                                filter,
                            })
                        }
                        None => Ok(()),
                    };
                }
                _ => {}
            }
        }
    }

    /// The shadow topics this session answers on (`update/accepted`, `update/rejected`,
    /// `update/delta`), subscribed once.
    pub fn shadow_topics(thing: &str) -> [String; 3] {
        let base = format!("$aws/things/{thing}/shadow/update");
        [
            format!("{base}/accepted"),
            format!("{base}/rejected"),
            format!("{base}/delta"),
        ]
    }

    /// The thing whose shadow topics this session uses.
    pub fn thing(&self) -> &str {
        &self.thing
    }

    pub async fn shadow_subscribe(&mut self) -> Result<(), DeviceError> {
        if !self.shadow_subscribed {
            let topics = Session::shadow_topics(&self.thing);
            self.subscribe(&topics).await?;
            self.shadow_subscribed = true;
        }
        Ok(())
    }

    /// Sets the shadow's reported state and waits for AWS's answer to this very update (by
    /// its clientToken): the accepted document, or the rejection as an error.
    pub async fn shadow_update_reported(
        &mut self,
        reported: serde_json::Value,
    ) -> Result<serde_json::Value, DeviceError> {
        self.shadow_subscribe().await?;
        self.tokens += 1;
        let token = format!("iotreg-{}-{}", self.thing, self.tokens);
        let update = format!("$aws/things/{}/shadow/update", self.thing);
        let doc = serde_json::json!({"state": {"reported": reported}, "clientToken": token});
        self.publish_qos1(&update, doc.to_string()).await?;
        let [accepted, rejected, _] = Session::shadow_topics(&self.thing);
        let deadline = Instant::now() + self.timeout;
        let awaited = format!("{accepted} or rejected for clientToken {token}");
        loop {
            let answer = self.take(|m| {
                (m.topic == accepted || m.topic == rejected)
                    && m.json()
                        .is_some_and(|j| j.get("clientToken") == Some(&token.clone().into()))
            });
            if let Some(m) = answer {
                let body = m.json().unwrap_or_default();
                return if m.topic == accepted {
                    Ok(body)
                } else {
                    Err(DeviceError::ShadowRejected {
                        thing: self.thing.clone(),
                        reason: format!(
                            "{} {}",
                            body.get("code").cloned().unwrap_or_default(),
                            body.get("message")
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                        )
                        .trim()
                        .to_string(),
                    })
                };
            }
            self.next(deadline, &awaited, Stage::After(&awaited))
                .await?;
        }
    }

    /// The next delta (its `state`: the desired fields that differ from the reported ones)
    /// within `wait`, or None if none comes.
    pub async fn wait_delta(
        &mut self,
        wait: Duration,
    ) -> Result<Option<serde_json::Value>, DeviceError> {
        self.shadow_subscribe().await?;
        let [_, _, delta] = Session::shadow_topics(&self.thing);
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.take(|m| m.topic == delta) {
                return Ok(m.json().and_then(|j| j.get("state").cloned()));
            }
            match self
                .next(
                    deadline,
                    "a shadow delta",
                    Stage::After("waiting for a delta"),
                )
                .await
            {
                Ok(_) => {}
                Err(DeviceError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next message on a subscribed topic within `wait` (oldest first), or None.
    pub async fn next_message(&mut self, wait: Duration) -> Result<Option<Message>, DeviceError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Ok(Some(m));
            }
            match self
                .next(deadline, "a message", Stage::After("waiting for a message"))
                .await
            {
                Ok(_) => {}
                Err(DeviceError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The first message (oldest first) that `wanted` picks, waiting for it until
    /// `deadline`; the others stay for whoever asks for them. A timeout names `awaited`.
    pub async fn wait_for(
        &mut self,
        wanted: impl Fn(&Message) -> bool,
        deadline: Instant,
        awaited: &str,
    ) -> Result<Message, DeviceError> {
        loop {
            if let Some(m) = self.take(&wanted) {
                return Ok(m);
            }
            self.next(deadline, awaited, Stage::After(awaited)).await?;
        }
    }

    /// Drops the received messages `unwanted` picks (notifications that are stale, answers
    /// nobody waits for), so that a long-lived session's inbox stays small.
    pub fn discard(&mut self, unwanted: impl Fn(&Message) -> bool) {
        self.inbox.retain(|m| !unwanted(m));
    }

    /// How long one operation may take (the connect timeout, `device.connect_timeout_s`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Keeps the connection alive (pings, incoming messages kept) for `wait`.
    pub async fn idle(&mut self, wait: Duration) -> Result<(), DeviceError> {
        self.usable()?;
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline, "idle", Stage::After("idling")).await {
                Ok(_) => {}
                Err(DeviceError::Timeout { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends DISCONNECT and waits (bounded) for it to go out.
    pub async fn disconnect(mut self) -> Result<(), DeviceError> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.client
            .disconnect()
            .await
            .map_err(|e| DeviceError::Protocol(format!("disconnect: {e}")))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self
                .next(deadline, "DISCONNECT to go out", Stage::After("DISCONNECT"))
                .await
            {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                // Closed by the server after our DISCONNECT is what should happen.
                Err(DeviceError::Closed { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn usable(&self) -> Result<(), DeviceError> {
        match &self.failed {
            Some(why) => Err(DeviceError::Protocol(format!(
                "the session with {} has failed already ({why})",
                self.endpoint
            ))),
            None => Ok(()),
        }
    }

    fn take(&mut self, wanted: impl Fn(&Message) -> bool) -> Option<Message> {
        let at = self.inbox.iter().position(wanted)?;
        self.inbox.remove(at)
    }

    /// The next event before `deadline`. Incoming messages are kept in the inbox; a failure
    /// ends the session.
    async fn next(
        &mut self,
        deadline: Instant,
        awaited: &str,
        stage: Stage<'_>,
    ) -> Result<Event, DeviceError> {
        self.usable()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = self.timeout;
        match tokio::time::timeout(left, self.events.poll()).await {
            Err(_) => Err(DeviceError::timeout(awaited, limit)),
            Ok(Ok(event)) => {
                if let Event::Incoming(Incoming::Publish(p)) = &event {
                    self.inbox.push_back(Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    });
                }
                Ok(event)
            }
            Ok(Err(e)) => {
                let err = classify(&e, &self.endpoint, &self.thing, stage);
                self.failed = Some(err.to_string());
                Err(err)
            }
        }
    }
}

/// The first filter the SUBACK refused.
fn refused_filter(filters: &[String], codes: &[SubscribeReasonCode]) -> Option<String> {
    filters
        .iter()
        .zip(codes)
        .find(|(_, c)| matches!(c, SubscribeReasonCode::Failure))
        .map(|(f, _)| f.clone())
        .or_else(|| {
            // Fewer codes than filters is a malformed SUBACK: the rest were not granted.
            (codes.len() < filters.len()).then(|| filters[codes.len()].clone())
        })
}

/// What a CONNACK return code means (MQTT 3.1.1, 3.2.2.3).
pub fn connack_meaning(code: ConnectReturnCode) -> (u8, &'static str) {
    match code {
        ConnectReturnCode::Success => (0, "accepted"),
        ConnectReturnCode::RefusedProtocolVersion => (1, "unacceptable protocol version"),
        ConnectReturnCode::BadClientId => (2, "client identifier rejected"),
        ConnectReturnCode::ServiceUnavailable => (3, "server unavailable"),
        ConnectReturnCode::BadUserNamePassword => (4, "bad user name or password"),
        ConnectReturnCode::NotAuthorized => (
            5,
            "not authorized: the policy does not allow iot:Connect for this client id",
        ),
    }
}

/// A failed poll as a typed error: what was refused, by whom, at which stage.
fn classify(e: &ConnectionError, endpoint: &str, thing: &str, stage: Stage<'_>) -> DeviceError {
    let endpoint = endpoint.to_string();
    if let ConnectionError::ConnectionRefused(code) = e {
        let (code, meaning) = connack_meaning(*code);
        return DeviceError::ConnackRefused {
            endpoint,
            code,
            meaning,
        };
    }
    if let Some(r) = tls::rustls_in(e) {
        return DeviceError::TlsRefused {
            endpoint,
            reason: tls::describe(r),
        };
    }
    if let ConnectionError::Websocket(tungstenite::Error::Http(response)) = e {
        let body = response
            .body()
            .as_deref()
            .map(|b| {
                String::from_utf8_lossy(b)
                    .trim()
                    .chars()
                    .take(200)
                    .collect::<String>()
            })
            .filter(|b| !b.is_empty())
            .map(|b| format!(": {b}"))
            .unwrap_or_default();
        return DeviceError::UpgradeRefused {
            endpoint,
            status: response.status().as_u16(),
            body,
        };
    }
    if let ConnectionError::ResponseValidation(v) = e {
        return DeviceError::Protocol(format!(
            "{endpoint} accepted the WebSocket but not as MQTT: {v}"
        ));
    }
    if matches!(e, ConnectionError::NetworkTimeout) {
        return DeviceError::Unreachable {
            endpoint,
            message: "no TCP connection within the connect timeout".into(),
        };
    }
    let io = tls::io_in(e);
    if let (Stage::Connect, Some(io)) = (stage, io) {
        if tls::is_unreachable(io) {
            return DeviceError::Unreachable {
                endpoint,
                message: io.to_string(),
            };
        }
    }
    let closed = io.is_some()
        || matches!(
            e,
            ConnectionError::MqttState(StateError::ConnectionAborted)
                | ConnectionError::MqttState(StateError::Io(_))
        );
    if closed {
        return DeviceError::Closed {
            endpoint,
            after: match stage {
                Stage::Connect => format!("CONNECT as {thing}"),
                Stage::After(what) => what.to_string(),
            },
            // A closed TCP stream says nothing more (rustls calls it an unexpected EOF with a
            // link to its manual); any other I/O error is worth showing.
            detail: io
                .filter(|io| io.kind() != std::io::ErrorKind::UnexpectedEof)
                .map(|io| format!(" ({io})"))
                .unwrap_or_default(),
        };
    }
    DeviceError::Protocol(format!("MQTT with {endpoint}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_codes_are_named() {
        let e = classify(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            "h:8883",
            "t1",
            Stage::Connect,
        );
        assert_eq!(
            e.to_string(),
            "h:8883 refused the MQTT connection (CONNACK 5: not authorized: the policy does not allow iot:Connect for this client id)"
        );
        assert!(!e.is_bad_input());
    }

    #[test]
    fn a_connection_closed_after_a_publish_says_so() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "connection closed by peer",
        );
        let e = classify(
            &ConnectionError::MqttState(StateError::Io(io)),
            "h:8883",
            "t1",
            Stage::After("a publish to x/y"),
        );
        assert!(matches!(e, DeviceError::Closed { .. }));
        assert!(
            e.to_string()
                .starts_with("h:8883 closed the connection after a publish to x/y (on AWS IoT: the policy does not allow it"),
            "{e}"
        );
        let e = classify(
            &ConnectionError::MqttState(StateError::ConnectionAborted),
            "h:8883",
            "t1",
            Stage::Connect,
        );
        assert!(e.to_string().contains("after CONNECT as t1"), "{e}");
    }

    #[test]
    fn refusals_before_a_connection_are_unreachable_or_tls() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = classify(&ConnectionError::Io(refused), "h:1", "t", Stage::Connect);
        assert!(matches!(e, DeviceError::Unreachable { .. }), "{e}");
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        let e = classify(&ConnectionError::Io(alert), "h:1", "t", Stage::Connect);
        assert_eq!(
            e.to_string(),
            "TLS handshake with h:1 refused: the server does not know the client certificate's CA (TLS alert UnknownCA)"
        );
        assert!(matches!(
            classify(&ConnectionError::NetworkTimeout, "h:1", "t", Stage::Connect),
            DeviceError::Unreachable { .. }
        ));
    }

    #[test]
    fn a_suback_failure_names_its_filter() {
        let f = vec!["a/b".to_string(), "c/d".to_string()];
        let ok = [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ];
        assert_eq!(refused_filter(&f, &ok), None);
        let bad = [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
        ];
        assert_eq!(refused_filter(&f, &bad), Some("c/d".into()));
        assert_eq!(refused_filter(&f, &ok[..1]), Some("c/d".into()));
    }

    #[test]
    fn shadow_topics_are_the_classic_shadows() {
        assert_eq!(
            Session::shadow_topics("t1"),
            [
                "$aws/things/t1/shadow/update/accepted".to_string(),
                "$aws/things/t1/shadow/update/rejected".to_string(),
                "$aws/things/t1/shadow/update/delta".to_string(),
            ]
        );
    }
}

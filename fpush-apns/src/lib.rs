//! The APNS push module: delivers pushes through Apple's HTTP/2 provider API.
//!
//! One [`ApnsPush`] is one configured app. It owns one [`fpush_http::HttpClient`] (a pool of
//! multiplexed HTTP/2 connections to Apple shared by every concurrent push), its credentials
//! (a `.p12` client certificate, or a `.p8` key that signs the provider token), and the fixed
//! parts of every request (topic, push type, priority, payload skeleton). The platform's
//! registry entry is [`PLATFORM`]. Modules built from the same `.p8` key share one signer, so a
//! reload keeps the provider token Apple already knows.
//!
//! Retries follow [`fpush_http::RetryPolicy`]: once when Apple cannot have accepted the push (a
//! 5xx answer, a connection that failed before the request went out, a stream refused or cut by
//! GOAWAY before processing), and once more with a renewed provider token when Apple refused
//! the token and allows a renewal.

mod certificate;
mod client_payload;
mod clock;
pub mod config;
pub mod payload;
mod platform;
mod provider_token;
mod request;
pub mod response;
mod shared_signers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use fpush_http::{
    HttpClient, HttpConfig, HttpError, LoudLog, ProviderAnswer, PushLabel, RetryPolicy, Tries,
};
use fpush_traits::{
    DeadTokenReason, Delivered, ProviderSnapshot, PushError, PushKind, PushNotification, PushTrait,
    Rejection, SentTo,
};

pub use crate::clock::unix_now;
pub use crate::config::{ApnsConfig, ApnsEnvironment, ApnsPushType};
use crate::payload::{PayloadBuilder, MAX_PAYLOAD, MAX_VOIP_PAYLOAD};
pub use crate::platform::PLATFORM;
use crate::provider_token::TokenSigner;
pub use crate::provider_token::{MIN_RENEW_INTERVAL, RENEW_AFTER};
use crate::request::{plausible_token, PerPush, RequestTemplate};
use crate::response::{judge, refuses_token_updates};

/// Pause before the one retry a push may get.
const RETRY: RetryPolicy = RetryPolicy {
    backoff: Duration::from_millis(100),
};

/// Why a module could not be built. Every variant names the module, and the file when one is
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("push module {module:?}: {}: {reason}", path.display())]
    Credential {
        module: String,
        path: PathBuf,
        reason: String,
    },
    #[error("push module {module:?}: {reason}")]
    Config { module: String, reason: String },
    #[error("push module {module:?}: {source}")]
    Http {
        module: String,
        #[source]
        source: HttpError,
    },
}

impl ApnsError {
    fn credential(module: &str, path: &Path, reason: String) -> Self {
        ApnsError::Credential {
            module: module.to_string(),
            path: path.to_path_buf(),
            reason,
        }
    }

    fn config(module: &str, reason: String) -> Self {
        ApnsError::Config {
            module: module.to_string(),
            reason,
        }
    }
}

enum Auth {
    /// The certificate's notAfter, when it could be read.
    Certificate(Option<SystemTime>),
    /// Shared with every module of the same key (see `shared_signers`).
    Token(Arc<TokenSigner>),
}

/// One APNS app: credentials, connection and request template.
pub struct ApnsPush {
    client: HttpClient,
    auth: Auth,
    template: RequestTemplate,
    payload: PayloadBuilder,
    loud: LoudLog,
    /// `apns:<environment>:<topic>`: how push2 messages name this app.
    relay_name: String,
    /// How PushKit (VoIP) pushes go out.
    voip: VoipRoute,
}

/// How a module sends PushKit pushes.
enum VoipRoute {
    /// Token auth: the module's own connections, with the VoIP topic.
    Shared,
    /// Connections presenting the PushKit certificate (its notAfter, when it could be read).
    Own(HttpClient, Option<SystemTime>),
    /// Certificate auth without a PushKit certificate: calls go out as alerts.
    Unavailable,
}

impl ApnsPush {
    /// Loads and checks the credential files (this is what `fpush --check` relies on); no
    /// network, no runtime needed. Errors name the module id and the file.
    pub fn new(module_id: &str, cfg: ApnsConfig) -> Result<Self, ApnsError> {
        let config_error = |reason| ApnsError::config(module_id, reason);
        if cfg.request_timeout.is_zero() {
            // Not "no limit": every request, connecting included, would time out at once.
            return Err(config_error("requestTimeout must be longer than 0s".into()));
        }
        let template = RequestTemplate::new(&cfg).map_err(config_error)?;
        let payload = PayloadBuilder::new(&cfg).map_err(config_error)?;
        let mut http = HttpConfig {
            ca_file: cfg.ca_file_path.clone(),
            client_identity: None,
            connect_timeout: cfg.request_timeout,
            request_timeout: cfg.request_timeout,
            max_connections: cfg.max_connections,
            ..HttpConfig::default()
        };
        let auth = load_auth(module_id, &cfg, &mut http)?;
        let client = HttpClient::new(cfg.origin(), http).map_err(|source| {
            match (source, &cfg.cert_file_path) {
                // rustls refused the key from the .p12 (e.g. an algorithm it does not support).
                (HttpError::TlsConfig(e), Some(path)) => ApnsError::credential(
                    module_id,
                    path,
                    format!("the certificate or key is unusable for TLS: {e}"),
                ),
                (source, _) => ApnsError::Http {
                    module: module_id.to_string(),
                    source,
                },
            }
        })?;
        let voip = voip_route(module_id, &cfg, &auth)?;
        Ok(Self {
            client,
            auth,
            template,
            payload,
            loud: LoudLog::new(format!("push module {module_id:?}")),
            relay_name: relay_name(&cfg),
            voip,
        })
    }

    /// The HTTP client (for connection counts in tests and metrics).
    pub fn http_client(&self) -> &HttpClient {
        &self.client
    }

    /// One request to Apple and what its answer means.
    async fn attempt(
        &self,
        client: &HttpClient,
        token: &str,
        per_push: PerPush,
        body: &Bytes,
        tries: Tries,
    ) -> ProviderAnswer {
        let signed = match &self.auth {
            Auth::Token(signer) => match signer.current() {
                Ok(signed) => Some(signed),
                Err(e) => return ProviderAnswer::Failed(PushError::Misconfigured(e)),
            },
            Auth::Certificate(_) => None,
        };
        let bearer = signed.as_ref().map(|s| &s.bearer);
        // Made once per stream: a stream refused unprocessed makes it again.
        let head = || -> Result<http::Request<()>, PushError> {
            let uri = client
                .uri(request::device_path(token)?)
                .map_err(|e| request::cannot_build(&e))?;
            Ok(self.template.head(uri, per_push, bearer))
        };
        let first = match head() {
            Ok(first) => first,
            Err(e) => return ProviderAnswer::Failed(e),
        };
        let again = || head().map_err(|e: PushError| HttpError::InvalidRequest(e.to_string()));
        match client.send_head(first, again, body.clone()).await {
            Ok(answer) => match (judge(&answer), &self.auth, &signed) {
                (judged, Auth::Token(signer), _) if refuses_token_updates(&answer) => {
                    signer.hold_renewals();
                    judged
                }
                (ProviderAnswer::Renew(reason), Auth::Token(signer), Some(signed))
                    if signer.rejected(signed) =>
                {
                    ProviderAnswer::Renew(reason)
                }
                // Not renewable (certificate auth, or a token too young to replace).
                (ProviderAnswer::Renew(reason), _, _) => {
                    ProviderAnswer::Failed(PushError::Misconfigured(reason))
                }
                (judged, _, _) => judged,
            },
            // Twice no TLS session: a certificate problem, not a passing failure.
            Err(e) if e.is_tls() && tries.retried => {
                ProviderAnswer::Failed(PushError::Misconfigured(e.to_string()))
            }
            Err(e) => ProviderAnswer::from_http_error(&e),
        }
    }
}

/// `apns:<environment>:<topic>`: the environment and topic push2's APNS form names.
fn relay_name(cfg: &ApnsConfig) -> String {
    let environment = match cfg.environment {
        ApnsEnvironment::Production => "production",
        ApnsEnvironment::Sandbox => "sandbox",
    };
    format!("apns:{environment}:{}", cfg.topic)
}

/// How `cfg`'s PushKit pushes go out: a certificate module needs its PushKit certificate (its
/// own connections); a token module signs both topics with one key.
fn voip_route(module_id: &str, cfg: &ApnsConfig, auth: &Auth) -> Result<VoipRoute, ApnsError> {
    let Some(cert) = &cfg.voip_cert_file_path else {
        return Ok(match auth {
            Auth::Token(_) => VoipRoute::Shared,
            Auth::Certificate(_) => VoipRoute::Unavailable,
        });
    };
    let (identity, expires_at) = certificate::load_p12(module_id, cert, &cfg.voip_cert_password)?;
    let http = HttpConfig {
        ca_file: cfg.ca_file_path.clone(),
        client_identity: Some(identity),
        connect_timeout: cfg.request_timeout,
        request_timeout: cfg.request_timeout,
        max_connections: cfg.max_connections,
        ..HttpConfig::default()
    };
    let client = HttpClient::new(cfg.origin(), http).map_err(|source| ApnsError::Http {
        module: module_id.to_string(),
        source,
    })?;
    Ok(VoipRoute::Own(client, expires_at))
}

/// An id the settings give, unless it is blank: Apple refuses every token signed with a blank
/// `keyId` or `teamId`, so one is as missing as an absent one.
fn given(id: &Option<String>) -> Option<&str> {
    id.as_deref().filter(|id| !id.trim().is_empty())
}

/// Loads the credentials of the one auth mode `cfg` sets; certificate auth goes into `http`.
fn load_auth(module_id: &str, cfg: &ApnsConfig, http: &mut HttpConfig) -> Result<Auth, ApnsError> {
    let config_error = |reason: &str| ApnsError::config(module_id, reason.to_string());
    match (&cfg.cert_file_path, &cfg.key_file_path) {
        (Some(cert), None) => {
            let (identity, expires_at) =
                certificate::load_p12(module_id, cert, &cfg.cert_password)?;
            http.client_identity = Some(identity);
            Ok(Auth::Certificate(expires_at))
        }
        (None, Some(key)) => {
            let (Some(key_id), Some(team_id)) = (given(&cfg.key_id), given(&cfg.team_id)) else {
                return Err(config_error(
                    "token auth (keyFilePath) needs keyId and teamId",
                ));
            };
            let signer = shared_signers::signer_for(module_id, key, key_id, team_id)?;
            Ok(Auth::Token(signer))
        }
        (Some(_), Some(_)) => Err(config_error(
            "set either certFilePath or keyFilePath, not both",
        )),
        (None, None) => Err(config_error(
            "no credentials: set certFilePath (+ certPassword) or keyFilePath + keyId + teamId",
        )),
    }
}

/// Apple's limit on the payload of a push that goes out as `per_push` says: 5 KB for a PushKit
/// call, 4 KB for anything else (a call sent as an alert included).
fn payload_limit(per_push: PerPush) -> usize {
    match per_push.voip {
        true => MAX_VOIP_PAYLOAD,
        false => MAX_PAYLOAD,
    }
}

/// A call that cannot go over PushKit: an alert to the device token at priority 10, so the
/// user still learns of it.
fn call_as_alert() -> PerPush {
    PerPush {
        priority: Some(10),
        alert: true,
        call: true,
        ..PerPush::default()
    }
}

/// A payload that even an empty alert leaves over Apple's limit (what cannot be cut is too
/// large: an encrypted payload, extra keys): refused here, not sent for Apple to refuse, so
/// it is neither sent mangled nor read as the module's fault.
fn too_large(len: usize, limit: usize) -> PushError {
    PushError::Rejected {
        reason: Rejection::TooLarge,
        detail: format!("the payload is {len} bytes, over Apple's {limit}"),
    }
}

/// Where one push goes: the connections, the token, what it changes of the module's headers,
/// and a PushKit call's payload, rendered while choosing the route.
struct Route<'a> {
    client: &'a HttpClient,
    token: &'a str,
    per_push: PerPush,
    pushkit: Option<Bytes>,
}

impl Route<'_> {
    /// Which of the notification's tokens the push goes to.
    fn sent_to(&self) -> SentTo {
        match self.per_push.voip {
            true => SentTo::SecondToken,
            false => SentTo::Token,
        }
    }
}

impl ApnsPush {
    /// The route of `notification`: a call that cannot go over PushKit (no PushKit
    /// certificate, or details too large for it) goes to the device token as an alert.
    fn route<'a>(&'a self, notification: &'a PushNotification) -> Route<'a> {
        let (token, per_push) = PerPush::of(notification);
        let mut route = Route {
            client: &self.client,
            token,
            per_push,
            pushkit: None,
        };
        if !per_push.voip {
            return route;
        }
        match &self.voip {
            VoipRoute::Shared => {}
            VoipRoute::Own(own, _) => route.client = own,
            // The user still learns of the call.
            VoipRoute::Unavailable => return self.as_alert(notification),
        }
        if client_payload::applies(notification) {
            route.pushkit = client_payload::call(&self.payload, notification);
            if route.pushkit.is_none() {
                return self.as_alert(notification);
            }
        }
        route
    }

    /// A call sent to the device token as an alert.
    fn as_alert<'a>(&'a self, notification: &'a PushNotification) -> Route<'a> {
        Route {
            client: &self.client,
            token: &notification.token,
            per_push: call_as_alert(),
            pushkit: None,
        }
    }

    /// Sends `notification` along `route`.
    async fn deliver(
        &self,
        notification: &PushNotification,
        route: Route<'_>,
    ) -> Result<Delivered, PushError> {
        let Route {
            client,
            token,
            per_push,
            pushkit,
        } = route;
        if !plausible_token(token) {
            return Err(PushError::TokenInvalid(DeadTokenReason::Implausible));
        }
        let limit = payload_limit(per_push);
        let by_client = client_payload::applies(notification);
        // A client payload that is neither a PushKit call nor silent is an alert (see
        // `client_payload::render`), and so is a push that asks for one (push2's) or a call
        // sent as one: its headers and payload must say so, whatever the module's type.
        let asked = by_client || per_push.alert || notification.kind == Some(PushKind::Alert);
        let per_push = PerPush {
            alert: asked && !per_push.voip && !per_push.background,
            ..per_push
        };
        let (summary, extra) = (&notification.summary, &notification.extra);
        let body = match (pushkit, by_client) {
            (Some(body), _) => body,
            (None, true) => client_payload::build(&self.payload, notification, limit),
            (None, false) if per_push.alert => self.payload.build_alert(summary, extra, limit),
            (None, false) => self.payload.build(summary, extra, limit),
        };
        if body.len() > limit {
            return Err(too_large(body.len(), limit));
        }
        let push = PushLabel {
            provider: "APNS",
            token,
        };
        RETRY
            .run(&self.loud, push, |tries| {
                self.attempt(client, token, per_push, &body, tries)
            })
            .await
    }
}

#[async_trait]
impl PushTrait for ApnsPush {
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError> {
        let route = self.route(notification);
        self.deliver(notification, route).await
    }

    /// A call that went to the device token as an alert is answered for the device token: a
    /// dead answer is that token's, never the untried VoIP token's.
    async fn send_attributed(
        &self,
        notification: &PushNotification,
    ) -> (Result<Delivered, PushError>, SentTo) {
        let route = self.route(notification);
        let to = route.sent_to();
        (self.deliver(notification, route).await, to)
    }

    fn snapshot(&self) -> ProviderSnapshot {
        let own = match &self.auth {
            Auth::Certificate(expires_at) => *expires_at,
            // A .p8 key does not expire; its provider tokens are renewed within the hour.
            Auth::Token(_) => None,
        };
        let pushkit = match &self.voip {
            VoipRoute::Own(_, expires_at) => *expires_at,
            VoipRoute::Shared | VoipRoute::Unavailable => None,
        };
        // Whichever certificate expires first stops pushes (calls or all) first.
        let credentials_expire_at = own.into_iter().chain(pushkit).min();
        ProviderSnapshot {
            credentials_expire_at,
            pool: Some(self.client.gauges()),
            ..ProviderSnapshot::default()
        }
    }

    fn relay_name(&self) -> Option<&str> {
        Some(&self.relay_name)
    }
}

#[cfg(test)]
mod tests {
    use fpush_testkit::apns::ApnsHarness;
    use fpush_testkit::tls::P12Cipher;
    use fpush_traits::{EncryptedPayload, PushKind};
    use serde_json::json;

    use super::*;

    const DEVICE: &str = "0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b";
    const VOIP: &str = "fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01";

    fn module(block: serde_json::Value) -> ApnsPush {
        ApnsPush::new("ios", serde_json::from_value(block).unwrap()).unwrap()
    }

    /// A call for `device` and `voip` as the tigase door makes it, with `ciphertext`.
    fn call(device: &str, ciphertext: &str) -> PushNotification {
        PushNotification {
            kind: Some(PushKind::Voip),
            voip_token: Some(VOIP.into()),
            account: Some("juliet@capulet.example".into()),
            encrypted: Some(EncryptedPayload {
                data: ciphertext.into(),
                params: vec![("iv".into(), "aXYx".into())],
            }),
            ..PushNotification::new(device, "ios")
        }
    }

    #[tokio::test]
    async fn a_call_over_pushkit_is_answered_for_the_second_token() {
        let apns = ApnsHarness::start().await.unwrap();
        let (result, to) = module(apns.token_settings())
            .send_attributed(&call(DEVICE, "Y2FsbA=="))
            .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(to, SentTo::SecondToken);
        assert_eq!(apns.server.received()[0].token, VOIP);
    }

    /// Apple ("Sending notification requests to APNs", apns-push-type): the header "must
    /// accurately reflect the contents of your notification's payload"; a background push's
    /// `aps` holds only `content-available` ("Pushing background updates to your app"). An
    /// alert a client protocol asks for (Tigase's encrypted message, a call sent as an alert)
    /// carries an alert payload, so it must go out as `alert`, even from a module whose own
    /// pushes are `background`.
    #[tokio::test]
    async fn an_alert_payload_is_never_sent_as_a_background_push() {
        let apns = ApnsHarness::start().await.unwrap();
        let mut block = apns.token_settings();
        block["pushType"] = json!("background");
        let silent_module = module(block);
        let mut message = call(DEVICE, "Y2FsbA==");
        message.kind = Some(PushKind::Alert);
        message.voip_token = None;
        message.priority = Some(fpush_traits::Priority::High);
        let mut call_as_alert = call(DEVICE, &"QUFB".repeat(1500));
        call_as_alert.priority = Some(fpush_traits::Priority::High);
        for push in [message, call_as_alert] {
            let result = silent_module.send(&push).await;
            assert!(result.is_ok(), "{result:?}");
        }
        let received = apns.server.received();
        assert_eq!(received.len(), 2, "both pushes reach Apple");
        for sent in received {
            let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
            let push_type = sent.headers["apns-push-type"].to_str().unwrap();
            let priority = sent.headers["apns-priority"].to_str().unwrap();
            assert!(body["aps"].get("alert").is_some(), "{body}");
            assert_eq!(
                (push_type, priority),
                ("alert", "10"),
                "an alert payload sent as {push_type}/{priority}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn a_call_sent_as_an_alert_is_answered_for_the_device_token() {
        let apns = ApnsHarness::start().await.unwrap();
        let dead = format!("dead{}", &DEVICE[4..]);
        // No PushKit certificate: the call goes to the device token as an alert.
        let by_certificate = module(apns.cert_settings(P12Cipher::Modern).unwrap());
        let (result, to) = by_certificate
            .send_attributed(&call(&dead, "Y2FsbA=="))
            .await;
        let gone = PushError::TokenInvalid(DeadTokenReason::Unregistered);
        assert_eq!((result, to), (Err(gone.clone()), SentTo::Token));
        // Details too large for PushKit: the same.
        let mut block = apns.token_settings();
        block["additionalData"] = json!({"pad": "p".repeat(2600)});
        let (result, to) = module(block)
            .send_attributed(&call(&dead, &"QUFB".repeat(688)))
            .await;
        assert_eq!((result, to), (Err(gone), SentTo::Token));
        let received = apns.server.received();
        assert_eq!(received.len(), 2);
        assert!(received.iter().all(|sent| sent.token == dead));
    }
}

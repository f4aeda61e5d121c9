//! Tigase's ad-hoc commands: `register-device` stores (or updates) a device's registration for
//! the sender's account and answers its node and what fpush supports; `unregister-device`
//! removes it. Every rule that can refuse a command is checked before the store is asked.

use std::time::SystemTime;

use super::{TigaseDoor, PROTOCOL};
use crate::access::sender_domain;
use crate::doors::p2::{
    account_of, bare, command_store_refusal as store_refusal, non_empty, unregister_result,
    CommandAnswer, CommandKind, CommandRefusal, Completed,
};
use crate::doors::MAX_JID_BYTES;
use crate::modules::{Module, ModuleSet};
use crate::request::AdHocCommand;
use crate::store::{Registration, RegistrationKey};

/// Longest device token accepted (APNS tokens are 64 hex digits; longer ones are refused by
/// the platform's check anyway).
const MAX_TOKEN_BYTES: usize = 256;
/// The command nodes.
const REGISTER: &str = "register-device";
const UNREGISTER: &str = "unregister-device";

/// What the register answer's `features` lists: encrypted payloads (AES-128-GCM) and the
/// priority element are passed on.
pub const FEATURES: [&str; 3] = [
    "tigase:push:encrypt:0",
    "tigase:push:encrypt:aes-128-gcm",
    "tigase:push:priority:0",
];
/// The largest plaintext the user's server may encrypt into a push (`max-payload-size`): its
/// ciphertext, base64-encoded next to the account and `aps`, fits Apple's 4 KB.
pub const MAX_PAYLOAD_SIZE: usize = 2048;

/// The command a node names, if it is one of this door's.
pub fn command_kind(node: &str) -> Option<CommandKind> {
    match node {
        REGISTER => Some(CommandKind::Register),
        UNREGISTER => Some(CommandKind::Unregister),
        _ => None,
    }
}

impl TigaseDoor {
    /// Runs one command from `from` (clients send these from their full JIDs).
    pub async fn command(
        &self,
        modules: &ModuleSet,
        from: &str,
        command: &AdHocCommand,
    ) -> CommandAnswer {
        let Some(kind) = command_kind(&command.node) else {
            return CommandAnswer::unknown();
        };
        let run = self.run(kind, modules, from, command);
        CommandAnswer::in_one_step(kind, command, run).await
    }

    async fn run(
        &self,
        kind: CommandKind,
        modules: &ModuleSet,
        from: &str,
        command: &AdHocCommand,
    ) -> Result<Completed, CommandRefusal> {
        let provider = non_empty(command.field("provider"))
            .ok_or(CommandRefusal::bad_request("The form has no provider."))?;
        let module =
            modules
                .provider_module(PROTOCOL, provider)
                .ok_or(CommandRefusal::not_found(
                    "This provider is not served here.",
                ))?;
        let token = non_empty(command.field("device-token"))
            .ok_or(CommandRefusal::bad_request("The form has no device-token."))?;
        let account = account_of(from);
        if account.len() > MAX_JID_BYTES || token.len() > MAX_TOKEN_BYTES {
            return Err(CommandRefusal::bad_request("The JID or token is too long."));
        }
        let key = RegistrationKey {
            service: provider.to_owned(),
            device: account,
            channel: token.to_owned(),
        };
        match kind {
            CommandKind::Register => {
                self.forget_spelled(&key, bare(from)).await;
                self.register(module, key, from, command).await
            }
            CommandKind::Unregister => unregister_result(self.store.unregister(&key).await),
            CommandKind::Unknown => Err(CommandRefusal::UNKNOWN_COMMAND),
        }
    }

    /// Removes the registration an fpush that kept the sender's JID as its server spelled it
    /// (`spelled`, e.g. `Juliet@Example.ORG.`) made for the device registering as `key`: its
    /// pushes name an account the app does not know as its own. Its node is then answered
    /// `item-not-found` and the server disables it; the app enables the one answered now. A
    /// store failure here is logged: the registration itself decides the answer.
    async fn forget_spelled(&self, key: &RegistrationKey, spelled: &str) {
        if spelled == key.device {
            return;
        }
        let old = RegistrationKey {
            device: spelled.to_owned(),
            ..key.clone()
        };
        if let Err(error) = self.store.unregister(&old).await {
            log::debug!("tigase: a registration under the JID as spelled stays: {error}");
        }
    }

    async fn register(
        &self,
        module: &Module,
        key: RegistrationKey,
        from: &str,
        command: &AdHocCommand,
    ) -> Result<Completed, CommandRefusal> {
        let plausible = |token: &str| {
            module
                .registration
                .is_some_and(|registering| (registering.plausible_token)(token))
        };
        if !plausible(&key.channel) {
            return Err(CommandRefusal::bad_request(
                "The device-token cannot be an APNS device token.",
            ));
        }
        let second = non_empty(command.field("device-second-token"));
        if second.is_some_and(|second| !plausible(second)) {
            return Err(CommandRefusal::bad_request(
                "The device-second-token cannot be a PushKit token.",
            ));
        }
        let account = key.device.clone();
        let token = key.channel.clone();
        let registration = Registration {
            key,
            account: account.clone(),
            domain: sender_domain(from).into_owned(),
            token: token.clone(),
            second_token: second.map(str::to_owned),
            node: String::new(),
            secret: String::new(),
            last_used: SystemTime::now(),
        };
        let credentials = self
            .store
            .register(registration)
            .await
            .map_err(|error| store_refusal(&error))?;
        // Registering again proves the app holds its tokens.
        module.forget_dead(&super::target_key(&token, &account));
        if let Some(second) = second {
            module.forget_dead(&super::target_key(second, &account));
        }
        let mut fields = vec![("node", credentials.node)];
        fields.extend(
            FEATURES
                .iter()
                .map(|feature| ("features", (*feature).to_owned())),
        );
        fields.push(("max-payload-size", MAX_PAYLOAD_SIZE.to_string()));
        Ok(Completed::with(fields))
    }
}

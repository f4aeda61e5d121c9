//! p2's ad-hoc commands: `register-push-<service>` stores (or updates) a registration and
//! answers its node and secret; `unregister-push-<service>` removes one. Every rule that can
//! refuse a command is checked before the store is asked.

use std::future::Future;
use std::time::SystemTime;

use super::{device_hash, target_key, P2Door, PROTOCOL};
use crate::access::sender_domain;
use crate::doors::MAX_JID_BYTES;
use crate::modules::{Module, ModuleSet, Registering};
use crate::request::{AdHocCommand, CommandStatus, Condition, ErrorType};
use crate::store::{Registration, RegistrationKey, StoreError};

/// Longest device id accepted (Android ids are 16 hex digits, Conversations' device ids UUIDs).
const MAX_DEVICE_ID_BYTES: usize = 256;
/// Longest `channel` accepted (a hex SHA-1 is 40 characters).
const MAX_CHANNEL_BYTES: usize = 64;

/// Which command a request named, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Register,
    Unregister,
    /// A node p2 does not define (answered `item-not-found`).
    Unknown,
}

impl CommandKind {
    pub const ALL: [CommandKind; 3] = [
        CommandKind::Register,
        CommandKind::Unregister,
        CommandKind::Unknown,
    ];

    /// The `command` label value.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Register => "register",
            CommandKind::Unregister => "unregister",
            CommandKind::Unknown => "unknown",
        }
    }
}

/// The `result` label values of commands.
pub const COMMAND_RESULTS: [&str; 8] = [
    "completed",
    "canceled",
    "bad_request",
    "not_found",
    "forbidden",
    "overloaded",
    "store_failed",
    "store_full",
];

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandAnswer {
    pub kind: CommandKind,
    pub result: Result<Completed, CommandRefusal>,
}

impl CommandAnswer {
    /// The answer to a node no door defines.
    pub fn unknown() -> Self {
        CommandAnswer {
            kind: CommandKind::Unknown,
            result: Err(CommandRefusal::UNKNOWN_COMMAND),
        }
    }

    /// Both doors' commands complete in one step: `run`, a future not yet polled, runs only
    /// when the command asks for that step. A requester may cancel at any time (XEP-0050,
    /// 4.4): that is answered `canceled` and changes nothing.
    pub(crate) async fn in_one_step(
        kind: CommandKind,
        command: &AdHocCommand,
        run: impl Future<Output = Result<Completed, CommandRefusal>>,
    ) -> Self {
        let result = match command.action.as_deref() {
            None | Some("execute" | "complete") => run.await,
            Some("cancel") => Ok(Completed::canceled()),
            Some(_) => Err(CommandRefusal::bad_request(
                "This command completes in one step; send it with action 'execute'.",
            )),
        };
        CommandAnswer { kind, result }
    }
}

/// A command that ran (or was canceled): the result form's fields (none for unregister).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub status: CommandStatus,
    pub fields: Vec<(&'static str, String)>,
}

impl Completed {
    /// A completed command answering `fields`.
    pub(crate) fn with(fields: Vec<(&'static str, String)>) -> Self {
        Completed {
            status: CommandStatus::Completed,
            fields,
        }
    }

    fn canceled() -> Self {
        Completed {
            status: CommandStatus::Canceled,
            fields: Vec::new(),
        }
    }

    /// The same result form, naming `jid` as the push JID first.
    fn naming(mut self, jid: &str) -> Self {
        self.fields.insert(0, ("jid", jid.to_owned()));
        self
    }
}

/// A command answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRefusal {
    pub kind: ErrorType,
    pub condition: Condition,
    pub text: &'static str,
    /// The `result` label, one of [`COMMAND_RESULTS`].
    pub label: &'static str,
}

impl CommandRefusal {
    pub const fn bad_request(text: &'static str) -> Self {
        Self::new(
            ErrorType::Modify,
            Condition::BadRequest,
            text,
            "bad_request",
        )
    }

    pub const fn not_found(text: &'static str) -> Self {
        Self::new(
            ErrorType::Cancel,
            Condition::ItemNotFound,
            text,
            "not_found",
        )
    }

    const fn new(
        kind: ErrorType,
        condition: Condition,
        text: &'static str,
        label: &'static str,
    ) -> Self {
        CommandRefusal {
            kind,
            condition,
            text,
            label,
        }
    }

    /// A sender the access policy turns away.
    pub const FORBIDDEN: Self = Self::new(
        ErrorType::Auth,
        Condition::Forbidden,
        "This domain may not register here.",
        "forbidden",
    );
    /// Too many commands at once (from the sender's domain, or in all).
    pub const OVERLOADED: Self = Self::new(
        ErrorType::Wait,
        Condition::ResourceConstraint,
        "Too many requests; try again later.",
        "overloaded",
    );
    pub const UNKNOWN_COMMAND: Self = Self::not_found("No such command.");
}

/// A service (or module) that serves no p2 registrations here.
const NOT_SERVED: CommandRefusal = CommandRefusal::not_found("This service is not served here.");

/// The command and service a command node names (`register-push-fcm` → register, `fcm`).
pub fn parse_node(node: &str) -> Option<(CommandKind, &str)> {
    if let Some(service) = node.strip_prefix("register-push-") {
        return Some((CommandKind::Register, service));
    }
    node.strip_prefix("unregister-push-")
        .map(|service| (CommandKind::Unregister, service))
}

/// The commands served while `modules` serve p2: (node, name) for each service.
pub fn command_items(modules: &ModuleSet) -> Vec<(String, String)> {
    modules
        .registration_services(PROTOCOL)
        .flat_map(|service| {
            let upper = service.to_uppercase();
            [
                (
                    format!("register-push-{service}"),
                    format!("Register an {upper} device"),
                ),
                (
                    format!("unregister-push-{service}"),
                    format!("Unregister an {upper} device"),
                ),
            ]
        })
        .collect()
}

impl P2Door {
    /// Runs one command from `from` (any JID: clients send these from their full JIDs) to `to`
    /// (the JID it reached, which a register answers as the push JID).
    pub async fn command(
        &self,
        modules: &ModuleSet,
        from: &str,
        to: &str,
        command: &AdHocCommand,
    ) -> CommandAnswer {
        let Some((kind, service)) = parse_node(&command.node) else {
            return CommandAnswer::unknown();
        };
        let jid = self.jid_reached_at(to);
        let run = self.run(kind, modules, service, (from, jid), command);
        CommandAnswer::in_one_step(kind, command, run).await
    }

    /// `run` with the command's sender and the JID to answer.
    async fn run(
        &self,
        kind: CommandKind,
        modules: &ModuleSet,
        service: &str,
        (from, jid): (&str, &str),
        command: &AdHocCommand,
    ) -> Result<Completed, CommandRefusal> {
        let module = modules
            .registration_module(PROTOCOL, service)
            .ok_or(NOT_SERVED)?;
        let registering = module.registration.ok_or(NOT_SERVED)?;
        match kind {
            CommandKind::Register => {
                let completed = self.register(module, registering, from, command).await?;
                Ok(completed.naming(jid))
            }
            CommandKind::Unregister => self.unregister(registering, from, command).await,
            CommandKind::Unknown => Err(CommandRefusal::UNKNOWN_COMMAND),
        }
    }

    async fn register(
        &self,
        module: &Module,
        registering: Registering,
        from: &str,
        command: &AdHocCommand,
    ) -> Result<Completed, CommandRefusal> {
        let token = non_empty(command.field("token"))
            .ok_or(CommandRefusal::bad_request("The form has no token."))?;
        if !(registering.plausible_token)(token) {
            return Err(CommandRefusal::bad_request(
                "The token cannot be a device token of this service.",
            ));
        }
        let device_id = device_id(command)?;
        let sender = account_of(from);
        // The account is stored with the registration: bounded as the tigase door bounds it.
        if sender.len() > MAX_JID_BYTES {
            return Err(CommandRefusal::bad_request("The JID is too long."));
        }
        let (account, channel) = match room(command)? {
            Some(room) => (rooms_of(&sender), device_hash(room, device_id)),
            None => (sender.clone(), String::new()),
        };
        let key = RegistrationKey {
            service: registering.service.to_owned(),
            device: device_hash(&sender, device_id),
            channel,
        };
        if bare(from) != sender {
            self.forget_spelled(&key, bare(from), device_id).await;
        }
        let registration = Registration {
            key,
            account,
            domain: sender_domain(from).into_owned(),
            token: token.to_owned(),
            second_token: None,
            node: String::new(),
            secret: String::new(),
            last_used: SystemTime::now(),
        };
        let dead_key = target_key(&registration);
        let credentials = self
            .store()
            .register(registration)
            .await
            .map_err(|error| store_refusal(&error))?;
        module.forget_dead(&dead_key);
        Ok(Completed::with(vec![
            ("node", credentials.node),
            ("secret", credentials.secret),
        ]))
    }

    async fn unregister(
        &self,
        registering: Registering,
        from: &str,
        command: &AdHocCommand,
    ) -> Result<Completed, CommandRefusal> {
        let device_id = device_id(command)?;
        let channel = match non_empty(command.field("channel")) {
            Some(channel) if channel.len() > MAX_CHANNEL_BYTES => {
                return Err(CommandRefusal::bad_request("The channel is too long."));
            }
            // Already the hash.
            Some(channel) => channel.to_owned(),
            None => room(command)?
                .map(|room| device_hash(room, device_id))
                .unwrap_or_default(),
        };
        let key = RegistrationKey {
            service: registering.service.to_owned(),
            device: device_hash(&account_of(from), device_id),
            channel,
        };
        unregister_result(self.store().unregister(&key).await)
    }

    /// Removes the registration an fpush that hashed the sender's JID as its server spelled it
    /// (`spelled`, e.g. `Juliet@Example.ORG.`) made for the device registering as `key`: its
    /// pushes carry a hash the app drops as none of its own. Its node is then answered
    /// `item-not-found` and the server disables it; the app enables the one answered now. A
    /// store failure here is logged: the registration itself decides the answer.
    async fn forget_spelled(&self, key: &RegistrationKey, spelled: &str, device_id: &str) {
        let old = RegistrationKey {
            device: device_hash(spelled, device_id),
            ..key.clone()
        };
        if let Err(error) = self.store().unregister(&old).await {
            log::debug!("p2: a registration under the JID as spelled stays: {error}");
        }
    }
}

/// The client's device id: `device-id`, or `android-id` from older Conversations.
fn device_id(command: &AdHocCommand) -> Result<&str, CommandRefusal> {
    let id = non_empty(command.field("device-id"))
        .or_else(|| non_empty(command.field("android-id")))
        .ok_or(CommandRefusal::bad_request("The form has no device id."))?;
    if id.len() > MAX_DEVICE_ID_BYTES {
        return Err(CommandRefusal::bad_request("The device id is too long."));
    }
    Ok(id)
}

/// Whose cap a room registration by `sender` (a bare JID) counts against: the sender's own, in
/// a bucket apart from its account registrations.
///
/// Never the room JID the client typed: the store caps and replaces by (domain, account), so a
/// typed JID would let anyone evict that JID's registrations, or register without bound by
/// varying it. A bucket apart, so that a user in many rooms never replaces the registration of
/// the account itself (each sender holds at most `store.maxPerAccount` of each kind). A bare
/// JID has no `/`, so the bucket is never any sender's account. The room stays in the channel
/// hash, which is all a push needs (the payload's keys are the device and channel hashes).
fn rooms_of(sender: &str) -> String {
    format!("{sender}/rooms")
}

/// The room of a room registration (`muc`, a bare JID), if the form names one.
fn room(command: &AdHocCommand) -> Result<Option<&str>, CommandRefusal> {
    let Some(room) = non_empty(command.field("muc")) else {
        return Ok(None);
    };
    if room.contains('/') || room.contains(char::is_whitespace) || room.len() > MAX_JID_BYTES {
        return Err(CommandRefusal::bad_request(
            "The muc field must be a bare room JID.",
        ));
    }
    Ok(Some(room))
}

/// A form value that says something (absent and empty are the same to the protocols).
pub(crate) fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|value| !value.is_empty())
}

/// The bare JID of `jid` (its resource cut off).
pub(crate) fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

/// The account a command's sender (`from`, any JID) registers for: its bare JID in the form
/// apps know their account by, the localpart in lower case and the domain folded as
/// [`sender_domain`] folds it (RFC 7622 compares JIDs so). Conversations hashes its account
/// so and drops a push whose `account` is another hash; p2 and Tigase's push component
/// normalised the sender alike. A server spelling the JID otherwise makes no other account.
pub(crate) fn account_of(from: &str) -> String {
    let domain = sender_domain(from);
    match bare(from).rsplit_once('@') {
        Some((local, _)) => format!("{}@{domain}", local.to_lowercase()),
        None => domain.into_owned(),
    }
}

/// The answer to an unregister command, from the store's: whether a registration was removed.
pub(crate) fn unregister_result(
    removed: Result<bool, StoreError>,
) -> Result<Completed, CommandRefusal> {
    match removed {
        Ok(true) => Ok(Completed::with(Vec::new())),
        Ok(false) => Err(CommandRefusal::not_found("No such registration.")),
        Err(error) => Err(store_refusal(&error)),
    }
}

/// A store failure answers a registration command `wait`: the client tries again later.
pub(crate) fn store_refusal(error: &StoreError) -> CommandRefusal {
    log::debug!("a registration command's store call failed: {error}");
    match error {
        StoreError::Full(_) => CommandRefusal::new(
            ErrorType::Wait,
            Condition::ResourceConstraint,
            "The registration store is full.",
            "store_full",
        ),
        StoreError::Unavailable(_) | StoreError::Unusable(_) => CommandRefusal::new(
            ErrorType::Wait,
            Condition::InternalServerError,
            "The registration store is unavailable; try again later.",
            "store_failed",
        ),
    }
}

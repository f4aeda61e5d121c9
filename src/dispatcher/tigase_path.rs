//! The tigase door's part of the dispatcher: its pushes (a store look-up, then the common
//! path, or the token-in-node path when the node is no registration), its commands, and what
//! disco#info and the command list say about it.

use std::sync::Arc;

use super::commands::Answering;
use super::stored_push::StoreDoor;
use super::Dispatcher;
use crate::doors::p2::{CommandAnswer, CommandKind, CommandRefusal};
use crate::doors::tigase::{self, Resolved, TigaseDoor};
use crate::doors::{token_in_node, Refusal, Target};
use crate::modules::ModuleSet;
use crate::outcome::Outcome;
use crate::request::{AdHocCommand, IqHeader, PushRequest, Reply};

/// A registration's push, or a token-in-node push when the node is no registration.
impl StoreDoor for TigaseDoor {
    const NAME: &'static str = "tigase";

    async fn target(
        &self,
        modules: &ModuleSet,
        from: &str,
        push: PushRequest,
    ) -> Result<Target, Refusal> {
        match self.resolve(modules, from, push).await {
            Resolved::Target(target) => Ok(*target),
            Resolved::Refused(refusal) => Err(refusal),
            Resolved::NotRegistered(push) => token_in_node::resolve(modules, push),
        }
    }

    /// Without a store, a push that cannot name a registration is still a token-in-node push
    /// (the default module's pushes go on while a reload's tigase module waits for a restart).
    fn without_store(modules: &ModuleSet, push: PushRequest) -> Result<Target, Refusal> {
        if tigase::may_name_registration(&push) {
            return Err(Outcome::store_failed.into());
        }
        token_in_node::resolve(modules, push)
    }
}

impl Dispatcher {
    /// `register-device` / `unregister-device`, run by the tigase door in a task of its own.
    pub(super) fn tigase_command(&self, iq: IqHeader, command: AdHocCommand) {
        let kind = tigase::command_kind(&command.node).unwrap_or(CommandKind::Unknown);
        let Some(door) = self.tigase_door() else {
            return self.answer(&iq, &command, CommandAnswer::unknown());
        };
        let Ok(permit) = self.commands.clone().try_acquire_owned() else {
            let answer = CommandAnswer {
                kind,
                result: Err(CommandRefusal::OVERLOADED),
            };
            return self.answer(&iq, &command, answer);
        };
        let modules = self.modules.load_full();
        let answering = Answering {
            pushes: self.pushes.clone(),
            metrics: self.metrics.clone(),
        };
        self.tasks.spawn(async move {
            let answer = door.command(&modules, &iq.from, &command).await;
            drop(permit);
            answering.answer(&iq, &command, answer);
        });
    }

    /// The tigase commands for disco#items, while some module serves tigase.
    pub(super) fn tigase_items(&self) -> Vec<(String, String)> {
        if self.tigase_door().is_none() {
            return Vec::new();
        }
        vec![
            ("register-device".into(), "Register a device".into()),
            ("unregister-device".into(), "Unregister a device".into()),
        ]
    }

    /// disco#info: identity `pubsub/push`, the commands feature while registrations are
    /// served, and each provider id a tigase module serves (every module in service holds its
    /// credentials: one whose credentials fail to load is not built).
    pub(super) fn disco_info(&self, iq: &IqHeader) {
        let commands = self.p2_door().is_some() || self.tigase_door().is_some();
        let modules = self.modules.load();
        let providers: Vec<&str> = match self.tigase_door() {
            Some(_) => modules.providers(tigase::PROTOCOL).collect(),
            None => Vec::new(),
        };
        let reply = match (commands, providers.is_empty()) {
            (false, _) => Reply::DiscoInfo,
            (true, true) => Reply::DiscoInfoWithCommands,
            (true, false) => Reply::DiscoInfoWithFeatures {
                features: &providers,
            },
        };
        self.pushes.reply(iq, reply);
    }

    /// The tigase door, when some module serves tigase and the store is open.
    fn tigase_door(&self) -> Option<Arc<TigaseDoor>> {
        let door = self.tigase.load_full()?;
        self.modules.load().serves(tigase::PROTOCOL).then_some(door)
    }
}

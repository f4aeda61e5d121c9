//! Registration commands (XEP-0050) and the list of them (disco#items): checked against the
//! access policy, bounded in number, run by the p2 door in a task of their own (they wait for
//! the store), each answered once and counted by command and result.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::Dispatcher;
use crate::access::Verdict;
use crate::doors;
use crate::doors::p2::{self, CommandAnswer, CommandKind, CommandRefusal};
use crate::doors::tigase;
use crate::request::{AdHocCommand, CommandItem, IqHeader, Reply};

/// Registration commands in flight at once; beyond, `wait`.
pub(super) const MAX_IN_FLIGHT: usize = 256;

impl Dispatcher {
    /// One ad-hoc command: from any JID of a served domain (clients send these from their full
    /// JIDs), within the domain's share, with an `id` and `to` no larger than a push may carry
    /// (a command waiting for the store holds its IQ).
    pub(super) fn command(&self, iq: IqHeader, command: AdHocCommand) {
        let kind = p2::parse_node(&command.node)
            .map(|(kind, _)| kind)
            .or(tigase::command_kind(&command.node))
            .unwrap_or(CommandKind::Unknown);
        let refused = |refusal: CommandRefusal| CommandAnswer {
            kind,
            result: Err(refusal),
        };
        // The sender is the door's to bound: it keeps the bare JID, whatever the resource.
        if iq.id.len() > doors::MAX_ID_BYTES || iq.to.len() > doors::MAX_JID_BYTES {
            let refusal = CommandRefusal::bad_request("The IQ's id or recipient is too long.");
            return self.answer(&iq, &command, refused(refusal));
        }
        match self.access.load().request(&iq.from) {
            Verdict::Allowed => {}
            Verdict::Forbidden => {
                return self.answer(&iq, &command, refused(CommandRefusal::FORBIDDEN))
            }
            Verdict::OverShare => {
                return self.answer(&iq, &command, refused(CommandRefusal::OVERLOADED))
            }
        }
        if tigase::command_kind(&command.node).is_some() {
            return self.tigase_command(iq, command);
        }
        let Some(door) = self.p2_door() else {
            return self.answer(&iq, &command, CommandAnswer::unknown());
        };
        let Ok(permit) = self.commands.clone().try_acquire_owned() else {
            return self.answer(&iq, &command, refused(CommandRefusal::OVERLOADED));
        };
        let modules = self.modules.load_full();
        let this = Answering {
            pushes: self.pushes.clone(),
            metrics: self.metrics.clone(),
        };
        self.tasks.spawn(async move {
            let answer = door.command(&modules, &iq.from, &iq.to, &command).await;
            drop(permit);
            this.answer(&iq, &command, answer);
        });
    }

    pub(super) fn answer(&self, iq: &IqHeader, command: &AdHocCommand, answer: CommandAnswer) {
        let this = Answering {
            pushes: self.pushes.clone(),
            metrics: self.metrics.clone(),
        };
        this.answer(iq, command, answer);
    }

    /// The disco#items answer for the commands node: the commands served now (none while no
    /// module serves p2).
    pub(super) fn command_list(&self, iq: &IqHeader) {
        let modules = self.modules.load();
        let door = self.p2_door();
        let mut served = match &door {
            Some(_) => p2::command_items(&modules),
            None => Vec::new(),
        };
        served.extend(self.tigase_items());
        let items: Vec<CommandItem<'_>> = served
            .iter()
            .map(|(node, name)| CommandItem { node, name })
            .collect();
        let jid = door
            .as_ref()
            .map_or(iq.to.as_str(), |door| door.jid_reached_at(&iq.to));
        self.pushes
            .reply(iq, Reply::CommandList { jid, items: &items });
    }
}

/// What answering a command needs, movable into its task.
pub(super) struct Answering {
    pub(super) pushes: Arc<super::PushPath>,
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

impl Answering {
    pub(super) fn answer(&self, iq: &IqHeader, command: &AdHocCommand, answer: CommandAnswer) {
        let label = match &answer.result {
            Ok(completed) => completed.status.as_str(),
            Err(refusal) => refusal.label,
        };
        self.metrics
            .registrations()
            .count_command(answer.kind.name(), label);
        match answer.result {
            Ok(completed) => {
                let session_id = match &command.session_id {
                    Some(id) if !id.is_empty() => id.clone(),
                    _ => session_id(),
                };
                let fields: Vec<(&str, &str)> = completed
                    .fields
                    .iter()
                    .map(|(var, value)| (*var, value.as_str()))
                    .collect();
                let reply = Reply::CommandEnded {
                    node: &command.node,
                    session_id: &session_id,
                    status: completed.status,
                    fields: &fields,
                };
                self.pushes.reply(iq, reply);
            }
            Err(refusal) => {
                log::debug!(
                    "command {} from {} refused: {}",
                    command.node,
                    iq.from,
                    refusal.text
                );
                let reply = Reply::Error {
                    kind: refusal.kind,
                    condition: refusal.condition,
                    text: Some(refusal.text),
                };
                self.pushes.reply(iq, reply);
            }
        }
    }
}

/// A fresh session id: 16 hex digits from the standard library's per-process random keys (it
/// names a one-step session, nothing secret).
fn session_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{random:016x}")
}

//! What one push carries from a front door to a platform: the target, the server's summary, and
//! the optional parts the newer client protocols add (priority, kind, VoIP token, account,
//! encrypted payload, extra payload keys). Nothing here names a platform.

/// What the XMPP server told us about the pending messages (the `urn:xmpp:push:summary` form).
///
/// Every field is optional: Prosody sends a dummy body and often empty fields, ejabberd sends no
/// message count, and servers may be configured to send nothing at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub message_count: Option<String>,
    pub last_message_sender: Option<String>,
    pub last_message_body: Option<String>,
}

/// How urgently the push should reach the device. Platforms map it to their own scale (APNS
/// `apns-priority` 10/5, FCM `android.priority`, Web Push `Urgency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// What the device should do with the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// Show something to the user (or let the app's extension decide what to show).
    Alert,
    /// Wake the app silently.
    Background,
    /// An incoming call: goes to the VoIP token, never delayed.
    Voip,
}

/// Which token of a [`PushNotification`] a platform sent it to. A platform may send a push
/// meant for the second (VoIP) token to the device token instead (a call it cannot send over
/// PushKit goes as an alert); an answer about a token, a dead one above all, belongs to the
/// token that was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentTo {
    /// The device token ([`PushNotification::token`]).
    Token,
    /// The second token ([`PushNotification::voip_token`]).
    SecondToken,
}

/// A payload encrypted by the user's server with a key only the app knows: passed through
/// unchanged, so neither fpush nor the provider can read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// The ciphertext as received (base64).
    pub data: String,
    /// The parameters the app needs to decrypt it, as name/value pairs (e.g. `iv`).
    pub params: Vec<(String, String)>,
}

/// One push to deliver: where it goes and what the XMPP server said about it.
///
/// The optional parts are `None` (or empty) for a plain XEP-0357 push; a platform then applies
/// its module's configured defaults, exactly as before they existed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushNotification {
    /// The device token (for the token-in-node door: the `node` of the push IQ's `publish`).
    pub token: String,
    /// The configured id of the module that delivers this push.
    pub module_id: String,
    /// The summary form, when the server sent one.
    pub summary: PushSummary,
    /// Every other publish-options field (`var`, `value`) in document order, e.g. the client's
    /// `secret`. `FORM_TYPE` and `pushModule` are not repeated here.
    pub options: Vec<(String, String)>,
    /// `None`: the module's configured priority.
    pub priority: Option<Priority>,
    /// `None`: the module's configured kind of push.
    pub kind: Option<PushKind>,
    /// The second (VoIP) token of a registration, for [`PushKind::Voip`] pushes.
    pub voip_token: Option<String>,
    /// The account the push is for (a bare JID or a client protocol's account id), when the
    /// door knows it; platforms put it in the payload when the client protocol wants it there.
    pub account: Option<String>,
    /// An end-to-end encrypted payload, passed through unchanged.
    pub encrypted: Option<EncryptedPayload>,
    /// Extra top-level payload keys a client protocol asks for (e.g. `account` for p2 apps).
    pub extra: Vec<(String, String)>,
    /// Extra top-level payload keys whose values are JSON integers (e.g. Tigase's
    /// `unread-messages`).
    pub extra_numbers: Vec<(String, u64)>,
}

impl PushNotification {
    /// A plain push of `token` through module `module_id`, with nothing else said.
    pub fn new(token: impl Into<String>, module_id: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            module_id: module_id.into(),
            ..Self::default()
        }
    }

    /// The token a platform that follows this notification sends it to: the second token for a
    /// VoIP push that has one, the device token otherwise.
    pub fn planned(&self) -> SentTo {
        match (self.kind, &self.voip_token) {
            (Some(PushKind::Voip), Some(_)) => SentTo::SecondToken,
            _ => SentTo::Token,
        }
    }

    /// The bytes of text the push holds: what bounds on pushes kept in memory count.
    pub fn text_len(&self) -> usize {
        let summary = &self.summary;
        let pairs = |pairs: &[(String, String)]| -> usize {
            pairs
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum()
        };
        let optional = [
            &summary.message_count,
            &summary.last_message_sender,
            &summary.last_message_body,
            &self.voip_token,
            &self.account,
        ];
        let encrypted = self.encrypted.as_ref();
        self.token.len()
            + self.module_id.len()
            + optional
                .iter()
                .flat_map(|text| text.as_deref())
                .map(str::len)
                .sum::<usize>()
            + pairs(&self.options)
            + pairs(&self.extra)
            + self
                .extra_numbers
                .iter()
                .map(|(name, _)| name.len() + 8)
                .sum::<usize>()
            + encrypted.map_or(0, |payload| payload.data.len() + pairs(&payload.params))
    }

    /// A short, log-safe prefix of the token: tokens are credentials and are never logged whole.
    pub fn token_prefix(&self) -> &str {
        token_prefix(&self.token)
    }
}

/// A short, log-safe prefix of a device token (at most 8 characters, cut on a char boundary).
pub fn token_prefix(token: &str) -> &str {
    match token.char_indices().nth(8) {
        Some((end, _)) => &token[..end],
        None => token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_prefix_is_short_and_char_safe() {
        assert_eq!(token_prefix("0123456789abcdef"), "01234567");
        assert_eq!(token_prefix("abc"), "abc");
        assert_eq!(token_prefix("ééééééééé"), "éééééééé");
    }

    #[test]
    fn the_text_length_counts_every_part_a_door_can_fill() {
        let mut push = PushNotification::new("tok", "mod");
        assert_eq!(push.text_len(), 6);
        push.summary.last_message_body = Some("body".into());
        push.summary.message_count = Some("1".into());
        push.summary.last_message_sender = Some("a@b".into());
        push.voip_token = Some("voip".into());
        push.account = Some("acct".into());
        push.options = vec![("secret".into(), "s".into())];
        push.extra = vec![("k".into(), "v".into())];
        push.extra_numbers = vec![("n".into(), 1)];
        push.encrypted = Some(EncryptedPayload {
            data: "cipher".into(),
            params: vec![("iv".into(), "12".into())],
        });
        assert_eq!(push.text_len(), 6 + 4 + 1 + 3 + 4 + 4 + 7 + 2 + 9 + 6 + 4);
    }

    #[test]
    fn only_a_voip_push_with_a_second_token_is_planned_for_it() {
        let mut push = PushNotification::new("t", "m");
        assert_eq!(push.planned(), SentTo::Token);
        push.voip_token = Some("v".into());
        assert_eq!(push.planned(), SentTo::Token, "not a call");
        push.kind = Some(PushKind::Voip);
        assert_eq!(push.planned(), SentTo::SecondToken);
        push.voip_token = None;
        assert_eq!(
            push.planned(),
            SentTo::Token,
            "a call without a second token"
        );
    }

    #[test]
    fn a_plain_push_leaves_every_optional_part_to_the_module() {
        let push = PushNotification::new("t", "m");
        assert_eq!(push.priority, None);
        assert_eq!(push.kind, None);
        assert!(push.encrypted.is_none() && push.extra.is_empty());
    }
}

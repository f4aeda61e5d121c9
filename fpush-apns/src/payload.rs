//! The JSON payload Apple delivers to the device, kept under Apple's limit: 4 KB, 5 KB for a
//! PushKit call.

use bytes::Bytes;
use fpush_traits::PushSummary;
use serde_json::{json, Map, Value};

use crate::config::{ApnsConfig, ApnsPushType};

/// Apple's limit on the payload of a regular push.
pub const MAX_PAYLOAD: usize = 4096;
/// Apple's limit on the payload of a PushKit (VoIP) push.
pub const MAX_VOIP_PAYLOAD: usize = 5120;

/// Builds payloads for one module; the fixed parts are prepared once.
pub struct PayloadBuilder {
    push_type: ApnsPushType,
    title: String,
    body: String,
    from_summary: bool,
    additional: Map<String, Value>,
    /// The payload when nothing depends on the push (no `alertFromSummary`).
    fixed: Option<Bytes>,
}

impl PayloadBuilder {
    /// Fails when the configured parts alone cannot fit (e.g. a huge `additionalData`).
    pub fn new(cfg: &ApnsConfig) -> Result<Self, String> {
        if cfg.additional_data.contains_key("aps") {
            return Err("additionalData must not contain \"aps\" (fpush builds it)".into());
        }
        let mut builder = Self {
            push_type: cfg.push_type,
            title: cfg.alert_title.clone(),
            body: cfg.alert_body.clone(),
            from_summary: cfg.alert_from_summary,
            additional: cfg.additional_data.clone(),
            fixed: None,
        };
        let skeleton = builder.render("", "", &[]);
        if skeleton.len() > MAX_PAYLOAD {
            return Err(format!(
                "additionalData makes the payload {} bytes, over Apple's {MAX_PAYLOAD}",
                skeleton.len()
            ));
        }
        if !builder.from_summary || builder.push_type == ApnsPushType::Background {
            builder.fixed = Some(builder.fit(&builder.title, &builder.body, &[], MAX_PAYLOAD));
        }
        Ok(builder)
    }

    /// The payload for one push, fitted to `limit` ([`MAX_PAYLOAD`], or [`MAX_VOIP_PAYLOAD`]
    /// for a PushKit call); `extra` keys (a client protocol's, e.g. p2's `account`, push2's
    /// encrypted payload) go to the top level next to `additionalData`, replacing its entries
    /// of the same name. When even an empty alert leaves the extra keys over `limit`, the
    /// result is too: the caller must not send it.
    pub fn build(&self, summary: &PushSummary, extra: &[(String, String)], limit: usize) -> Bytes {
        match &self.fixed {
            Some(fixed) if extra.is_empty() => return fixed.clone(),
            Some(fixed) => {
                return self
                    .appended(fixed, extra, limit)
                    .unwrap_or_else(|| self.fit(&self.title, &self.body, extra, limit))
            }
            None => {}
        }
        let (title, body) = self.texts(summary);
        self.fit(&title, &body, extra, limit)
    }

    /// Like [`Self::build`], but an alert whatever the module's `pushType`: for an alert asked
    /// for per push (push2's, a call sent as an alert). Apple wants the push type to match the
    /// payload, and the app's notification service extension runs only for an alert with
    /// `mutable-content`.
    pub fn build_alert(
        &self,
        summary: &PushSummary,
        extra: &[(String, String)],
        limit: usize,
    ) -> Bytes {
        if self.push_type == ApnsPushType::Alert {
            return self.build(summary, extra, limit);
        }
        let (title, body) = match self.from_summary {
            true => self.texts(summary),
            false => (self.title.clone(), self.body.clone()),
        };
        self.fit_as(ApnsPushType::Alert, &title, &body, extra, limit)
    }

    /// The alert's title and body: the summary's sender and body where given, else the
    /// module's.
    fn texts(&self, summary: &PushSummary) -> (String, String) {
        let pick = |given: &Option<String>, default: &str| match given.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => text.to_string(),
            _ => default.to_string(),
        };
        let title = pick(&summary.last_message_sender, &self.title);
        let body = pick(&summary.last_message_body, &self.body);
        (title, body)
    }

    /// The module's alert title and body and its `additionalData` (for the client payloads of
    /// [`crate::client_payload`]).
    pub(crate) fn parts(&self) -> (&str, &str, &Map<String, Value>) {
        (&self.title, &self.body, &self.additional)
    }

    fn render(&self, title: &str, body: &str, extra: &[(String, String)]) -> Vec<u8> {
        self.render_as(self.push_type, title, body, extra)
    }

    fn render_as(
        &self,
        push_type: ApnsPushType,
        title: &str,
        body: &str,
        extra: &[(String, String)],
    ) -> Vec<u8> {
        let aps = match push_type {
            ApnsPushType::Alert => json!({
                "alert": {"title": title, "body": body},
                "mutable-content": 1,
                "sound": "default",
            }),
            ApnsPushType::Background => json!({"content-available": 1}),
        };
        let mut root = Map::with_capacity(self.additional.len() + extra.len() + 1);
        root.insert("aps".into(), aps);
        for (key, value) in &self.additional {
            root.insert(key.clone(), value.clone());
        }
        for (key, value) in extra.iter().filter(|(key, _)| key != "aps") {
            root.insert(key.clone(), Value::String(value.clone()));
        }
        // Serialising a map of strings and JSON values cannot fail.
        serde_json::to_vec(&Value::Object(root)).unwrap_or_default()
    }

    /// The fixed payload with `extra`'s string keys appended to its top level: what a push of
    /// a registration (p2's `account`) costs on top of a fixed one, without building the JSON
    /// anew. `None` when a key replaces one already there (or repeats), or the result would be
    /// too large: [`Self::fit`] handles those.
    fn appended(&self, fixed: &Bytes, extra: &[(String, String)], limit: usize) -> Option<Bytes> {
        let taken = |i: usize, key: &String| {
            key == "aps"
                || self.additional.contains_key(key)
                || extra[..i].iter().any(|(earlier, _)| earlier == key)
        };
        if extra.iter().enumerate().any(|(i, (key, _))| taken(i, key)) {
            return None;
        }
        let body = fixed.strip_suffix(b"}")?;
        let mut payload = Vec::with_capacity(fixed.len() + 64 * extra.len());
        payload.extend_from_slice(body);
        for (key, value) in extra {
            payload.push(b',');
            // Writing a string into a Vec cannot fail.
            serde_json::to_writer(&mut payload, key).ok()?;
            payload.push(b':');
            serde_json::to_writer(&mut payload, value).ok()?;
        }
        payload.push(b'}');
        (payload.len() <= limit).then(|| Bytes::from(payload))
    }

    /// Renders, cutting the body (then the title) until the payload fits `limit`: a long
    /// message is better delivered shortened than not at all. Extra keys are never cut (an
    /// encrypted payload cut short is no payload), so with large ones the result may still
    /// be over `limit`.
    fn fit(&self, title: &str, body: &str, extra: &[(String, String)], limit: usize) -> Bytes {
        self.fit_as(self.push_type, title, body, extra, limit)
    }

    /// [`Self::fit`] for a payload of `push_type`.
    fn fit_as(
        &self,
        push_type: ApnsPushType,
        title: &str,
        body: &str,
        extra: &[(String, String)],
        limit: usize,
    ) -> Bytes {
        let render = |title: &str, body: &str| self.render_as(push_type, title, body, extra);
        let rendered = render(title, body);
        if rendered.len() <= limit {
            return Bytes::from(rendered);
        }
        if render(title, "").len() <= limit {
            let body = longest_fitting(body, |cut| render(title, cut).len() <= limit);
            return Bytes::from(render(title, &body));
        }
        let title = longest_fitting(title, |cut| render(cut, "").len() <= limit);
        Bytes::from(render(&title, ""))
    }
}

/// The longest prefix of `text` (cut where no visible symbol breaks, see
/// [`fpush_traits::text::cut_point`], and marked with an ellipsis) that `fits`;
/// escaping makes the JSON size of a prefix unpredictable, so this searches for it.
fn longest_fitting(text: &str, fits: impl Fn(&str) -> bool) -> String {
    let shortened = |len: usize| {
        let cut = fpush_traits::text::cut_point(text, len);
        if cut == 0 {
            String::new()
        } else {
            format!("{}…", &text[..cut])
        }
    };
    // Invariant: shortened(low) fits, shortened(high) does not.
    let (mut low, mut high) = (0, text.len());
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if fits(&shortened(mid)) {
            low = mid;
        } else {
            high = mid;
        }
    }
    shortened(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ApnsConfig {
        serde_json::from_str(&format!(
            r#"{{"keyFilePath": "k", "keyId": "K", "teamId": "T", "topic": "t" {extra}}}"#
        ))
        .unwrap()
    }

    fn parse(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn default_alert_is_mutable_with_sound() {
        let p = PayloadBuilder::new(&config("")).unwrap();
        let v = parse(&p.build(&PushSummary::default(), &[], MAX_PAYLOAD));
        assert_eq!(v["aps"]["mutable-content"], 1);
        assert_eq!(v["aps"]["sound"], "default");
        assert_eq!(v["aps"]["alert"]["title"], "New Message");
        assert_eq!(v["aps"]["alert"]["body"], "You have a new message");
    }

    #[test]
    fn summary_becomes_the_alert_when_asked_and_present() {
        let p = PayloadBuilder::new(&config(r#", "alertFromSummary": true"#)).unwrap();
        let summary = PushSummary {
            message_count: Some("1".into()),
            last_message_sender: Some("juliet@example.org".into()),
            last_message_body: Some("hi".into()),
        };
        let v = parse(&p.build(&summary, &[], MAX_PAYLOAD));
        assert_eq!(v["aps"]["alert"]["title"], "juliet@example.org");
        assert_eq!(v["aps"]["alert"]["body"], "hi");
        let v = parse(&p.build(
            &PushSummary {
                last_message_body: Some(" ".into()),
                ..Default::default()
            },
            &[],
            MAX_PAYLOAD,
        ));
        assert_eq!(v["aps"]["alert"]["body"], "You have a new message");
    }

    #[test]
    fn background_is_content_available_and_additional_data_is_merged() {
        let p = PayloadBuilder::new(&config(
            r#", "pushType": "background", "additionalData": {"x": {"y": 1}}"#,
        ))
        .unwrap();
        let v = parse(&p.build(&PushSummary::default(), &[], MAX_PAYLOAD));
        assert_eq!(v, json!({"aps": {"content-available": 1}, "x": {"y": 1}}));
    }

    #[test]
    fn long_bodies_are_truncated_under_the_limit() {
        let p = PayloadBuilder::new(&config(r#", "alertFromSummary": true"#)).unwrap();
        for filler in ["a", "é", "\"", "\u{1}", "😀"] {
            let summary = PushSummary {
                last_message_body: Some(filler.repeat(5000)),
                ..Default::default()
            };
            let bytes = p.build(&summary, &[], MAX_PAYLOAD);
            assert!(bytes.len() <= MAX_PAYLOAD, "{filler}: {}", bytes.len());
            assert!(bytes.len() > MAX_PAYLOAD - 64, "{filler}: cut too much");
            let body = parse(&bytes)["aps"]["alert"]["body"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(body.ends_with('…') && body.starts_with(filler));
        }
    }

    #[test]
    fn extra_keys_go_to_the_top_level_over_additional_data() {
        let p = PayloadBuilder::new(&config(r#", "additionalData": {"account": "x", "k": 1}"#))
            .unwrap();
        let extra = [
            ("account".to_owned(), "d3v1ce".to_owned()),
            ("aps".to_owned(), "refused".to_owned()),
        ];
        let v = parse(&p.build(&PushSummary::default(), &extra, MAX_PAYLOAD));
        assert_eq!(v["account"], "d3v1ce");
        assert_eq!(v["k"], 1);
        assert_eq!(v["aps"]["alert"]["title"], "New Message");
    }

    #[test]
    fn extra_keys_appended_to_a_fixed_payload_read_as_the_payload_built_anew() {
        let p = PayloadBuilder::new(&config(r#", "additionalData": {"k": 1}"#)).unwrap();
        let extra = [
            ("account".to_owned(), "d3v1ce".to_owned()),
            ("channel".to_owned(), "quote \" and \u{1}".to_owned()),
        ];
        let appended = parse(&p.build(&PushSummary::default(), &extra, MAX_PAYLOAD));
        let built = parse(&Bytes::from(p.render(&p.title, &p.body, &extra)));
        assert_eq!(appended, built);
        assert_eq!(appended["channel"], "quote \" and \u{1}");
        let repeated = [extra[0].clone(), extra[0].clone()];
        assert!(p
            .appended(p.fixed.as_ref().unwrap(), &repeated, MAX_PAYLOAD)
            .is_none());
    }

    #[test]
    fn a_call_is_fitted_to_the_voip_limit_and_keeps_its_alert() {
        // A push2 call: the encrypted payload under `rfc8291` is over 4 KB, within PushKit's 5.
        let p = PayloadBuilder::new(&config("")).unwrap();
        let extra = [("rfc8291".to_owned(), "A".repeat(4500))];
        let bytes = p.build(&PushSummary::default(), &extra, MAX_VOIP_PAYLOAD);
        assert!(bytes.len() <= MAX_VOIP_PAYLOAD, "{}", bytes.len());
        let v = parse(&bytes);
        assert_eq!(v["aps"]["alert"]["title"], "New Message");
        assert_eq!(v["aps"]["alert"]["body"], "You have a new message");
        assert_eq!(v["rfc8291"].as_str().map(str::len), Some(4500));
        // The same payload as an alert cannot fit: what comes back is over the limit, for the
        // caller to refuse, and the payload is never cut.
        let bytes = p.build(&PushSummary::default(), &extra, MAX_PAYLOAD);
        assert!(bytes.len() > MAX_PAYLOAD);
        assert_eq!(parse(&bytes)["rfc8291"].as_str().map(str::len), Some(4500));
    }

    #[test]
    fn a_long_alert_next_to_a_large_payload_loses_its_body_before_its_title() {
        let p = PayloadBuilder::new(&config(r#", "alertFromSummary": true"#)).unwrap();
        let summary = PushSummary {
            last_message_sender: Some("juliet@example.org".into()),
            last_message_body: Some("b".repeat(2000)),
            ..Default::default()
        };
        let extra = [("rfc8291".to_owned(), "A".repeat(4500))];
        let bytes = p.build(&summary, &extra, MAX_VOIP_PAYLOAD);
        assert!(bytes.len() <= MAX_VOIP_PAYLOAD, "{}", bytes.len());
        let v = parse(&bytes);
        assert_eq!(v["aps"]["alert"]["title"], "juliet@example.org");
        let body = v["aps"]["alert"]["body"].as_str().unwrap();
        assert!(body.starts_with("bbb") && body.ends_with('…'), "{body}");
    }

    #[test]
    fn refuses_additional_data_that_cannot_fit_or_overrides_aps() {
        let huge = format!(r#", "additionalData": {{"x": "{}"}}"#, "a".repeat(5000));
        assert!(PayloadBuilder::new(&config(&huge)).is_err());
        assert!(PayloadBuilder::new(&config(r#", "additionalData": {"aps": 1}"#)).is_err());
    }

    #[test]
    fn a_shortened_body_never_splits_a_flag_or_an_emoji_sequence() {
        // A body of flags (two regional indicators each) and of a ZWJ family emoji: cut
        // between the two halves of a flag, the alert shows a stray letter box and every
        // later pair pairs up wrongly; cut after a ZWJ, a broken glyph.
        let p = PayloadBuilder::new(&config(r#", "alertFromSummary": true"#)).unwrap();
        for unit in [
            "\u{1F1E9}\u{1F1EA}",
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
        ] {
            for pad in 0..8 {
                let summary = PushSummary {
                    last_message_sender: Some("j".repeat(pad + 1)),
                    last_message_body: Some(unit.repeat(600)),
                    ..Default::default()
                };
                let bytes = p.build(&summary, &[], MAX_PAYLOAD);
                let body = parse(&bytes)["aps"]["alert"]["body"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let kept = body.strip_suffix('…').unwrap();
                assert!(
                    kept.len().is_multiple_of(unit.len()),
                    "sender of {} bytes: body cut inside {unit:?}: ends with {:?}",
                    pad + 1,
                    kept.chars().rev().take(3).collect::<String>()
                );
            }
        }
    }
}

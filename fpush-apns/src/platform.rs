//! The APNS platform's entry in the core's registry: `type: "apple"`, settings block `apns`.

use std::sync::Arc;

use fpush_traits::bytes::every_byte;
use fpush_traits::{
    parse_block, BlockError, BuildError, Capabilities, ParsedConfig, Platform, PlatformConfig,
    PushTrait,
};

use crate::{ApnsConfig, ApnsPush};

/// How the core finds, reads and builds APNS modules: calls go to a PushKit token, and an
/// encrypted payload reaches the app's notification service extension as it came.
pub const PLATFORM: Platform = Platform {
    type_name: "apple",
    settings_key: "apns",
    cargo_feature: "enable_apns_support",
    capabilities: Capabilities {
        voip: true,
        encrypted_payloads: true,
        registration_service: Some("apns"),
    },
    plausible_token: plausible_device_token,
    parse,
};

/// APNS device tokens are 32 bytes written as 64 hex digits; Apple reserves the right to make
/// them longer, so any even number of hex digits from 64 to [`MAX_DEVICE_TOKEN_HEX`] passes.
fn plausible_device_token(token: &str) -> bool {
    (64..=MAX_DEVICE_TOKEN_HEX).contains(&token.len())
        && token.len().is_multiple_of(2)
        && all_hex_digits(token.as_bytes())
}

/// Whether every byte is a hex digit (every push's token passes here).
fn all_hex_digits(bytes: &[u8]) -> bool {
    every_byte(bytes, |b| {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 6;
        digit | letter
    })
}

/// The longest device token a registration may carry (100 bytes in hex).
const MAX_DEVICE_TOKEN_HEX: usize = 200;

fn parse(block: &serde_json::Value) -> Result<ParsedConfig, BlockError> {
    let (config, ignored_keys) = parse_block::<ApnsConfig>(block)?;
    Ok(ParsedConfig {
        config: Box::new(config),
        ignored_keys,
    })
}

/// The parsed block builds with today's constructor; its `Debug` keeps the password out.
impl PlatformConfig for ApnsConfig {
    fn build(&self, module_id: &str) -> Result<Arc<dyn PushTrait>, BuildError> {
        Ok(Arc::new(ApnsPush::new(module_id, self.clone())?))
    }

    fn credential_files(&self) -> Vec<std::path::PathBuf> {
        [&self.cert_file_path, &self.key_file_path]
            .into_iter()
            .flatten()
            .cloned()
            .chain(self.voip_cert_file_path.clone())
            .collect()
    }

    fn notes(&self) -> Vec<&'static str> {
        self.voip_unavailable().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hex_digits_are_told_apart_byte_by_byte() {
        for b in 0..=u8::MAX {
            assert_eq!(all_hex_digits(&[b'a', b]), b.is_ascii_hexdigit(), "{b}");
        }
        assert!(all_hex_digits(b""));
    }

    #[test]
    fn an_empty_block_is_refused_naming_the_topic() {
        let error = (PLATFORM.parse)(&json!({})).unwrap_err();
        assert!(error.to_string().contains("topic"), "{error}");
    }

    #[test]
    fn too_many_connections_are_refused_naming_the_key() {
        let block = json!({"keyFilePath": "k.p8", "topic": "t", "maxConnections": 100_000});
        let error = (PLATFORM.parse)(&block).unwrap_err();
        assert_eq!(error.path, "maxConnections");
        assert!(error.message.contains("from 0 to 1000"), "{error}");
    }

    #[test]
    fn unknown_keys_are_reported_and_secrets_stay_out_of_debug() {
        let block = json!({"certFilePath": "c.p12", "certPassword": "hunter2",
            "topic": "com.example", "alertTitel": "typo"});
        let parsed = (PLATFORM.parse)(&block).unwrap();
        assert_eq!(parsed.ignored_keys, ["alertTitel"]);
        let debug = format!("{parsed:?}");
        assert!(
            debug.contains("com.example") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn building_with_a_missing_credential_file_names_the_file() {
        let block = json!({"keyFilePath": "/nonexistent/AuthKey_GONE.p8", "keyId": "K",
            "teamId": "T", "topic": "com.example"});
        let parsed = (PLATFORM.parse)(&block).unwrap();
        let error = parsed.config.build("ios").err().unwrap();
        let text = error.to_string();
        assert!(
            text.contains("/nonexistent/AuthKey_GONE.p8") && text.contains("ios"),
            "{text}"
        );
    }

    #[test]
    fn the_entry_names_the_apple_type_and_declares_only_what_works() {
        assert_eq!(
            (
                PLATFORM.type_name,
                PLATFORM.settings_key,
                PLATFORM.cargo_feature
            ),
            ("apple", "apns", "enable_apns_support")
        );
        let only_what_works = Capabilities {
            voip: true,
            encrypted_payloads: true,
            registration_service: Some("apns"),
        };
        assert_eq!(PLATFORM.capabilities, only_what_works);
    }

    #[test]
    fn only_hex_device_tokens_are_plausible() {
        assert!((PLATFORM.plausible_token)(&"0a".repeat(32)));
        assert!((PLATFORM.plausible_token)(&"AB".repeat(40)));
        for junk in [
            "",
            "0a",
            "dead-token_1.x",
            &"0a".repeat(101),
            &"g0".repeat(32),
        ] {
            assert!(!(PLATFORM.plausible_token)(junk), "{junk}");
        }
        assert!(!(PLATFORM.plausible_token)(&format!(
            "{}0",
            "0a".repeat(32)
        )));
    }
}

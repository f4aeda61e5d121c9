//! The FCM platform's entry in the core's registry: `type: "google"`, settings block `fcm`.

use std::sync::Arc;

use fpush_traits::{
    parse_block, BlockError, BuildError, Capabilities, ParsedConfig, Platform, PlatformConfig,
    PushTrait,
};

use crate::{FcmConfig, FcmPush};

/// How the core finds, reads and builds FCM modules. VoIP pushes and encrypted payloads are
/// not implemented, so they are not declared.
pub const PLATFORM: Platform = Platform {
    type_name: "google",
    settings_key: "fcm",
    cargo_feature: "enable_fcm_support",
    capabilities: Capabilities {
        voip: false,
        encrypted_payloads: false,
        registration_service: Some("fcm"),
    },
    plausible_token: crate::plausible::plausible_token,
    parse,
};

fn parse(block: &serde_json::Value) -> Result<ParsedConfig, BlockError> {
    let (config, ignored_keys) = parse_block::<FcmConfig>(block)?;
    Ok(ParsedConfig {
        config: Box::new(config),
        ignored_keys,
    })
}

/// The parsed block builds with today's constructor. It holds only the path of the service
/// account, never the key.
impl PlatformConfig for FcmConfig {
    fn build(&self, module_id: &str) -> Result<Arc<dyn PushTrait>, BuildError> {
        Ok(Arc::new(FcmPush::new(module_id, self.clone())?))
    }

    fn credential_files(&self) -> Vec<std::path::PathBuf> {
        vec![self.fcm_secret_path.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_block_is_refused_naming_the_service_account_file() {
        let error = (PLATFORM.parse)(&json!({})).unwrap_err();
        assert!(error.to_string().contains("fcmSecretPath"), "{error}");
    }

    #[test]
    fn too_many_connections_are_refused_naming_the_key() {
        let block = json!({"fcmSecretPath": "sa.json", "maxConnections": 100_000});
        let error = (PLATFORM.parse)(&block).unwrap_err();
        assert_eq!(error.path, "maxConnections");
        assert!(error.message.contains("from 0 to 1000"), "{error}");
    }

    #[test]
    fn unknown_keys_are_reported() {
        let block = json!({"fcmSecretPath": "sa.json", "ttl": "1h", "colapseKey": "typo"});
        let parsed = (PLATFORM.parse)(&block).unwrap();
        assert_eq!(parsed.ignored_keys, ["colapseKey"]);
    }

    #[test]
    fn building_with_a_missing_credential_file_names_the_file() {
        let block = json!({"fcmSecretPath": "/nonexistent/fcm-service-account.json"});
        let parsed = (PLATFORM.parse)(&block).unwrap();
        let error = parsed.config.build("android").err().unwrap();
        let text = error.to_string();
        assert!(
            text.contains("/nonexistent/fcm-service-account.json") && text.contains("android"),
            "{text}"
        );
    }

    #[test]
    fn the_entry_names_the_google_type_and_declares_only_what_works() {
        assert_eq!(
            (
                PLATFORM.type_name,
                PLATFORM.settings_key,
                PLATFORM.cargo_feature
            ),
            ("google", "fcm", "enable_fcm_support")
        );
        let only_what_works = Capabilities {
            voip: false,
            encrypted_payloads: false,
            registration_service: Some("fcm"),
        };
        assert_eq!(PLATFORM.capabilities, only_what_works);
    }
}

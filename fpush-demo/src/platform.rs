//! The demo platform's entry in the core's registry: `type: "demo"`, settings block `demo`.

use std::sync::Arc;

use fpush_traits::{
    parse_block, BlockError, BuildError, Capabilities, ParsedConfig, Platform, PlatformConfig,
    PushTrait,
};

use crate::{DemoConfig, DemoPush};

/// How the core finds, reads and builds demo modules.
pub const PLATFORM: Platform = Platform {
    type_name: "demo",
    settings_key: "demo",
    cargo_feature: "enable_demo_support",
    capabilities: Capabilities {
        voip: false,
        encrypted_payloads: false,
        registration_service: None,
    },
    plausible_token: non_empty,
    parse,
};

/// The demo provider delivers to any token.
fn non_empty(token: &str) -> bool {
    !token.is_empty()
}

fn parse(block: &serde_json::Value) -> Result<ParsedConfig, BlockError> {
    let (config, ignored_keys) = parse_block::<DemoConfig>(block)?;
    Ok(ParsedConfig {
        config: Box::new(config),
        ignored_keys,
    })
}

impl PlatformConfig for DemoConfig {
    fn build(&self, module_id: &str) -> Result<Arc<dyn PushTrait>, BuildError> {
        Ok(Arc::new(DemoPush::new(module_id, self.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn an_empty_block_parses_to_the_defaults() {
        let parsed = (PLATFORM.parse)(&json!({})).unwrap();
        assert!(parsed.ignored_keys.is_empty());
        assert!(parsed.config.build("demo").is_ok());
    }

    #[test]
    fn a_delay_is_read_and_unknown_keys_are_reported() {
        let (cfg, ignored) =
            parse_block::<DemoConfig>(&json!({"delay": "250ms", "dealy": "1s"})).unwrap();
        assert_eq!(cfg.delay, Duration::from_millis(250));
        assert_eq!(ignored, ["dealy"]);
    }

    #[test]
    fn a_bad_delay_is_refused_naming_the_key() {
        let error = (PLATFORM.parse)(&json!({"delay": "soon"})).unwrap_err();
        assert_eq!(error.path, "delay");
    }

    #[test]
    fn the_entry_names_the_demo_type_with_default_capabilities() {
        assert_eq!(
            (
                PLATFORM.type_name,
                PLATFORM.settings_key,
                PLATFORM.cargo_feature
            ),
            ("demo", "demo", "enable_demo_support")
        );
        assert_eq!(PLATFORM.capabilities, Capabilities::default());
    }
}

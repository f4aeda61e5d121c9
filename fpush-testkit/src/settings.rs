//! Settings blocks for tests: the harnesses hand out a module's platform block, tests add the
//! keys they are about.

use serde_json::Value;

/// `block` with every key of `extra` (both JSON objects) set, replacing what was there.
pub fn with_keys(mut block: Value, extra: Value) -> Value {
    if let (Some(block), Value::Object(extra)) = (block.as_object_mut(), extra) {
        block.extend(extra);
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_keys_are_added_and_replace_existing_ones() {
        let block = json!({"topic": "a", "endpoint": "https://localhost:1"});
        assert_eq!(
            with_keys(block, json!({"topic": "b", "ttl": "1h"})),
            json!({"topic": "b", "endpoint": "https://localhost:1", "ttl": "1h"})
        );
    }
}

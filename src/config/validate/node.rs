//! The `node` section: the identity of this node, which becomes MQTT topic levels.

use super::super::diagnostic::Collector;
use super::super::types::Config;

/// Whether `id` can be one level of an MQTT topic (and a Sparkplug id).
fn sparkplug_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#']) && !id.chars().any(char::is_whitespace)
}

/// `node.group_id` and `node.node_id` are usable topic levels, whatever the dialect.
pub(super) fn identity(config: &Config, c: &mut Collector) {
    for (key, value) in [("group_id", &config.node.group_id), ("node_id", &config.node.node_id)] {
        if !sparkplug_id(value) {
            c.at(
                &["node", key],
                format!("`{value}` cannot be used as {key}"),
                "use a non-empty name without `/`, `+`, `#` or spaces (it becomes an MQTT topic level)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_topic_levels() {
        assert!(sparkplug_id("cell-07"));
        for bad in ["", "a/b", "a+", "#", "a b"] {
            assert!(!sparkplug_id(bad), "{bad:?}");
        }
    }
}

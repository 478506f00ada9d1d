//! The `health` section: the machine health alarm thresholds.

use super::super::diagnostic::Collector;
use super::super::types::Config;

/// `health.temperature_c` is a temperature a machine can reach and still be read: below 30 the
/// alarm would be on in any plant, above 150 no silicon reports it.
pub(super) fn check(config: &Config, c: &mut Collector) {
    let t = config.health.temperature_c;
    if !(30.0..=150.0).contains(&t) {
        c.at(
            &["health", "temperature_c"],
            format!("`temperature_c: {t}` is not a usable alarm temperature"),
            "use degrees Celsius between 30 and 150 (Jetsons throttle near 95; 85 is the default)",
        );
    }
}

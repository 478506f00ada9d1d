//! Log output: readable on a terminal; one plain line per event under
//! systemd (journald adds its own timestamps, and colour codes would be
//! stored literally); JSON lines for log shippers.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, coloured on a terminal, plain under systemd.
    Auto,
    Text,
    Json,
}

/// Install the global subscriber. `RUST_LOG` overrides the default level (info).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let is_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        _ if under_journald => builder.with_ansi(false).without_time().try_init(),
        _ => builder.with_ansi(is_tty && format == LogFormat::Auto).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

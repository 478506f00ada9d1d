//! Every signal a plant may send the daemon, handled: none of them is a silent death.
//!
//! - SIGTERM, SIGINT, SIGQUIT: stop in order (outputs to their safe state, parts in flight
//!   finished). SIGQUIT would otherwise dump core without touching the outputs.
//! - SIGHUP (`systemctl reload`): the config file is read and checked whole; what the running
//!   node does with a valid one is the caller's (see `cli` / `main.rs`). Its default action
//!   would end the process without the safe state, and systemd does not restart a process that
//!   ended on SIGHUP.
//! - SIGUSR1: a status line in the log. SIGUSR2: logged and ignored.
//!
//! The handlers are installed at once, before the node starts (a model's warm-up can take
//! minutes, and a signal in that time must not kill it either).

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The installed handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

/// What a signal asks for, besides a stop.
pub trait OnSignal {
    /// SIGHUP.
    fn reload(&mut self);
    /// SIGUSR1.
    fn status(&mut self);
}

impl Signals {
    /// Install every handler. Must be called inside a tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Resolves when a stop is asked for; answers the other signals through `on` meanwhile.
    pub async fn stop_requested(mut self, mut on: impl OnSignal) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return tracing::info!("SIGTERM received: stopping"),
                _ = self.int.recv() => return tracing::info!("SIGINT received: stopping"),
                _ = self.quit.recv() => return tracing::info!("SIGQUIT received: stopping (in order, outputs to their safe state)"),
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: checking the config file");
                    on.reload();
                }
                _ = self.usr1.recv() => on.status(),
                _ = self.usr2.recv() => tracing::info!("SIGUSR2 received: ignored (it has no meaning for linesight)"),
            }
        }
    }
}

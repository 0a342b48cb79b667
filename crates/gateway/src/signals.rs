//! What `sagw` does with signals while it runs: SIGHUP reloads the configuration; SIGTERM or
//! SIGINT drains (listeners closed, new requests answered 503 with Retry-After, the transactions
//! in progress finish within `proxy.drain_grace_secs`), then saves the state and stops. A second
//! SIGTERM or SIGINT during the drain stops at once.
//!
//! In the library rather than in `main.rs` so that the tests run this very loop in a process
//! of their own and signal it.

use std::time::Duration;

use tracing::{info, warn};

use crate::driver::{CoreExit, Running};

/// How long the tasks get to stop once the drain is over (or cut short): the connections are
/// closed and the state saved within it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Why the gateway stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to (SIGTERM, SIGINT): drained, state saved.
    Signalled,
    /// The core thread failed: the gateway could no longer handle SIP.
    CoreFailed,
}

/// The signals the gateway acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Hangup,
    Stop,
}

/// The gateway's handlers for SIGHUP, SIGTERM and SIGINT. Installed before the gateway starts
/// (`install`): a signal that arrives once it says it listens, or while it starts, waits for
/// `run` instead of taking the default action, which ends the process (a `systemctl reload` or a
/// SIGHUP sent on the "sagw listening" line killed it).
pub struct Signals {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers; needs the tokio runtime.
    pub fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot handle {name}");
                    None
                }
            };
            Signals {
                hup: listen(SignalKind::hangup(), "SIGHUP"),
                term: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.hup) => Signal::Hangup,
                () = recv(&mut self.term) => Signal::Stop,
                _ = tokio::signal::ctrl_c() => Signal::Stop,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }

    /// The next SIGTERM or SIGINT (a SIGHUP meanwhile is ignored: the gateway is stopping).
    async fn next_stop(&mut self) {
        while self.next().await != Signal::Stop {
            info!("SIGHUP while draining: ignored");
        }
    }
}

/// Tells the service manager the gateway is ready, serves until SIGTERM or SIGINT (reloading on
/// SIGHUP), then drains and stops. `signals` were installed before the gateway started.
pub async fn run(running: Running, mut signals: Signals) -> Ended {
    crate::service::notify_ready("listening");
    let ended = loop {
        tokio::select! {
            s = signals.next() => match s {
                // Logged and counted by the reload itself; the gateway goes on either way.
                Signal::Hangup => {
                    let _ = running.reload();
                }
                Signal::Stop => break Ended::Signalled,
            },
            exit = running.stopped() => {
                break match exit {
                    CoreExit::Stopped => Ended::Signalled,
                    CoreExit::Panicked => Ended::CoreFailed,
                };
            }
        }
    };
    if ended == Ended::Signalled {
        drain(&running, &mut signals).await;
    }
    info!("shutting down");
    running.shutdown(STOP_GRACE).await;
    info!("stopped");
    ended
}

/// Drains until nothing is in progress, the grace is over, or a second signal says stop now.
async fn drain(running: &Running, signals: &mut Signals) {
    let grace = running.drain_grace();
    crate::service::notify_stopping();
    running.lifecycle().drain();
    tokio::select! {
        () = running.drained() => info!("drained: no transaction in progress"),
        () = tokio::time::sleep(grace) => {
            warn!(grace_secs = grace.as_secs(), "drain grace over with transactions still in progress: stopping");
        }
        () = signals.next_stop() => warn!("second stop signal: stopping now"),
        _ = running.stopped() => {}
    }
}

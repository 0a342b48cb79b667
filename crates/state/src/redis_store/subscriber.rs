//! The pool's events: a subscription on a connection of its own that reconnects by itself.

use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::mpsc;

use super::Store;
use crate::events::{EVENTS_CHANNEL, StoreEvent};

/// Events from [`Store::subscribe`].
pub type EventReceiver = mpsc::Receiver<StoreEvent>;

/// How many events wait for a slow receiver before they are dropped (and
/// [`StoreEvent::Resubscribed`] tells it so).
pub const EVENT_QUEUE: usize = 4096;

impl Store {
    /// Subscribes to the pool's events on a connection of its own, which reconnects by itself
    /// (through each configured URL in turn). [`StoreEvent::Resubscribed`] comes each time the
    /// subscription is established: first when it is live, then after every gap. The task ends
    /// when the receiver is dropped. Must be called within a tokio runtime.
    pub fn subscribe(&self) -> EventReceiver {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let clients = self.inner.pubsub_clients.clone();
        let connect_timeout = self.inner.connect_timeout;
        let command_timeout = self.inner.command_timeout;
        tokio::spawn(subscriber(clients, connect_timeout, command_timeout, tx));
        rx
    }
}

/// Sends `ev`, or notes that the receiver fell behind (events dropped); `false` when the
/// receiver is gone.
fn deliver(tx: &mpsc::Sender<StoreEvent>, lagged: &mut bool, ev: StoreEvent) -> bool {
    if *lagged {
        match tx.try_send(StoreEvent::Lagged) {
            Ok(()) => *lagged = false,
            Err(mpsc::error::TrySendError::Full(_)) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("state store events: receiver behind, events dropped");
            *lagged = true;
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

async fn subscriber(
    clients: Vec<redis::Client>,
    connect_timeout: Duration,
    command_timeout: Duration,
    tx: mpsc::Sender<StoreEvent>,
) {
    let ping_every = Duration::from_secs(1).max(command_timeout);
    let mut next = 0usize;
    let mut gap = false;
    let mut lagged = false;
    let mut backoff = Duration::from_millis(50);
    loop {
        if clients.is_empty() {
            return;
        }
        let client = &clients[next % clients.len()];
        next = next.wrapping_add(1);
        let opened = async {
            let ps = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = ps.split();
            tokio::time::timeout(command_timeout, sink.subscribe(EVENTS_CHANNEL))
                .await
                .map_err(|_| "subscribe timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((sink, stream))
        };
        let (mut sink, mut stream) = tokio::select! {
            _ = tx.closed() => return,
            r = opened => match r {
                Ok(s) => s,
                Err(e) => {
                    if !gap {
                        tracing::warn!(error = %e, "state store events: no subscription");
                    }
                    gap = true;
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(50);
        if gap {
            tracing::info!("state store events: subscribed again");
        }
        // Also the first time: the caller learns the subscription is live.
        if !deliver(&tx, &mut lagged, StoreEvent::Resubscribed) {
            return;
        }
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                m = stream.next() => match m {
                    Some(msg) => match StoreEvent::decode(msg.get_payload_bytes()) {
                        Some(ev) => {
                            if !deliver(&tx, &mut lagged, ev) {
                                return;
                            }
                        }
                        None => tracing::debug!("state store events: unknown message ignored"),
                    },
                    None => break,
                },
                _ = ping.tick() => {
                    let alive = matches!(
                        tokio::time::timeout(command_timeout, sink.ping::<Value>()).await,
                        Ok(Ok(_))
                    );
                    if !alive {
                        break;
                    }
                    if lagged && !deliver(&tx, &mut lagged, StoreEvent::Lagged) {
                        return;
                    }
                }
            }
        }
        tracing::warn!("state store events: subscription lost");
        gap = true;
    }
}

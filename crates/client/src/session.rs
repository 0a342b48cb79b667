//! The tokio driver: runs an [`Endpoint`]'s transactions over a [`Connection`], retransmitting on
//! UDP, answering requests the server sends meanwhile, and getting Kerberos tickets off the async
//! threads.

use std::time::{Duration, SystemTime};

use sagw_auth::Rng;
use sagw_kerberos::initiator::{InitiatorOptions, Mutual, Sequencing, initiate_with};
use sagw_sip::Message;
use tokio::time::{Instant, timeout_at};

use crate::endpoint::{Completed, Endpoint, Failure, Step};
use crate::transport::{Connection, TransportKind};

/// Timers of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// No final response within this: [`Failure::Timeout`].
    pub transaction: Duration,
    /// First UDP retransmission interval (RFC 3261 T1), doubled up to `t2`.
    pub t1: Duration,
    pub t2: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            transaction: Duration::from_secs(32),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
        }
    }
}

fn transport_failure(e: impl std::fmt::Display) -> Failure {
    Failure::Transport(e.to_string())
}

async fn kerberos_ticket(
    service_fqdn: String,
    ccache: Option<String>,
    mutual: bool,
) -> Result<(Vec<u8>, sagw_kerberos::initiator::ClientSession), sagw_kerberos::KerberosError> {
    let options = InitiatorOptions {
        mutual: if mutual {
            Mutual::Requested
        } else {
            Mutual::NotRequested
        },
        sequencing: Sequencing::Off,
    };
    // MIT may ask the KDC for a service ticket: blocking I/O, so off the async workers.
    let joined = tokio::task::spawn_blocking(move || {
        initiate_with(&service_fqdn, ccache.as_deref(), options)
    })
    .await;
    match joined {
        Ok(r) => r,
        Err(e) => Err(sagw_kerberos::KerberosError::Unsupported {
            detail: format!("initiator task failed: {e}"),
        }),
    }
}

/// Sends `first` and drives the transaction to its end.
pub async fn drive(
    conn: &mut Connection,
    ep: &mut Endpoint,
    first: Message,
    rng: &mut dyn RngSend,
    timers: &Timers,
) -> Result<Completed, Failure> {
    let mut pending = first;
    conn.send(&pending).await.map_err(transport_failure)?;
    let mut deadline = Instant::now() + timers.transaction;
    let udp = conn.kind() == TransportKind::Udp;
    let mut interval = timers.t1;
    let mut retransmit = Instant::now() + interval;
    loop {
        let wake = if udp {
            retransmit.min(deadline)
        } else {
            deadline
        };
        let msg = match timeout_at(wake, conn.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(transport_failure(e)),
            Err(_) => {
                if Instant::now() >= deadline {
                    return Err(Failure::Timeout {
                        secs: timers.transaction.as_secs(),
                    });
                }
                conn.send(&pending).await.map_err(transport_failure)?;
                interval = (interval * 2).min(timers.t2);
                retransmit = Instant::now() + interval;
                continue;
            }
        };
        if msg.is_request() {
            let answer = ep.answer(&msg, rng.as_rng());
            if let Some(r) = answer.response {
                conn.send(&r).await.map_err(transport_failure)?;
            }
            continue;
        }
        let mut step = ep.on_response(&msg, SystemTime::now(), rng.as_rng());
        loop {
            match step {
                Step::NeedKerberosTicket {
                    service_fqdn,
                    ccache,
                    mutual,
                } => {
                    let t = kerberos_ticket(service_fqdn, ccache, mutual).await;
                    step = ep.on_kerberos_ticket(t, SystemTime::now(), rng.as_rng());
                }
                other => {
                    step = other;
                    break;
                }
            }
        }
        match step {
            Step::Wait | Step::NeedKerberosTicket { .. } => {}
            Step::Send(m) => {
                pending = m;
                conn.send(&pending).await.map_err(transport_failure)?;
                deadline = Instant::now() + timers.transaction;
                interval = timers.t1;
                retransmit = Instant::now() + interval;
            }
            Step::Done(c) => return Ok(c),
            Step::Failed(f) => return Err(f),
        }
    }
}

/// An [`Rng`] that can live across `.await` in a spawned task.
pub trait RngSend: Send {
    fn as_rng(&mut self) -> &mut dyn Rng;
}

impl<R: Rng + Send> RngSend for R {
    fn as_rng(&mut self) -> &mut dyn Rng {
        self
    }
}

/// A whole sign-in: leg 1 to the final response.
pub async fn sign_in(
    conn: &mut Connection,
    ep: &mut Endpoint,
    rng: &mut dyn RngSend,
    timers: &Timers,
) -> Result<Completed, Failure> {
    let first = ep.start_register(rng.as_rng())?;
    drive(conn, ep, first, rng, timers).await
}

/// One request on the registered endpoint.
pub async fn request(
    conn: &mut Connection,
    ep: &mut Endpoint,
    method: &str,
    target: &str,
    body: Option<(String, Vec<u8>)>,
    rng: &mut dyn RngSend,
    timers: &Timers,
) -> Result<Completed, Failure> {
    let first = ep.request(method, target, body, rng.as_rng())?;
    drive(conn, ep, first, rng, timers).await
}

/// Answers requests the server sends for `how_long`; returns how many were answered.
pub async fn serve(
    conn: &mut Connection,
    ep: &mut Endpoint,
    rng: &mut dyn RngSend,
    how_long: Duration,
) -> Result<usize, Failure> {
    let end = Instant::now() + how_long;
    let mut answered = 0;
    loop {
        let msg = match timeout_at(end, conn.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(transport_failure(e)),
            Err(_) => return Ok(answered),
        };
        if msg.is_request() {
            let a = ep.answer(&msg, rng.as_rng());
            if let Some(r) = a.response {
                conn.send(&r).await.map_err(transport_failure)?;
                answered += 1;
            }
        }
    }
}

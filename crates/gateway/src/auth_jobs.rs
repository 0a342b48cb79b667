//! Sign-ins off the core thread: Kerberos AP-REQs and NTLM responses the domain verifies.
//!
//! An AP-REQ costs MIT a keytab read and a replay-cache file lock and write (about 0.1 ms, longer
//! when the disk is slow), and a pool adds a store round trip for the cross-node replay check; an
//! NTLM response of a domain user is a round trip to winbindd and on to a domain controller
//! (~6.5 ms, seconds when a DC is slow), plus a directory lookup when one is configured. None of
//! it may stall the core thread, which every other message waits on. So the security core answers
//! such a sign-in with [`Decision::Deferred`](sagw_auth::Decision::Deferred); the authentication
//! stage hands the job (with the request and its flow) to the bounded queue of its kind (one
//! [`AuthWorkers`] per [`JobKind`]: a slow DC does not hold Kerberos sign-ins up) and tells the
//! proxy [`InboundVerdict::Held`](sagw_proxy::InboundVerdict::Held); a worker thread runs
//! [`SecurityCore::run_job`] and posts the outcome back to the core thread, which files it
//! ([`SecurityCore::job_done`]) and hands the request to the proxy again: this time the core
//! takes the outcome instead of deferring.
//!
//! A retransmission of a request whose job is running (same token) is dropped: the answer to the
//! original will come. A full queue answers 503 with Retry-After.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sagw_auth::{AuthJob, AuthOutcome, JobKind, SecurityCore};
use sagw_proxy::Flow;
use sagw_sip::Message;
use tracing::{debug, error};

/// A job in flight longer than this is taken for lost (a worker that panicked and could not
/// report): its token may be submitted again.
const IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// A request waiting for its sign-in step.
pub struct Job {
    /// What the core asked for.
    pub job: AuthJob,
    /// The request as the stage saw it, to hand back to the proxy.
    pub message: Message,
    /// The flow it came in on.
    pub flow: Flow,
}

/// A job done: what the core thread files and hands back.
pub struct Done {
    /// The job's key ([`AuthJob::key`]).
    pub key: [u8; 32],
    /// Which pool ran it.
    pub kind: JobKind,
    /// Accepted, or why not.
    pub outcome: AuthOutcome,
    /// The request.
    pub message: Message,
    /// Its flow.
    pub flow: Flow,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("outcome", &self.outcome)
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}

/// What [`AuthWorkers::submit`] did with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued for a worker.
    Queued,
    /// The same token is being worked on already (a retransmission): dropped.
    InFlight,
    /// The queue is full: answer 503.
    Full,
}

/// Where workers deliver what they did; false once nobody listens any more (the core stopped).
pub type Sink = Box<dyn Fn(Done) -> bool + Send + Sync>;

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Jobs queued.
    pub queued: AtomicU64,
    /// Retransmissions dropped while their job ran.
    pub duplicates: AtomicU64,
    /// Jobs refused with 503: the queue was full.
    pub refused_full: AtomicU64,
    /// Jobs a worker finished.
    pub done: AtomicU64,
}

/// The bounded queue of one kind of job and its worker threads.
pub struct AuthWorkers {
    kind: JobKind,
    tx: SyncSender<Job>,
    rx: Mutex<Option<Receiver<Job>>>,
    workers: usize,
    capacity: usize,
    in_flight: Mutex<HashMap<[u8; 32], Instant>>,
    retry_after: Duration,
    /// For metrics.
    pub stats: WorkerStats,
}

impl std::fmt::Debug for AuthWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthWorkers")
            .field("kind", &self.kind)
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl AuthWorkers {
    /// `workers` threads (started by [`start`](Self::start)) for jobs of `kind` behind a queue
    /// of `queue` jobs; `retry_after` goes into the 503 of a full queue.
    pub fn new(kind: JobKind, workers: usize, queue: usize, retry_after: Duration) -> Arc<Self> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        Arc::new(AuthWorkers {
            kind,
            tx,
            rx: Mutex::new(Some(rx)),
            workers: workers.max(1),
            capacity: queue.max(1),
            in_flight: Mutex::new(HashMap::new()),
            retry_after,
            stats: WorkerStats::default(),
        })
    }

    /// The kind of job these workers run.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The Retry-After of a full queue.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Starts the worker threads; each delivers to `sink`. Once only (later calls do nothing).
    pub fn start(&self, core: Arc<SecurityCore>, sink: Sink) -> std::io::Result<()> {
        let Some(rx) = self.rx.lock().take() else {
            return Ok(());
        };
        let rx = Arc::new(Mutex::new(rx));
        let sink: Arc<Sink> = Arc::new(sink);
        let prefix = match self.kind {
            JobKind::Kerberos => "sagw-krb",
            JobKind::DomainNtlm => "sagw-domain",
            JobKind::NtlmFinalLeg => "sagw-ntlm-pool",
        };
        for n in 0..self.workers {
            let (rx, core, sink, kind) = (rx.clone(), core.clone(), sink.clone(), self.kind);
            std::thread::Builder::new()
                .name(format!("{prefix}-{n}"))
                .spawn(move || worker(kind, &rx, &core, &sink))?;
        }
        Ok(())
    }

    /// Queues a job, unless the same token is in flight or the queue is full.
    pub fn submit(&self, job: AuthJob, message: Message, flow: Flow) -> Submitted {
        let key = *job.key();
        let now = Instant::now();
        {
            let mut in_flight = self.in_flight.lock();
            if in_flight
                .get(&key)
                .is_some_and(|since| now.duration_since(*since) < IN_FLIGHT_TIMEOUT)
            {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Submitted::InFlight;
            }
            // Entries leave when their job is done; only a lost job's would stay.
            if in_flight.len() > 2 * (self.capacity + self.workers) {
                in_flight.retain(|_, since| now.duration_since(*since) < IN_FLIGHT_TIMEOUT);
            }
            in_flight.insert(key, now);
        }
        match self.tx.try_send(Job { job, message, flow }) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Submitted::Queued
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.in_flight.lock().remove(&key);
                self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                Submitted::Full
            }
        }
    }

    /// The job of `key` is back on the core thread: its token may be submitted again.
    pub fn finished(&self, key: &[u8; 32]) {
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        self.in_flight.lock().remove(key);
    }

    /// Jobs queued or running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().len()
    }
}

fn worker(kind: JobKind, rx: &Mutex<Receiver<Job>>, core: &SecurityCore, sink: &Sink) {
    loop {
        // One idle worker waits in `recv` holding the lock, the others wait for the lock.
        let next = rx.lock().recv();
        let Ok(Job { job, message, flow }) = next else {
            // Every sender is gone: the gateway stopped.
            return;
        };
        let run = std::panic::AssertUnwindSafe(|| core.run_job(&job));
        let outcome = match std::panic::catch_unwind(run) {
            Ok(o) => o,
            Err(_) => {
                error!(
                    kind = kind.label(),
                    "a sign-in worker panicked; the request is refused"
                );
                let reason = match kind {
                    JobKind::Kerberos => sagw_auth::Reason::KerberosRejected,
                    JobKind::DomainNtlm => sagw_auth::Reason::DomainRefused,
                    JobKind::NtlmFinalLeg => sagw_auth::Reason::ReplayedToken,
                };
                AuthOutcome::refused(kind, reason)
            }
        };
        if let AuthOutcome::Kerberos(k) = &outcome
            && k.registry_unavailable
        {
            debug!(
                "Kerberos replay registry unavailable: AP-REQ accepted on MIT's replay cache alone"
            );
        }
        let done = Done {
            key: *job.key(),
            kind,
            outcome,
            message,
            flow,
        };
        if !sink(done) {
            return;
        }
    }
}

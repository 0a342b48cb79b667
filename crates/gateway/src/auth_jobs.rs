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
//! original will come. A full queue answers 503 with Retry-After, and so does a source (an IPv4
//! address, an IPv6 /56, as [`crate::per_ip`] counts them) that holds its share of the queue
//! already: without it one host that sent sign-ins faster than the domain or the KDC answered held
//! the whole queue, and every other client got 503 until it drained.

use std::collections::HashMap;
use std::net::IpAddr;
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
    /// The request's source holds its share of the queue already: answer 503.
    SourceShare,
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
    /// Jobs refused with 503: their source held its share of the queue.
    pub refused_source: AtomicU64,
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
    /// Jobs one source may have queued or running at once.
    per_source: usize,
    in_flight: Mutex<InFlight>,
    retry_after: Duration,
    /// For metrics.
    pub stats: WorkerStats,
}

/// The jobs queued or running, and how many of them each source has.
#[derive(Default)]
struct InFlight {
    jobs: HashMap<[u8; 32], (Instant, IpAddr)>,
    by_source: HashMap<IpAddr, usize>,
}

impl InFlight {
    fn remove(&mut self, key: &[u8; 32]) {
        if let Some((_, source)) = self.jobs.remove(key) {
            self.release(source);
        }
    }

    fn release(&mut self, source: IpAddr) {
        if let Some(n) = self.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }
}

/// The default share of one source: a quarter of the queue, so that four busy hosts are needed to
/// fill it, while a few dozen clients behind one NAT address sign in at once.
pub fn default_share(queue: usize) -> usize {
    (queue / 4).max(1)
}

impl std::fmt::Debug for AuthWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthWorkers")
            .field("kind", &self.kind)
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .field("per_source", &self.per_source)
            .finish_non_exhaustive()
    }
}

impl AuthWorkers {
    /// `workers` threads (started by [`start`](Self::start)) for jobs of `kind` behind a queue
    /// of `queue` jobs, of which one source may hold `per_source` (queued or running; at least 1);
    /// `retry_after` goes into the 503 of a full queue.
    pub fn new(
        kind: JobKind,
        workers: usize,
        queue: usize,
        per_source: usize,
        retry_after: Duration,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        Arc::new(AuthWorkers {
            kind,
            tx,
            rx: Mutex::new(Some(rx)),
            workers: workers.max(1),
            capacity: queue.max(1),
            per_source: per_source.max(1),
            in_flight: Mutex::new(InFlight::default()),
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

    /// Queues a job, unless the same token is in flight, its source holds its share, or the queue
    /// is full.
    pub fn submit(&self, job: AuthJob, message: Message, flow: Flow) -> Submitted {
        let key = *job.key();
        let source = crate::per_ip::source_key(flow.remote.ip());
        let now = Instant::now();
        {
            let mut in_flight = self.in_flight.lock();
            if in_flight
                .jobs
                .get(&key)
                .is_some_and(|(since, _)| now.duration_since(*since) < IN_FLIGHT_TIMEOUT)
            {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Submitted::InFlight;
            }
            // Entries leave when their job is done; only a lost job's would stay.
            if in_flight.jobs.len() > 2 * (self.capacity + self.workers) {
                let lost: Vec<[u8; 32]> = in_flight
                    .jobs
                    .iter()
                    .filter(|(_, (since, _))| now.duration_since(*since) >= IN_FLIGHT_TIMEOUT)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &lost {
                    in_flight.remove(k);
                }
            }
            // A lost job's entry under the same token is replaced, its source's count with it.
            in_flight.remove(&key);
            if in_flight.by_source.get(&source).copied().unwrap_or(0) >= self.per_source {
                self.stats.refused_source.fetch_add(1, Ordering::Relaxed);
                return Submitted::SourceShare;
            }
            in_flight.jobs.insert(key, (now, source));
            *in_flight.by_source.entry(source).or_insert(0) += 1;
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

    /// Sources holding a job now (tests, gauges).
    pub fn sources(&self) -> usize {
        self.in_flight.lock().by_source.len()
    }

    /// Jobs queued or running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().jobs.len()
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

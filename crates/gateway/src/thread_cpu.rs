//! The CPU time of one thread of this process, read from another: the metrics page reads the core
//! thread's. All SIP processing and the UDP socket are that one thread's (docs/deployment.md,
//! "Capacity"), so its CPU seconds per second say how near a gateway is to its ceiling, which the
//! process's CPU time (every thread together) does not.
//!
//! Read from `/proc/self/task/<tid>/schedstat`, whose first field is the nanoseconds the thread
//! has run (the figure `scripts/bench-sipp.sh` also uses); a reader on another thread cannot use
//! the thread's own CPU clock. Where the file cannot be read (no procfs, a kernel without
//! schedstats) there is no reading, and the metric is left out rather than shown as 0.

use std::time::Duration;

/// One thread of this process, by its kernel thread id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCpu {
    tid: i32,
}

impl ThreadCpu {
    /// The calling thread.
    pub fn current() -> ThreadCpu {
        ThreadCpu {
            tid: rustix::thread::gettid().as_raw_nonzero().get(),
        }
    }

    /// The time the thread has spent on a CPU so far, `None` when it cannot be read (see the
    /// module). After the thread ends its id may be reused: read only threads that live as long
    /// as the reader cares (the core thread lives as long as the gateway serves).
    pub fn on_cpu(&self) -> Option<Duration> {
        let path = format!("/proc/self/task/{}/schedstat", self.tid);
        let text = std::fs::read_to_string(path).ok()?;
        parse_schedstat(&text)
    }
}

/// The first field of a schedstat line ("<on-cpu ns> <waiting ns> <timeslices>").
fn parse_schedstat(text: &str) -> Option<Duration> {
    let ns = text.split_ascii_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_are_read_and_garbage_is_none() {
        assert_eq!(
            parse_schedstat("123456789 42 7\n"),
            Some(Duration::from_nanos(123_456_789))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("-1 2 3"), None);
        assert_eq!(parse_schedstat("x 2 3"), None);
    }

    #[test]
    fn a_thread_that_works_is_seen_working_from_another() {
        use rustix::time::{ClockId, clock_gettime};
        let own_clock = || {
            let t = clock_gettime(ClockId::ThreadCPUTime);
            Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let me = ThreadCpu::current();
            // Busy until its own CPU clock says 20 ms, then report that and wait, alive, until
            // the reader is done.
            let mut x = 0u64;
            while own_clock() < Duration::from_millis(20) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            }
            tx.send((me, own_clock())).expect("send");
            let _ = done_rx.recv();
            x
        });
        let (thread, worked) = rx.recv().expect("the worker's id and CPU time");
        assert_ne!(thread, ThreadCpu::current());
        // schedstat's sum is brought up to date when the thread stops running: let it block.
        std::thread::sleep(Duration::from_millis(50));
        let seen = thread.on_cpu().expect("schedstat of a live thread");
        done_tx.send(()).expect("release the worker");
        worker.join().expect("worker");
        // Read after the worker's own clock: at least that, and not much more (it was waiting).
        assert!(
            seen + Duration::from_millis(5) >= worked && seen < worked + Duration::from_millis(500),
            "seen {seen:?}, the thread's own clock {worked:?}"
        );
    }
}

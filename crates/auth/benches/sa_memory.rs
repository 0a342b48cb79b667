//! Bytes per established SA at 1 M SAs, counted by a global allocator (heap) plus the SA table's
//! own inline storage, which the allocator sees too. Run: cargo bench -p sagw-auth --bench sa_memory

#[path = "sa_fixture.rs"]
mod sa_fixture;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sagw_auth::manager::ManagerLimits;
use sagw_auth::{Counters, Opaque, SaManager, SecurityAssociation};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that quick.
    let n: u32 = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let esk = sagw_ntlm::Key16::from_bytes([7; 16]);
    for (label, presize) in [("grown", false), ("pre-sized", true)] {
        let before = LIVE.load(Ordering::Relaxed);
        let manager: SaManager = SaManager::new(ManagerLimits {
            recent_final_legs_max: 16,
        });
        let counters = Counters::default();
        if presize {
            manager.reserve(n as usize);
        }
        for i in 0..n {
            let session = sagw_ntlm::NtlmSession::from_exported_session_key(&esk, 0x6298_8255)
                .expect("session");
            let sa = SecurityAssociation::new(sa_fixture::new_sa(
                Opaque(i.wrapping_mul(2_654_435_761)),
                i,
                session,
            ));
            manager.establish(sa, &counters).expect("distinct opaques");
        }
        assert_eq!(manager.len(), n as usize);
        let used = LIVE.load(Ordering::Relaxed) - before;
        println!(
            "sa_memory/{label}: {n} SAs, {used} bytes, {:.0} bytes per SA (SecurityAssociation {} B inline, NtlmSession {} B)",
            used as f64 / f64::from(n),
            std::mem::size_of::<SecurityAssociation>(),
            sagw_ntlm::NtlmSession::SIZE,
        );
        drop(manager);
    }
}

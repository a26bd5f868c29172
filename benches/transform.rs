//! The transform alone, in Rust: events/s over the benchmark corpus and allocations per event, for A/B
//! runs of core changes without Python in the way. Allocations are counted around the system
//! allocator, so the speed is not the extension's (which uses mimalloc); compare runs of this tool.
//! Built with the `python` feature (as `cargo clippy --all-targets --features python` does), the
//! extension's allocator is the global one and nothing is counted.
//!
//!     cargo bench --bench transform [-- CORPUS.jsonl [SECONDS]]
//!
//! The corpus is the one the Python benchmarks write (`python -m benches.bench_core`, or `make bench`):
//! `var/bench/corpus-7-2000.jsonl` by default, one batch per line.

use _core::{transform_json, TransformConfig};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);

#[cfg(not(feature = "python"))]
mod counting {
    use super::{ALLOCATIONS, REALLOCATIONS};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::Ordering::Relaxed;

    struct Counting;

    // SAFETY: every call is passed on to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Relaxed);
            System.alloc(layout)
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            REALLOCATIONS.fetch_add(1, Relaxed);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

/// `corpus.BASE_TIME_MS`: batches without timestamps get this one, as in `bench_core`.
const RECEIVED_AT_MS: i64 = 1_732_700_000_000;

fn main() -> Result<(), String> {
    // `cargo bench` passes `--bench` to the binary.
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let path = args
        .next()
        .unwrap_or_else(|| "var/bench/corpus-7-2000.jsonl".to_string());
    let seconds = match args.next() {
        Some(text) => text
            .parse::<f64>()
            .map_err(|_| format!("not a number of seconds: {text}"))?,
        None => 5.0,
    };
    let text = std::fs::read(&path)
        .map_err(|e| format!("{path}: {e} (the Python benchmarks write it: python -m benches.bench_core)"))?;
    let batches: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|line| !line.is_empty()).collect();
    let config = TransformConfig::default();
    let pass = || {
        batches
            .iter()
            .map(|raw| transform_json(&config, raw, RECEIVED_AT_MS).event_count)
            .sum::<usize>()
    };
    let counted = || (ALLOCATIONS.load(Relaxed), REALLOCATIONS.load(Relaxed));
    let before = counted();
    let events = pass();
    let after = counted();
    if events == 0 {
        return Err(format!("{path}: no events"));
    }
    let started = Instant::now();
    let mut passes = 0u32;
    while started.elapsed().as_secs_f64() < seconds {
        pass();
        passes += 1;
    }
    let rate = f64::from(passes) * events as f64 / started.elapsed().as_secs_f64();
    let per_event = |count: u64| count as f64 / events as f64;
    println!(
        "{} batches, {events} events: {rate:.0} events/s; per event {:.2} allocations, {:.2} reallocations",
        batches.len(),
        per_event(after.0 - before.0),
        per_event(after.1 - before.1)
    );
    Ok(())
}

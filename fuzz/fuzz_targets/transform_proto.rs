//! Arbitrary bytes as a typed `Batch`, an `IngestRequest` and an `IngestBulkRequest`: never a panic.
#![no_main]

use _core::config::TransformConfig;
use _core::proto::{transform_batch, transform_ingest, transform_ingest_bulk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = TransformConfig::default();
    let _ = transform_batch(&config, data, 0);
    let _ = transform_ingest(&config, data, 0);
    let _ = transform_ingest_bulk(&config, data, 0);
});

//! Arbitrary bytes as an mParticle JSON batch: the transform must never panic, and its output must
//! keep its promises (valid JSON bodies, no plaintext email).
#![no_main]

use _core::config::TransformConfig;
use _core::transform_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let configs = [
        TransformConfig::default(),
        TransformConfig {
            include_tax_and_shipping: true,
            forward_activity: true,
            forward_app_events: true,
            application_ids: vec![("ios".into(), "app-abc123".into())],
            gdpr_purpose: Some("marketing".into()),
            ..TransformConfig::default()
        },
    ];
    for config in &configs {
        let result = transform_json(config, data, 1_700_000_000_000);
        for request in &result.requests {
            if let Some(body) = &request.body {
                let parsed: serde_json::Value = serde_json::from_slice(body).expect("bodies are JSON");
                assert!(parsed.is_object());
            }
        }
    }
});

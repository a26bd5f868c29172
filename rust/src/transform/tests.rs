//! Whole-batch behaviour that the golden files do not pin down: hostile input, consent, config.

use super::transform_json;
use crate::config::TransformConfig;
use crate::errors::ErrorKind;
use crate::model::RequestKind;

const NOW: i64 = 1_700_000_000_000;

fn run(raw: &str) -> crate::model::TransformResult {
    transform_json(&TransformConfig::default(), raw.as_bytes(), NOW)
}

fn purchase(extra_batch: &str, data: &str) -> String {
    format!(
        r#"{{{extra_batch} "events": [{{"event_type": "commerce_event", "data": {{"product_action":
        {{"action": "purchase", "transaction_id": "o-1", "total_amount": "5"}} {data}}}}}]}}"#
    )
}

#[test]
fn hostile_bytes_are_rejections_not_panics() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge = format!(r#"{{"events": [], "x": "{}"}}"#, "a".repeat(10_000_000));
    for raw in [
        &b"\xff\xfe"[..],
        b"",
        b"null",
        b"[]",
        b"\"str\"",
        deep.as_bytes(),
        b"{\"a\":\"\xed\xa0\x80\"}",
    ] {
        let result = transform_json(&TransformConfig::default(), raw, NOW);
        assert_eq!(
            result.rejections.len(),
            1,
            "{:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(20)])
        );
        assert_eq!(result.rejections[0].event_index, -1);
    }
    assert!(run(&huge).rejections.is_empty());
}

#[test]
fn wrong_types_are_named() {
    let result = run(r#"{"events": {"a": 1}}"#);
    assert_eq!(result.rejections[0].kind, ErrorKind::InvalidBatch);
    assert_eq!(result.rejections[0].field, "events");
    let result = run(r#"{"events": [1, {"event_type": "commerce_event", "data": []}]}"#);
    let fields: Vec<_> = result.rejections.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(fields, ["events[0]", "events[1].data"]);
}

#[test]
fn received_time_stands_in_for_missing_timestamps() {
    let result = run(&purchase("", ""));
    let body: serde_json::Value = serde_json::from_slice(result.requests[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["purchase_date"], "2023-11-14T22:13:20.000Z");
    let result = run(&purchase(r#""timestamp_unixtime_ms": "1714592744066","#, ""));
    let body: serde_json::Value = serde_json::from_slice(result.requests[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(body["purchase_date"], "2024-05-01T19:45:44.066Z");
    let result = run(&purchase("", r#", "timestamp_unixtime_ms": "soon""#));
    assert_eq!(result.rejections[0].kind, ErrorKind::InvalidTimestamp);
}

#[test]
fn consent_filters_whole_batches() {
    let config = TransformConfig {
        gdpr_purpose: Some("marketing".into()),
        ..Default::default()
    };
    let no_consent = purchase("", "");
    let result = transform_json(&config, no_consent.as_bytes(), NOW);
    assert_eq!(result.filtered, Some("gdpr_consent"));
    assert!(result.requests.is_empty());
    let consented = purchase(r#""consent_state": {"gdpr": {"marketing": {"consented": true}}},"#, "");
    assert!(transform_json(&config, consented.as_bytes(), NOW).filtered.is_none());
    let opted_out = purchase(
        r#""consent_state": {"ccpa": {"data_sale_opt_out": {"consented": true}}},"#,
        "",
    );
    assert_eq!(run(&opted_out).filtered, Some("ccpa_opt_out"));
}

#[test]
fn require_btn_ref_skips_untokened_purchases() {
    let config = TransformConfig {
        require_btn_ref: true,
        ..Default::default()
    };
    let result = transform_json(&config, purchase("", "").as_bytes(), NOW);
    assert!(result.requests.is_empty());
    assert_eq!(result.skipped[0].reason, "missing_btn_ref");
}

#[test]
fn activity_and_app_events_are_opt_in() {
    let batch = r#"{"device_info": {"platform": "iOS", "ios_advertising_id": "613ff528-afd1-4c1b-9628-e6ed25ece9c0"},
      "events": [
        {"event_type": "application_state_transition",
         "data": {"application_transition_type": "application_foreground",
                  "launch_referral": "app://p?utm=x&btn_ref=srctok-1"}},
        {"event_type": "commerce_event", "data": {"product_action": {"action": "view_detail",
          "products": [{"id": "sku-1", "price": "9.99"}]}}}]}"#;
    let off = run(batch);
    assert!(off.requests.is_empty());
    assert_eq!(off.attributions[0].btn_ref, "srctok-1");
    let config = TransformConfig {
        forward_activity: true,
        forward_app_events: true,
        application_ids: vec![("ios".into(), "app-abc123".into())],
        ..Default::default()
    };
    let on = transform_json(&config, batch.as_bytes(), NOW);
    let kinds: Vec<_> = on.requests.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RequestKind::AppEvent, RequestKind::Activity]);
    let event: serde_json::Value = serde_json::from_slice(on.requests[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(event["events"][0]["value"]["url"], "app://p?btn_ref=srctok-1");
    let activity: serde_json::Value = serde_json::from_slice(on.requests[1].body.as_deref().unwrap()).unwrap();
    assert_eq!(activity["activity_data"]["name"], "product-viewed");
    assert_eq!(activity["activity_data"]["products"][0]["value"], 999);
    assert_eq!(activity["btn_ref"], "srctok-1");
}

#[test]
fn tax_and_shipping_beyond_the_total_never_wrap() {
    let max = "92233720368547758.07";
    let raw = format!(
        r#"{{"events": [{{"event_type": "commerce_event", "data": {{"product_action": {{"action": "purchase",
        "transaction_id": "o", "total_amount": 0, "tax_amount": "{max}", "shipping_amount": "{max}"}}}}}}]}}"#
    );
    let result = run(&raw);
    assert!(result.requests.is_empty());
    assert_eq!(result.rejections[0].kind, ErrorKind::InvalidAmount);
}

#[test]
fn refund_with_malformed_products_is_rejected_not_a_cancel() {
    let result = run(
        r#"{"events": [{"event_type": "commerce_event", "data": {"product_action":
        {"action": "refund", "transaction_id": "o", "products": "oops"}}}]}"#,
    );
    assert!(result.requests.is_empty());
    assert_eq!(result.rejections[0].field, "events[0].data.product_action.products");
}

#[test]
fn the_thread_arena_is_emptied_after_each_batch_and_dropped_when_large() {
    use super::{with_arena, KEPT_ARENA_BYTES};
    with_arena(|arena| {
        arena.alloc_slice_fill_copy(1000, 0u8);
    });
    let kept = with_arena(|arena| arena.allocated_bytes());
    // Nested use (never done by the transform) gets an arena of its own.
    with_arena(|outer| {
        with_arena(|inner| assert!(!std::ptr::eq(outer, inner)));
    });
    with_arena(|arena| {
        arena.alloc_slice_fill_copy(2 * KEPT_ARENA_BYTES, 0u8);
    });
    let after_large = with_arena(|arena| arena.allocated_bytes());
    assert!(
        after_large <= kept.max(KEPT_ARENA_BYTES / 2),
        "{after_large} bytes kept"
    );
    // A batch parsed after a large one still maps as before.
    let big = format!(
        r#"{{"events": [{}]}}"#,
        vec![r#"{"event_type": "screen_view"}"#; 50_000].join(",")
    );
    assert_eq!(run(&big).event_count, 50_000);
    assert_eq!(run(&purchase("", "")).requests.len(), 1);
}

//! The typed protobuf batch (`proto/button_sidecar/v1/batch.proto`), decoded from the request bytes
//! and turned into the same JSON model the mapping reads, so one set of rules serves both forms.

use crate::config::TransformConfig;
use crate::errors::{ErrorKind, FieldError, Location};
use crate::json::{Json, Object};
use crate::model::TransformResult;
use crate::transform::{transform_json, transform_value, with_arena};
use bumpalo::Bump;
use prost::Message;
use std::collections::BTreeMap;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/button_sidecar.v1.rs"));
}

/// An object builder that leaves out what proto3 cannot tell from absent (empty strings, unset
/// messages). Strings borrow from the decoded message; the tree is built in `arena`.
struct Obj<'a> {
    arena: &'a Bump,
    pairs: bumpalo::collections::Vec<'a, (&'a str, Json<'a>)>,
}

impl<'a> Obj<'a> {
    fn new(arena: &'a Bump) -> Self {
        Obj {
            arena,
            pairs: bumpalo::collections::Vec::new_in(arena),
        }
    }

    fn text(self, key: &'static str, value: &'a str) -> Self {
        let value = (!value.is_empty()).then_some(Json::String(value));
        self.value(key, value)
    }

    fn int(self, key: &'static str, value: Option<i64>) -> Self {
        let arena = self.arena;
        self.value(key, value.map(|v| Json::Number(arena.alloc_str(&v.to_string()))))
    }

    fn value(mut self, key: &'static str, value: Option<Json<'a>>) -> Self {
        if let Some(v) = value {
            self.pairs.push((key, v));
        }
        self
    }

    fn strings(self, key: &'static str, map: &'a BTreeMap<String, String>) -> Self {
        let arena = self.arena;
        self.value(key, (!map.is_empty()).then(|| strings(map, arena)))
    }

    fn done(self) -> Json<'a> {
        Json::Object(Object(self.pairs.into_bump_slice()))
    }
}

fn strings<'a>(map: &'a BTreeMap<String, String>, arena: &'a Bump) -> Json<'a> {
    Json::Object(Object(arena.alloc_slice_fill_iter(
        map.iter().map(|(k, v)| (k.as_str(), Json::String(v.as_str()))),
    )))
}

fn product<'a>(p: &'a pb::Product, arena: &'a Bump) -> Json<'a> {
    Obj::new(arena)
        .text("id", &p.id)
        .text("name", &p.name)
        .text("brand", &p.brand)
        .text("category", &p.category)
        .text("variant", &p.variant)
        .text("price", &p.price)
        .text("quantity", &p.quantity)
        .text("total_product_amount", &p.total_product_amount)
        .text("coupon_code", &p.coupon_code)
        .strings("custom_attributes", &p.custom_attributes)
        .done()
}

fn product_action<'a>(a: &'a pb::ProductAction, arena: &'a Bump) -> Json<'a> {
    let products = (!a.products.is_empty())
        .then(|| Json::Array(arena.alloc_slice_fill_iter(a.products.iter().map(|p| product(p, arena)))));
    Obj::new(arena)
        .text("action", &a.action)
        .text("transaction_id", &a.transaction_id)
        .text("total_amount", &a.total_amount)
        .text("tax_amount", &a.tax_amount)
        .text("shipping_amount", &a.shipping_amount)
        .text("coupon_code", &a.coupon_code)
        .text("affiliation", &a.affiliation)
        .value("products", products)
        .done()
}

fn event<'a>(e: &'a pb::Event, arena: &'a Bump) -> Json<'a> {
    use pb::event::Event as E;
    let (event_type, data) = match &e.event {
        Some(E::CommerceEvent(c)) => (
            "commerce_event",
            Obj::new(arena)
                .int("timestamp_unixtime_ms", c.timestamp_unixtime_ms)
                .text("source_message_id", &c.source_message_id)
                .strings("custom_attributes", &c.custom_attributes)
                .text("currency_code", &c.currency_code)
                .value(
                    "product_action",
                    c.product_action.as_ref().map(|a| product_action(a, arena)),
                )
                .done(),
        ),
        Some(E::ApplicationStateTransition(t)) => (
            "application_state_transition",
            Obj::new(arena)
                .int("timestamp_unixtime_ms", t.timestamp_unixtime_ms)
                .text("source_message_id", &t.source_message_id)
                .strings("custom_attributes", &t.custom_attributes)
                .text("application_transition_type", &t.application_transition_type)
                .text("launch_referral", &t.launch_referral)
                .value("is_first_run", Some(Json::Bool(t.is_first_run)))
                .value("is_upgrade", Some(Json::Bool(t.is_upgrade)))
                .done(),
        ),
        Some(E::Other(o)) => (
            o.event_type.as_str(),
            Obj::new(arena)
                .int("timestamp_unixtime_ms", o.timestamp_unixtime_ms)
                .done(),
        ),
        None => ("", Obj::new(arena).done()),
    };
    Obj::new(arena)
        .text("event_type", event_type)
        .value("data", Some(data))
        .done()
}

fn consent<'a>(c: &'a pb::Consent, arena: &'a Bump) -> Json<'a> {
    Obj::new(arena)
        .value("consented", Some(Json::Bool(c.consented)))
        .text("document", &c.document)
        .int("timestamp_unixtime_ms", c.timestamp_unixtime_ms)
        .text("location", &c.location)
        .text("hardware_id", &c.hardware_id)
        .done()
}

fn consent_state<'a>(c: &'a pb::ConsentState, arena: &'a Bump) -> Json<'a> {
    let gdpr = arena.alloc_slice_fill_iter(c.gdpr.iter().map(|(k, v)| (k.as_str(), consent(v, arena))));
    let ccpa = c.ccpa.as_ref().map(|ccpa| {
        Obj::new(arena)
            .value(
                "data_sale_opt_out",
                ccpa.data_sale_opt_out.as_ref().map(|c| consent(c, arena)),
            )
            .done()
    });
    Obj::new(arena)
        .value("gdpr", (!gdpr.is_empty()).then_some(Json::Object(Object(gdpr))))
        .value("ccpa", ccpa)
        .done()
}

/// The JSON model of a typed batch, built in `arena`.
pub fn batch_to_value<'a>(b: &'a pb::Batch, arena: &'a Bump) -> Json<'a> {
    let identities = b.user_identities.as_ref().map(|u| {
        Obj::new(arena)
            .text("customer_id", &u.customer_id)
            .text("email", &u.email)
            .text("other", &u.other)
            .text("mobile_number", &u.mobile_number)
            .done()
    });
    let device = b.device_info.as_ref().map(|d| {
        Obj::new(arena)
            .text("platform", &d.platform)
            .text("ios_advertising_id", &d.ios_advertising_id)
            .text("android_advertising_id", &d.android_advertising_id)
            .text("ios_idfv", &d.ios_idfv)
            .text("android_uuid", &d.android_uuid)
            .done()
    });
    let integrations = bumpalo::collections::Vec::from_iter_in(
        b.integration_attributes.iter().filter_map(|(module, attrs)| {
            let value = if !attrs.attributes.is_empty() {
                strings(&attrs.attributes, arena)
            } else if !attrs.value.is_empty() {
                Json::String(attrs.value.as_str())
            } else {
                return None;
            };
            Some((module.as_str(), value))
        }),
        arena,
    );
    Obj::new(arena)
        .value(
            "events",
            Some(Json::Array(
                arena.alloc_slice_fill_iter(b.events.iter().map(|e| event(e, arena))),
            )),
        )
        .text("source_request_id", &b.source_request_id)
        .text("environment", &b.environment)
        .text("mpid", &b.mpid)
        .text("mp_deviceid", &b.mp_deviceid)
        .value("user_identities", identities)
        .value("device_info", device)
        .value(
            "integration_attributes",
            (!integrations.is_empty()).then_some(Json::Object(Object(integrations.into_bump_slice()))),
        )
        .value(
            "consent_state",
            b.consent_state.as_ref().map(|c| consent_state(c, arena)),
        )
        .int("timestamp_unixtime_ms", b.timestamp_unixtime_ms)
        .done()
}

fn unusable(what: &str) -> TransformResult {
    TransformResult {
        rejections: vec![FieldError::new(
            ErrorKind::InvalidProtobuf,
            Location::Root,
            format!("not a valid {what} protobuf message"),
        )
        .at_event(-1)],
        ..TransformResult::default()
    }
}

/// One serialised `Batch`.
pub fn transform_batch(config: &TransformConfig, raw: &[u8], received_at_ms: i64) -> TransformResult {
    match pb::Batch::decode(raw) {
        Ok(batch) => with_arena(|arena| transform_value(config, &batch_to_value(&batch, arena), received_at_ms)),
        Err(_) => unusable("Batch"),
    }
}

fn transform_request(config: &TransformConfig, request: &pb::IngestRequest, received_at_ms: i64) -> TransformResult {
    use pb::ingest_request::Payload;
    match &request.payload {
        Some(Payload::MparticleJson(json)) => transform_json(config, json, received_at_ms),
        Some(Payload::Batch(batch)) => {
            with_arena(|arena| transform_value(config, &batch_to_value(batch, arena), received_at_ms))
        }
        None => TransformResult {
            rejections: vec![FieldError::new(
                ErrorKind::InvalidBatch,
                Location::Root.key("payload"),
                "is empty: set mparticle_json or batch",
            )
            .at_event(-1)],
            ..TransformResult::default()
        },
    }
}

/// One serialised `IngestRequest` (either payload form).
pub fn transform_ingest(config: &TransformConfig, raw: &[u8], received_at_ms: i64) -> TransformResult {
    match pb::IngestRequest::decode(raw) {
        Ok(request) => transform_request(config, &request, received_at_ms),
        Err(_) => unusable("IngestRequest"),
    }
}

/// One serialised `IngestBulkRequest`: a result per batch, or None when the message is unusable.
pub fn transform_ingest_bulk(
    config: &TransformConfig,
    raw: &[u8],
    received_at_ms: i64,
) -> Option<Vec<TransformResult>> {
    let bulk = pb::IngestBulkRequest::decode(raw).ok()?;
    Some(
        bulk.batches
            .iter()
            .map(|request| transform_request(config, request, received_at_ms))
            .collect(),
    )
}

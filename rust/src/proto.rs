//! The typed protobuf batch (`proto/button_sidecar/v1/batch.proto`), decoded from the request bytes
//! and turned into the same JSON model the mapping reads, so one set of rules serves both forms.

use crate::config::TransformConfig;
use crate::errors::{ErrorKind, FieldError, Location};
use crate::model::TransformResult;
use crate::transform::{transform_json, transform_value};
use prost::Message;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/button_sidecar.v1.rs"));
}

/// An object builder that leaves out what proto3 cannot tell from absent (empty strings, unset messages).
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn text(mut self, key: &str, value: &str) -> Self {
        if !value.is_empty() {
            self.0.insert(key.to_string(), Value::String(value.to_string()));
        }
        self
    }

    fn int(mut self, key: &str, value: Option<i64>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.to_string(), Value::from(v));
        }
        self
    }

    fn value(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.to_string(), v);
        }
        self
    }

    fn strings(self, key: &str, map: &BTreeMap<String, String>) -> Self {
        let object = map.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        self.value(key, (!map.is_empty()).then_some(Value::Object(object)))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn product(p: &pb::Product) -> Value {
    Obj::default()
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

fn product_action(a: &pb::ProductAction) -> Value {
    let products = (!a.products.is_empty()).then(|| Value::Array(a.products.iter().map(product).collect()));
    Obj::default()
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

fn event(e: &pb::Event) -> Value {
    use pb::event::Event as E;
    let (event_type, data) = match &e.event {
        Some(E::CommerceEvent(c)) => (
            "commerce_event",
            Obj::default()
                .int("timestamp_unixtime_ms", c.timestamp_unixtime_ms)
                .text("source_message_id", &c.source_message_id)
                .strings("custom_attributes", &c.custom_attributes)
                .text("currency_code", &c.currency_code)
                .value("product_action", c.product_action.as_ref().map(product_action))
                .done(),
        ),
        Some(E::ApplicationStateTransition(t)) => (
            "application_state_transition",
            Obj::default()
                .int("timestamp_unixtime_ms", t.timestamp_unixtime_ms)
                .text("source_message_id", &t.source_message_id)
                .strings("custom_attributes", &t.custom_attributes)
                .text("application_transition_type", &t.application_transition_type)
                .text("launch_referral", &t.launch_referral)
                .value("is_first_run", Some(Value::Bool(t.is_first_run)))
                .value("is_upgrade", Some(Value::Bool(t.is_upgrade)))
                .done(),
        ),
        Some(E::Other(o)) => (
            o.event_type.as_str(),
            Obj::default()
                .int("timestamp_unixtime_ms", o.timestamp_unixtime_ms)
                .done(),
        ),
        None => ("", Obj::default().done()),
    };
    Obj::default()
        .text("event_type", event_type)
        .value("data", Some(data))
        .done()
}

fn consent(c: &pb::Consent) -> Value {
    Obj::default()
        .value("consented", Some(Value::Bool(c.consented)))
        .text("document", &c.document)
        .int("timestamp_unixtime_ms", c.timestamp_unixtime_ms)
        .text("location", &c.location)
        .text("hardware_id", &c.hardware_id)
        .done()
}

fn consent_state(c: &pb::ConsentState) -> Value {
    let gdpr: Map<String, Value> = c.gdpr.iter().map(|(k, v)| (k.clone(), consent(v))).collect();
    let ccpa = c.ccpa.as_ref().map(|ccpa| {
        Obj::default()
            .value("data_sale_opt_out", ccpa.data_sale_opt_out.as_ref().map(consent))
            .done()
    });
    Obj::default()
        .value("gdpr", (!gdpr.is_empty()).then_some(Value::Object(gdpr)))
        .value("ccpa", ccpa)
        .done()
}

/// The JSON model of a typed batch.
pub fn batch_to_value(b: &pb::Batch) -> Value {
    let identities = b.user_identities.as_ref().map(|u| {
        Obj::default()
            .text("customer_id", &u.customer_id)
            .text("email", &u.email)
            .text("other", &u.other)
            .text("mobile_number", &u.mobile_number)
            .done()
    });
    let device = b.device_info.as_ref().map(|d| {
        Obj::default()
            .text("platform", &d.platform)
            .text("ios_advertising_id", &d.ios_advertising_id)
            .text("android_advertising_id", &d.android_advertising_id)
            .text("ios_idfv", &d.ios_idfv)
            .text("android_uuid", &d.android_uuid)
            .done()
    });
    let integrations: Map<String, Value> = b
        .integration_attributes
        .iter()
        .filter_map(|(module, attrs)| {
            let value = if !attrs.attributes.is_empty() {
                Obj::default().strings("a", &attrs.attributes).0.remove("a")?
            } else if !attrs.value.is_empty() {
                Value::String(attrs.value.clone())
            } else {
                return None;
            };
            Some((module.clone(), value))
        })
        .collect();
    Obj::default()
        .value("events", Some(Value::Array(b.events.iter().map(event).collect())))
        .text("source_request_id", &b.source_request_id)
        .text("environment", &b.environment)
        .text("mpid", &b.mpid)
        .text("mp_deviceid", &b.mp_deviceid)
        .value("user_identities", identities)
        .value("device_info", device)
        .value(
            "integration_attributes",
            (!integrations.is_empty()).then_some(Value::Object(integrations)),
        )
        .value("consent_state", b.consent_state.as_ref().map(consent_state))
        .int("timestamp_unixtime_ms", b.timestamp_unixtime_ms)
        .done()
}

fn unusable(what: &str) -> TransformResult {
    TransformResult {
        rejections: vec![FieldError::new(
            ErrorKind::InvalidProtobuf,
            Location::root(),
            format!("not a valid {what} protobuf message"),
        )
        .at_event(-1)],
        ..TransformResult::default()
    }
}

/// One serialised `Batch`.
pub fn transform_batch(config: &TransformConfig, raw: &[u8], received_at_ms: i64) -> TransformResult {
    match pb::Batch::decode(raw) {
        Ok(batch) => transform_value(config, &batch_to_value(&batch), received_at_ms),
        Err(_) => unusable("Batch"),
    }
}

fn transform_request(config: &TransformConfig, request: &pb::IngestRequest, received_at_ms: i64) -> TransformResult {
    use pb::ingest_request::Payload;
    match &request.payload {
        Some(Payload::MparticleJson(json)) => transform_json(config, json, received_at_ms),
        Some(Payload::Batch(batch)) => transform_value(config, &batch_to_value(batch), received_at_ms),
        None => TransformResult {
            rejections: vec![FieldError::new(
                ErrorKind::InvalidBatch,
                Location::root().key("payload"),
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

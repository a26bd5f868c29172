//! Batch-level context: the user, the device, the integration token, consent.

use crate::email::hash_email;
use crate::encode::Customer;
use crate::ids::is_valid_btn_ref;
use crate::input::{field, integer, scalar_text};
use crate::json::{Json, Object};
use crate::time::MAX_TIMESTAMP_MS;

/// What every event of a batch shares (mParticle: one user per batch).
pub struct BatchContext {
    pub customer: Customer,
    pub device_id: Option<String>,
    pub platform: Option<String>,
    pub user_keys: Vec<String>,
    /// The valid token of the Button integration attribute (module 1022), if any.
    pub integration_token: Option<String>,
    pub batch_time_ms: Option<i64>,
    pub received_at_ms: i64,
    pub source_request_id: Option<String>,
}

fn text(object: &Object<'_>, key: &str) -> Option<String> {
    field(object, key).and_then(scalar_text).map(str::to_string)
}

fn object<'j, 'a>(object: &'j Object<'a>, key: &str) -> Option<&'j Object<'a>> {
    field(object, key).and_then(Json::as_object)
}

/// Advertising ids of all zeros mean "tracking limited": not an id.
fn advertising_id(device: &Object<'_>, key: &str) -> Option<String> {
    text(device, key).filter(|id| id.bytes().any(|b| b != b'0' && b != b'-'))
}

/// `integration_attributes["1022"]`: `com.usebutton.source_token`, then `btn_ref`, or the bare string.
fn integration_token(batch: &Object<'_>) -> Option<String> {
    let button = field(object(batch, "integration_attributes")?, "1022")?;
    let candidates: Vec<&Json<'_>> = match button {
        Json::Object(attrs) => ["com.usebutton.source_token", "btn_ref"]
            .iter()
            .filter_map(|k| field(attrs, k))
            .collect(),
        other => vec![other],
    };
    candidates
        .into_iter()
        .filter_map(Json::as_str)
        .find(|t| is_valid_btn_ref(t))
        .map(str::to_string)
}

impl BatchContext {
    pub fn new(batch: &Object<'_>, send_email: bool, received_at_ms: i64) -> BatchContext {
        let empty = Object::default();
        let identities = object(batch, "user_identities").unwrap_or(&empty);
        let device = object(batch, "device_info").unwrap_or(&empty);
        let platform = field(device, "platform").and_then(Json::as_str).map(str::to_string);
        let idfa = advertising_id(device, "ios_advertising_id");
        let gaid = advertising_id(device, "android_advertising_id");
        let device_id = match platform.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("android") => gaid.clone().or_else(|| idfa.clone()),
            _ => idfa.clone().or_else(|| gaid.clone()),
        };
        let customer_id = text(identities, "customer_id").or_else(|| text(identities, "customerid"));
        let email_sha256 = if send_email {
            field(identities, "email").and_then(Json::as_str).and_then(hash_email)
        } else {
            None
        };

        let mut user_keys = Vec::new();
        let mut add_key = |prefix: &str, value: &Option<String>| {
            if let Some(v) = value {
                user_keys.push(format!("{prefix}:{v}"));
            }
        };
        add_key("mpid", &text(batch, "mpid"));
        add_key("customer_id", &customer_id);
        add_key("idfa", &idfa);
        add_key("gaid", &gaid);
        add_key("mp_deviceid", &text(batch, "mp_deviceid"));

        BatchContext {
            customer: Customer {
                id: customer_id,
                email_sha256,
                device_id: device_id.clone(),
            },
            device_id,
            platform,
            user_keys,
            integration_token: integration_token(batch),
            // Set by mParticle on receipt, so a bad value is ignored rather than rejected.
            batch_time_ms: field(batch, "timestamp_unixtime_ms")
                .and_then(integer)
                .filter(|t| (0..=MAX_TIMESTAMP_MS).contains(t)),
            received_at_ms,
            source_request_id: text(batch, "source_request_id"),
        }
    }
}

/// Why consent filters the batch, if it does: the configured GDPR purpose not consented to, or
/// a CCPA data-sale opt-out.
pub fn consent_filter(batch: &Object<'_>, gdpr_purpose: Option<&str>) -> Option<&'static str> {
    let consent = object(batch, "consent_state");
    let consented = |regime: &str, purpose: &str| {
        consent
            .and_then(|c| object(c, regime))
            .and_then(|r| object(r, purpose))
            .and_then(|p| field(p, "consented"))
            .and_then(Json::as_bool)
    };
    if let Some(purpose) = gdpr_purpose {
        if consented("gdpr", purpose) != Some(true) {
            return Some("gdpr_consent");
        }
    }
    if consented("ccpa", "data_sale_opt_out") == Some(true) {
        return Some("ccpa_opt_out");
    }
    None
}

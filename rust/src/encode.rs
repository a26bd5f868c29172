//! Button request bodies. Absent values are omitted, never sent as null.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Serialize as DeriveSerialize;

#[derive(Debug, Clone, Default, DeriveSerialize)]
pub struct Customer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl Customer {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.email_sha256.is_none() && self.device_id.is_none()
    }
}

/// String attributes in insertion order (Button: a string -> string map).
#[derive(Debug, Clone, Default)]
pub struct Attributes<'a>(pub Vec<(&'a str, &'a str)>);

impl Attributes<'_> {
    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == key)
    }
}

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, DeriveSerialize)]
pub struct LineItem<'a> {
    pub identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub quantity: i64,
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes<'a>>,
}

/// `POST /v1/order`.
#[derive(Debug, DeriveSerialize)]
pub struct OrderBody<'a> {
    pub order_id: &'a str,
    pub currency: &'a str,
    pub total: i64,
    pub purchase_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btn_ref: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<&'a Customer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem<'a>>>,
}

/// A partial refund intent: what was refunded, for the delivery layer to subtract.
#[derive(Debug, DeriveSerialize)]
pub struct RefundBody<'a> {
    pub order_id: &'a str,
    pub currency: &'a str,
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem<'a>>>,
}

#[derive(Debug, DeriveSerialize)]
pub struct ActivityProduct<'a> {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub currency: &'a str,
    pub value: i64,
    pub quantity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes<'a>>,
}

#[derive(Debug, DeriveSerialize)]
pub struct ActivityData<'a> {
    pub name: &'static str,
    pub products: Vec<ActivityProduct<'a>>,
}

/// `POST /v1/app/activity` (Button user activity).
#[derive(Debug, DeriveSerialize)]
pub struct ActivityBody<'a> {
    pub application_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifa: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btn_ref: Option<&'a str>,
    pub activity_data: ActivityData<'a>,
}

#[derive(Debug, DeriveSerialize)]
pub struct DeeplinkValue {
    pub url: String,
}

#[derive(Debug, DeriveSerialize)]
pub struct AppEvent {
    pub name: &'static str,
    pub source: &'static str,
    pub source_token: String,
    pub time: String,
    pub uuid: String,
    pub value: DeeplinkValue,
}

/// `POST /v1/app/events` (Button app events).
#[derive(Debug, DeriveSerialize)]
pub struct AppEventsBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifa: Option<&'a str>,
    pub current_time: String,
    pub events: [AppEvent; 1],
}

/// Most bodies fit in this many bytes (orders average ~1.8 KB): growing from serde_json's 128 bytes copied
/// each body four times.
const BODY_CAPACITY: usize = 2048;

/// Serialises a body; our body types hold only strings, integers and maps, which cannot fail.
pub fn to_json<T: Serialize>(body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY_CAPACITY);
    match serde_json::to_writer(&mut out, body) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

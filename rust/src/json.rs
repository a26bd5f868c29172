//! A borrowed JSON tree: strings and number texts point into the input wherever they can.
//!
//! serde_json parses (it checks syntax, escapes and nesting); this model avoids what a
//! `serde_json::Value` costs: a `String` per key and value and a map per object. Objects keep their
//! pairs in order and look up from the end, so a repeated key means its last value, as in `Value`.
//!
//! A batch is parsed with its [`Shape`]: fields the mapping never reads are scanned (syntax checked)
//! but not built, which is most of the work saved. Where a value is not the container the shape
//! expects, it is built whole, so the mapping sees (and rejects) exactly what was sent.

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number's text exactly as written (`1.50`, `1E5`).
    Number(Cow<'a, str>),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a>(pub Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The value of `key` (the last one when the key repeats).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Pairs in order, without the earlier values of repeated keys.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        // Objects are small; past a few dozen keys, a set keeps hostile input linear.
        let last: Option<std::collections::HashMap<&str, usize>> =
            (self.0.len() > 32).then(|| self.0.iter().enumerate().map(|(i, (k, _))| (k.as_ref(), i)).collect());
        self.0.iter().enumerate().filter_map(move |(i, (k, v))| {
            let is_last = match &last {
                Some(last) => last.get(k.as_ref()) == Some(&i),
                None => !self.0[i + 1..].iter().any(|(later, _)| later == k),
            };
            is_last.then_some((k.as_ref(), v))
        })
    }
}

impl<'a> Json<'a> {
    /// Any JSON document, built whole.
    pub fn parse(raw: &'a [u8]) -> serde_json::Result<Json<'a>> {
        serde_json::from_slice(raw)
    }

    /// An mParticle batch: only the fields the mapping reads are built. The input must be UTF-8 as a
    /// whole (checked here: serde_json does not check the strings it skips).
    pub fn parse_batch(raw: &'a [u8]) -> Result<Json<'a>, String> {
        let text = simdutf8::basic::from_utf8(raw)
            // The standard check again, for the error: only it says where the input stops being UTF-8.
            .or_else(|_| std::str::from_utf8(raw))
            .map_err(|e| format!("not UTF-8 ({e})"))?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Shape::Batch.deserialize(&mut deserializer).map_err(|e| e.to_string())?;
        deserializer.end().map_err(|e| e.to_string())?;
        Ok(value)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

/// Which fields of a batch are built (the rest is only scanned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Built whole.
    Any,
    /// A value the mapping reads as a string or number: taken from its raw text, so a number keeps
    /// exactly the digits it was written with and an unescaped string is borrowed as it is.
    Scalar,
    Batch,
    Events,
    Event,
    Data,
    ProductAction,
    Products,
    Product,
    /// An object of scalars (attributes).
    Scalars,
    /// An object of which only these keys are read, each a scalar.
    Keys(&'static [&'static str]),
}

impl Shape {
    /// The shape of an array's items: only `events` and `products` have one.
    fn item(self) -> Shape {
        match self {
            Shape::Events => Shape::Event,
            Shape::Products => Shape::Product,
            _ => Shape::Any,
        }
    }

    /// The shape of the value under `key`, or None when the mapping never reads it.
    fn child(self, key: &str) -> Option<Shape> {
        match self {
            Shape::Any | Shape::Products | Shape::Events => Some(Shape::Any),
            Shape::Scalar | Shape::Scalars => Some(Shape::Scalar),
            Shape::Batch => match key {
                "events" => Some(Shape::Events),
                "user_identities" => Some(Shape::Keys(&["customer_id", "customerid", "email"])),
                "device_info" => Some(Shape::Keys(&[
                    "platform",
                    "ios_advertising_id",
                    "android_advertising_id",
                ])),
                "integration_attributes" => Some(Shape::Keys(&["1022"])),
                "consent_state" => Some(Shape::Any),
                "mpid" | "mp_deviceid" | "source_request_id" | "environment" | "timestamp_unixtime_ms" => {
                    Some(Shape::Scalar)
                }
                _ => None,
            },
            Shape::Event => match key {
                "event_type" => Some(Shape::Scalar),
                "data" => Some(Shape::Data),
                _ => None,
            },
            Shape::Data => match key {
                "product_action" => Some(Shape::ProductAction),
                "custom_attributes" => Some(Shape::Scalars),
                "timestamp_unixtime_ms"
                | "currency_code"
                | "launch_referral"
                | "launch_referrer"
                | "source_message_id" => Some(Shape::Scalar),
                _ => None,
            },
            Shape::ProductAction => match key {
                "products" => Some(Shape::Products),
                "action" | "transaction_id" | "total_amount" | "tax_amount" | "shipping_amount" => Some(Shape::Scalar),
                _ => None,
            },
            Shape::Product => match key {
                "custom_attributes" => Some(Shape::Scalars),
                "id"
                | "name"
                | "brand"
                | "category"
                | "variant"
                | "price"
                | "quantity"
                | "total_product_amount"
                | "coupon_code" => Some(Shape::Scalar),
                _ => None,
            },
            // The 1022 attribute is an object of scalars or a bare string.
            Shape::Keys(keys) => {
                keys.contains(&key)
                    .then_some(if key == "1022" { Shape::Scalars } else { Shape::Scalar })
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        if self == Shape::Scalar {
            let raw = <&'de RawValue>::deserialize(deserializer)?;
            return Json::from_raw(raw.get()).map_err(de::Error::custom);
        }
        deserializer.deserialize_any(JsonVisitor(self))
    }
}

impl<'a> Json<'a> {
    /// A value from its raw JSON text (already checked for syntax by the enclosing parse).
    fn from_raw(text: &'a str) -> serde_json::Result<Json<'a>> {
        let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
        match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => Ok(Json::String(Cow::Borrowed(&text[1..text.len() - 1]))),
            Some(b'"') => Ok(Json::String(Cow::Owned(serde_json::from_str::<String>(text)?))),
            Some(b'-' | b'0'..=b'9') => Ok(Json::Number(Cow::Borrowed(text))),
            // Literals, and containers where a scalar was expected (built whole, to be ignored or rejected).
            _ => serde_json::from_str(text),
        }
    }
}

struct JsonVisitor(Shape);

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    // Numbers the mapping reads (amounts, ids, attributes, timestamps) sit at `Scalar` positions and
    // are taken from their raw text. The numbers that come through here are inside values the mapping
    // never reads as numbers (consent state, a container where a scalar was expected): their text may
    // be rounded, and nothing depends on it.
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(Cow::Owned(v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(Cow::Owned(v.to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Number(Cow::Owned(v.to_string())))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let item_shape = self.0.item();
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(item_shape)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let Some(BorrowedText(first)) = map.next_key::<BorrowedText<'de>>()? else {
            return Ok(Json::Object(Object::default()));
        };
        // Where an array is expected, an object is built whole, to be rejected as it is.
        let shape = if matches!(self.0, Shape::Events | Shape::Products) {
            Shape::Any
        } else {
            self.0
        };
        let mut pairs = Vec::with_capacity(8);
        let mut key = Some(first);
        while let Some(k) = key {
            match shape.child(&k) {
                Some(child) => {
                    let value = map.next_value_seed(child)?;
                    pairs.push((k, value));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            key = map.next_key::<BorrowedText<'de>>()?.map(|t| t.0);
        }
        Ok(Json::Object(Object(pairs)))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json<'de>, D::Error> {
        Shape::Any.deserialize(deserializer)
    }
}

/// A string that borrows from the input when it has no escapes (`Cow<str>` alone always copies).
struct BorrowedText<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = BorrowedText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedText(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedText(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

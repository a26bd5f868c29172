//! A borrowed JSON tree: strings and number texts point into the input wherever they can, and
//! everything else (arrays, objects, unescaped strings) is allocated in one arena per batch.
//!
//! serde_json parses (it checks syntax, escapes and nesting); this model avoids what a
//! `serde_json::Value` costs: a `String` per key and value and a map per object. Objects keep their
//! pairs in order and look up from the end, so a repeated key means its last value, as in `Value`.
//! The arena (`bumpalo`) makes a batch's tree one allocation instead of dozens, and dropping it free.
//!
//! A batch is parsed with its [`Shape`]: fields the mapping never reads are scanned (syntax checked)
//! but not built, which is most of the work saved. Where a value is not the container the shape
//! expects, it is built whole, so the mapping sees (and rejects) exactly what was sent.

use bumpalo::Bump;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// The number's text exactly as written (`1.50`, `1E5`).
    Number(&'a str),
    String(&'a str),
    Array(&'a [Json<'a>]),
    Object(Object<'a>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Object<'a>(pub &'a [(&'a str, Json<'a>)]);

impl<'a> Object<'a> {
    /// The value of `key` (the last one when the key repeats).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Pairs in order, without the earlier values of repeated keys.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        // Objects are small; past a few dozen keys, a set keeps hostile input linear.
        let last: Option<std::collections::HashMap<&str, usize>> =
            (self.0.len() > 32).then(|| self.0.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect());
        self.0.iter().enumerate().filter_map(move |(i, (k, v))| {
            let is_last = match &last {
                Some(last) => last.get(k) == Some(&i),
                None => !self.0[i + 1..].iter().any(|(later, _)| later == k),
            };
            is_last.then_some((*k, v))
        })
    }
}

impl<'a> Json<'a> {
    /// Any JSON document, built whole in `arena`.
    pub fn parse(raw: &'a [u8], arena: &'a Bump) -> serde_json::Result<Json<'a>> {
        let mut deserializer = serde_json::Deserializer::from_slice(raw);
        let value = Seed::new(Shape::Any, arena).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }

    /// An mParticle batch: only the fields the mapping reads are built, in `arena`. The input must be
    /// UTF-8 as a whole (checked here: serde_json does not check the strings it skips).
    pub fn parse_batch(raw: &'a [u8], arena: &'a Bump) -> Result<Json<'a>, String> {
        let text = simdutf8::basic::from_utf8(raw)
            // The standard check again, for the error: only it says where the input stops being UTF-8.
            .or_else(|_| std::str::from_utf8(raw))
            .map_err(|e| format!("not UTF-8 ({e})"))?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Seed::new(Shape::Batch, arena)
            .deserialize(&mut deserializer)
            .map_err(|e| e.to_string())?;
        deserializer.end().map_err(|e| e.to_string())?;
        Ok(value)
    }

    pub fn as_str(&self) -> Option<&'a str> {
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

/// A shape and the arena the values are built in.
#[derive(Clone, Copy)]
struct Seed<'a> {
    shape: Shape,
    arena: &'a Bump,
}

impl<'a> Seed<'a> {
    fn new(shape: Shape, arena: &'a Bump) -> Self {
        Seed { shape, arena }
    }

    fn with(self, shape: Shape) -> Self {
        Seed { shape, ..self }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'de> {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        if self.shape == Shape::Scalar {
            let raw = <&'de RawValue>::deserialize(deserializer)?;
            return Json::from_raw(raw.get(), self.arena).map_err(de::Error::custom);
        }
        deserializer.deserialize_any(JsonVisitor(self))
    }
}

impl<'a> Json<'a> {
    /// A value from its raw JSON text (already checked for syntax by the enclosing parse).
    fn from_raw(text: &'a str, arena: &'a Bump) -> serde_json::Result<Json<'a>> {
        let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
        match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => Ok(Json::String(&text[1..text.len() - 1])),
            Some(b'"') => Ok(Json::String(arena.alloc_str(&serde_json::from_str::<String>(text)?))),
            Some(b'-' | b'0'..=b'9') => Ok(Json::Number(text)),
            // Literals, and containers where a scalar was expected (built whole, to be ignored or rejected).
            _ => Json::parse(text.as_bytes(), arena),
        }
    }
}

struct JsonVisitor<'a>(Seed<'a>);

impl<'de> Visitor<'de> for JsonVisitor<'de> {
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
        Ok(Json::Number(self.0.arena.alloc_str(&v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(self.0.arena.alloc_str(&v.to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Number(self.0.arena.alloc_str(&v.to_string())))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(self.0.arena.alloc_str(v)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let item = self.0.with(self.0.shape.item());
        let mut items = bumpalo::collections::Vec::with_capacity_in(seq.size_hint().unwrap_or(0), self.0.arena);
        while let Some(value) = seq.next_element_seed(item)? {
            items.push(value);
        }
        Ok(Json::Array(items.into_bump_slice()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let arena = self.0.arena;
        let Some(first) = map.next_key_seed(Key(arena))? else {
            return Ok(Json::Object(Object::default()));
        };
        // Where an array is expected, an object is built whole, to be rejected as it is.
        let shape = if matches!(self.0.shape, Shape::Events | Shape::Products) {
            Shape::Any
        } else {
            self.0.shape
        };
        let mut pairs = bumpalo::collections::Vec::with_capacity_in(8, arena);
        let mut key = Some(first);
        while let Some(k) = key {
            match shape.child(k) {
                Some(child) => {
                    let value = map.next_value_seed(self.0.with(child))?;
                    pairs.push((k, value));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            key = map.next_key_seed(Key(arena))?;
        }
        Ok(Json::Object(Object(pairs.into_bump_slice())))
    }
}

/// An object's key: borrowed from the input when it has no escapes, else unescaped into the arena.
struct Key<'a>(&'a Bump);

impl<'de> DeserializeSeed<'de> for Key<'de> {
    type Value = &'de str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<&'de str, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'de> {
    type Value = &'de str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<&'de str, E> {
        Ok(v)
    }

    fn visit_str<E>(self, v: &str) -> Result<&'de str, E> {
        Ok(self.0.alloc_str(v))
    }
}

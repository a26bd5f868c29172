//! Lenient reading of mParticle JSON values, the way real traffic looks.

use crate::errors::{ErrorKind, FieldError, Location};
use crate::money::{Decimal, MoneyError};
use serde_json::{Map, Value};
use std::borrow::Cow;

pub type Object = Map<String, Value>;

/// The empty object stands in for an absent one.
pub fn empty_object() -> &'static Object {
    static EMPTY: std::sync::OnceLock<Object> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Object::new)
}

/// A present, non-null value of `key`.
pub fn field<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// A string, or a number as it was written (`98765`, `1.5`); empty strings count as absent.
pub fn scalar_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Borrowed(n.as_str())),
        _ => None,
    }
}

/// An attribute value as Button wants it (a string): strings as they are, numbers as written,
/// booleans as `true`/`false`; null, objects and arrays have no string form and are dropped.
pub fn attribute_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Borrowed(n.as_str())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// The object under `key`: absent or null is empty; anything else is an `invalid_event` error.
pub fn object_field<'a>(object: &'a Object, key: &str, at: &Location) -> Result<&'a Object, FieldError> {
    match field(object, key) {
        None => Ok(empty_object()),
        Some(Value::Object(inner)) => Ok(inner),
        Some(_) => Err(FieldError::new(
            ErrorKind::InvalidEvent,
            at.key(key),
            "must be an object",
        )),
    }
}

/// A decimal from a JSON number (read from its text) or a numeric string.
pub fn decimal(value: &Value) -> Result<Decimal, MoneyError> {
    match value {
        Value::String(s) => Decimal::parse(s),
        Value::Number(n) => Decimal::parse(n.as_str()),
        _ => Err(MoneyError::Syntax),
    }
}

/// An integer value (number or numeric string, `2.0` allowed), None when it is not one.
pub fn integer(value: &Value) -> Option<i64> {
    decimal(value).ok()?.to_integer().ok()?
}

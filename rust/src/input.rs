//! Lenient reading of mParticle JSON values, the way real traffic looks.

use crate::errors::{ErrorKind, FieldError, Location};
use crate::json::{Json, Object};
use crate::money::{Decimal, MoneyError};

static EMPTY: Object<'static> = Object(&[]);

/// A present, non-null value of `key`.
pub fn field<'j, 'a>(object: &'j Object<'a>, key: &str) -> Option<&'j Json<'a>> {
    object.get(key).filter(|v| !v.is_null())
}

/// A string, or a number as it was written (`98765`, `1.5`); empty strings count as absent.
pub fn scalar_text<'j>(value: &'j Json<'_>) -> Option<&'j str> {
    match value {
        Json::String(s) if !s.is_empty() => Some(s),
        Json::Number(n) => Some(n),
        _ => None,
    }
}

/// An attribute value as Button wants it (a string): strings as they are, numbers as written,
/// booleans as `true`/`false`; null, objects and arrays have no string form and are dropped.
pub fn attribute_text<'j>(value: &'j Json<'_>) -> Option<&'j str> {
    match value {
        Json::String(s) | Json::Number(s) => Some(s),
        Json::Bool(b) => Some(if *b { "true" } else { "false" }),
        _ => None,
    }
}

/// The object under `key`: absent or null is empty; anything else is an `invalid_event` error.
pub fn object_field<'j, 'a>(
    object: &'j Object<'a>,
    key: &str,
    at: &Location<'_>,
) -> Result<&'j Object<'a>, FieldError> {
    match field(object, key) {
        None => Ok(&EMPTY),
        Some(Json::Object(inner)) => Ok(inner),
        Some(_) => Err(FieldError::new(
            ErrorKind::InvalidEvent,
            at.key(key),
            "must be an object",
        )),
    }
}

/// A decimal from a JSON number (read from its text) or a numeric string.
pub fn decimal(value: &Json<'_>) -> Result<Decimal, MoneyError> {
    match value {
        Json::String(s) | Json::Number(s) => Decimal::parse(s),
        _ => Err(MoneyError::Syntax),
    }
}

/// An integer value (number or numeric string, `2.0` allowed), None when it is not one.
pub fn integer(value: &Json<'_>) -> Option<i64> {
    decimal(value).ok()?.to_integer().ok()?
}

//! Money, quantities, currencies, order ids and timestamps of one commerce event, with field errors.

use crate::currency;
use crate::errors::{ErrorKind, FieldError, Location};
use crate::ids::is_valid_order_id;
use crate::input::{decimal, field, integer, scalar_text};
use crate::json::{Json, Object};
use crate::money::{is_py_space, Decimal, MoneyError};
use crate::time::MAX_TIMESTAMP_MS;
use std::borrow::Cow;

/// A currency and its minor-unit exponent.
pub struct Currency {
    pub code: &'static str,
    pub exponent: u32,
}

pub fn amount_error(at: Location<'_>, err: MoneyError) -> FieldError {
    let message = match err {
        MoneyError::Syntax => "must be a decimal number",
        MoneyError::Overflow => "does not fit in 64-bit minor units",
    };
    FieldError::new(ErrorKind::InvalidAmount, at, message)
}

/// A non-negative decimal amount, or None when absent.
pub fn decimal_amount(object: &Object<'_>, key: &str, at: &Location<'_>) -> Result<Option<Decimal>, FieldError> {
    let Some(value) = field(object, key) else {
        return Ok(None);
    };
    let amount = decimal(value).map_err(|e| amount_error(at.key(key), e))?;
    if amount.is_negative() {
        return Err(FieldError::new(
            ErrorKind::InvalidAmount,
            at.key(key),
            "must not be negative",
        ));
    }
    Ok(Some(amount))
}

/// A non-negative amount in minor units, or None when absent.
pub fn minor_amount(
    object: &Object<'_>,
    key: &str,
    at: &Location<'_>,
    currency: &Currency,
) -> Result<Option<i64>, FieldError> {
    decimal_amount(object, key, at)?
        .map(|d| {
            d.to_scaled_i64(currency.exponent)
                .map_err(|e| amount_error(at.key(key), e))
        })
        .transpose()
}

/// A positive whole quantity (`2`, `2.0`, `"2"`); 1 when absent.
pub fn quantity(product: &Object<'_>, at: &Location<'_>) -> Result<i64, FieldError> {
    let Some(value) = field(product, "quantity") else {
        return Ok(1);
    };
    match integer(value) {
        Some(q) if q > 0 => Ok(q),
        _ => Err(FieldError::new(
            ErrorKind::InvalidQuantity,
            at.key("quantity"),
            "must be a positive whole number",
        )),
    }
}

/// `data.currency_code` upper-cased, else the default; must be an active ISO 4217 code.
pub fn currency(data: &Object<'_>, at: &Location<'_>, default: &str) -> Result<Currency, FieldError> {
    let invalid = || {
        FieldError::new(
            ErrorKind::InvalidCurrency,
            at.key("currency_code"),
            "must be an active ISO 4217 currency code",
        )
    };
    let code = match field(data, "currency_code") {
        None => Cow::Borrowed(default),
        Some(Json::String(s)) => {
            let trimmed = s.trim_matches(is_py_space);
            if trimmed.is_empty() {
                Cow::Borrowed(default)
            } else if trimmed.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(trimmed.to_ascii_uppercase())
            } else {
                Cow::Borrowed(trimmed)
            }
        }
        Some(_) => return Err(invalid()),
    };
    let (code, exponent) = currency::find(&code).ok_or_else(invalid)?;
    Ok(Currency { code, exponent })
}

/// `product_action.transaction_id` as a string: printable ASCII, 1..=255 characters.
pub fn order_id(action: &Object<'_>, at: &Location<'_>) -> Result<String, FieldError> {
    let at = at.key("transaction_id");
    let id = match field(action, "transaction_id") {
        None => return Err(FieldError::new(ErrorKind::MissingOrderId, at, "is required")),
        Some(Json::String("")) => return Err(FieldError::new(ErrorKind::MissingOrderId, at, "is required")),
        Some(value) => scalar_text(value)
            .ok_or_else(|| FieldError::new(ErrorKind::InvalidOrderId, at, "must be a string or a number"))?,
    };
    if !is_valid_order_id(id) {
        return Err(FieldError::new(
            ErrorKind::InvalidOrderId,
            at,
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(id.to_string())
}

/// The event's time: its own `timestamp_unixtime_ms`, else the batch's, else when it was received.
pub fn event_time(data: &Object<'_>, at: &Location<'_>, fallback_ms: i64) -> Result<i64, FieldError> {
    let Some(value) = field(data, "timestamp_unixtime_ms") else {
        return Ok(fallback_ms);
    };
    match integer(value) {
        Some(t) if (0..=MAX_TIMESTAMP_MS).contains(&t) => Ok(t),
        _ => Err(FieldError::new(
            ErrorKind::InvalidTimestamp,
            at.key("timestamp_unixtime_ms"),
            "must be Unix milliseconds between 1970 and 9999",
        )),
    }
}

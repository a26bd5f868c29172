//! Rejections: why an event (or the whole batch) could not be mapped. Stable snake_case codes.

use std::fmt;

/// Every rejection code the core produces. The codes are part of the API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidJson,
    InvalidProtobuf,
    InvalidBatch,
    InvalidEvent,
    MissingOrderId,
    InvalidOrderId,
    InvalidCurrency,
    InvalidAmount,
    InvalidQuantity,
    InvalidTimestamp,
    InternalError,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidProtobuf => "invalid_protobuf",
            ErrorKind::InvalidBatch => "invalid_batch",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::MissingOrderId => "missing_order_id",
            ErrorKind::InvalidOrderId => "invalid_order_id",
            ErrorKind::InvalidCurrency => "invalid_currency",
            ErrorKind::InvalidAmount => "invalid_amount",
            ErrorKind::InvalidQuantity => "invalid_quantity",
            ErrorKind::InvalidTimestamp => "invalid_timestamp",
            ErrorKind::InternalError => "internal_error",
        }
    }
}

/// A field location, e.g. `events[2].data.currency_code`; `$` is the whole payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

impl Location {
    pub fn root() -> Location {
        Location("$".to_string())
    }

    pub fn key(&self, key: &str) -> Location {
        if self.0 == "$" {
            Location(key.to_string())
        } else {
            Location(format!("{}.{key}", self.0))
        }
    }

    pub fn index(&self, index: usize) -> Location {
        Location(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One rejected event (`event_index` -1 for the whole batch). The message never repeats the input
/// value, because payloads may hold personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub event_index: i64,
    pub kind: ErrorKind,
    pub field: String,
    pub message: String,
}

/// A rejection still looking for its event index (filled in by the event loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: ErrorKind,
    pub field: Location,
    pub message: String,
}

impl FieldError {
    pub fn new(kind: ErrorKind, field: Location, message: impl Into<String>) -> FieldError {
        FieldError {
            kind,
            field,
            message: message.into(),
        }
    }

    pub fn at_event(self, event_index: i64) -> Rejection {
        Rejection {
            event_index,
            kind: self.kind,
            message: format!("{}: {}", self.field, self.message),
            field: self.field.0,
        }
    }
}

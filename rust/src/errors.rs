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

/// A field location, e.g. `events[2].data.currency_code`; `$` is the whole payload. Built on the
/// stack as the mapping descends and only turned into text when an error needs it.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    Root,
    Key(&'a Location<'a>, &'a str),
    Index(&'a Location<'a>, usize),
}

impl<'a> Location<'a> {
    pub fn key(&'a self, key: &'a str) -> Location<'a> {
        Location::Key(self, key)
    }

    pub fn index(&'a self, index: usize) -> Location<'a> {
        Location::Index(self, index)
    }
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Root => f.write_str("$"),
            Location::Key(Location::Root, key) => f.write_str(key),
            Location::Key(parent, key) => write!(f, "{parent}.{key}"),
            Location::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
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
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(kind: ErrorKind, field: Location<'_>, message: impl Into<String>) -> FieldError {
        FieldError {
            kind,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn at_event(self, event_index: i64) -> Rejection {
        Rejection {
            event_index,
            kind: self.kind,
            message: format!("{}: {}", self.field, self.message),
            field: self.field,
        }
    }
}

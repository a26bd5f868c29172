//! What a transform produces: Button requests, rejections, learned attributions.

use crate::errors::Rejection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    CreateOrder,
    CancelOrder,
    /// A partial refund: the delivery layer resolves it against its order ledger.
    Refund,
    Activity,
    AppEvent,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::CreateOrder => "create_order",
            RequestKind::CancelOrder => "cancel_order",
            RequestKind::Refund => "refund",
            RequestKind::Activity => "activity",
            RequestKind::AppEvent => "app_event",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonRequest {
    pub kind: RequestKind,
    pub method: Option<&'static str>,
    pub path: Option<String>,
    /// JSON; never holds a plaintext email.
    pub body: Option<Vec<u8>>,
    /// The order this request belongs to; empty for activity and app events.
    pub order_id: String,
    pub event_index: i64,
    /// The `btn_ref` the body carries (creates and activity), so the delivery layer need not parse the
    /// body to know whether a stored token should be added.
    pub btn_ref: Option<String>,
}

/// A `btn_ref` seen for a user (from a deep link or the batch's integration attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub user_keys: Vec<String>,
    pub btn_ref: String,
    pub timestamp_ms: i64,
}

/// An event that was understood but produces nothing (not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub event_index: i64,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformResult {
    pub requests: Vec<ButtonRequest>,
    pub rejections: Vec<Rejection>,
    pub attributions: Vec<Attribution>,
    pub skipped: Vec<Skip>,
    /// How many events the batch held (0 when it could not be read).
    pub event_count: usize,
    /// The batch user's keys (`mpid:…`, `customer_id:…`, `idfa:…`, `gaid:…`, `mp_deviceid:…`).
    pub user_keys: Vec<String>,
    pub source_request_id: Option<String>,
    pub environment: Option<String>,
    /// Why consent filtered the whole batch (`gdpr_consent`, `ccpa_opt_out`); nothing else is produced then.
    pub filtered: Option<&'static str>,
}

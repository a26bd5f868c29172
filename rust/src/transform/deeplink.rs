//! `application_state_transition` events: the deep link that opened the app carries `btn_ref`.

use super::amounts::event_time;
use super::batch::BatchContext;
use super::Outcome;
use crate::config::TransformConfig;
use crate::encode::{to_json, AppEvent, AppEventsBody, DeeplinkValue};
use crate::errors::{FieldError, Location};
use crate::ids::{btn_ref_from_url, strip_deeplink_url};
use crate::input::field;
use crate::json::{Json, Object};
use crate::model::{Attribution, ButtonRequest, RequestKind};
use crate::time::iso8601_ms;
use sha2::{Digest, Sha256};

/// `launch_referral`, or its alias `launch_referrer`.
pub fn launch_url<'j>(data: &'j Object<'_>) -> Option<&'j str> {
    ["launch_referral", "launch_referrer"]
        .iter()
        .find_map(|k| field(data, k).and_then(Json::as_str))
        .filter(|url| !url.is_empty())
}

/// The token a deep link carries, if any (the caller remembers it for later events of the batch).
pub fn link_token(data: &Object<'_>) -> Option<Option<String>> {
    launch_url(data).map(btn_ref_from_url)
}

/// A stable id for the app event, so a redelivery is recognisable: the event's
/// `source_message_id` when it has one, else derived from what identifies the open.
fn event_uuid(data: &Object<'_>, ctx: &BatchContext, index: i64, url: &str, time_ms: i64) -> String {
    if let Some(id) = field(data, "source_message_id").and_then(Json::as_str) {
        return id.to_string();
    }
    let mut hasher = Sha256::new();
    for part in [ctx.source_request_id.as_deref().unwrap_or(""), url] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(index.to_be_bytes());
    hasher.update(time_ms.to_be_bytes());
    let h = hasher.finalize();
    let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub struct Transition<'a, 'j> {
    pub ctx: &'a BatchContext,
    pub config: &'a TransformConfig,
    pub data: &'a Object<'j>,
    /// Where `data` is.
    pub at: &'a Location<'a>,
    pub index: i64,
    /// The token of this event's own deep link, if it has one.
    pub own_token: Option<&'a str>,
}

impl Transition<'_, '_> {
    /// Learns the token for the batch's user; with `forward_app_events`, also reports the open.
    pub fn map(&self, attributions: &mut Vec<Attribution>) -> Result<Outcome, FieldError> {
        let Some(token) = self.own_token.or(self.ctx.integration_token.as_deref()) else {
            return Ok(Outcome::Skipped("no_btn_ref"));
        };
        let fallback = self.ctx.batch_time_ms.unwrap_or(self.ctx.received_at_ms);
        let time = event_time(self.data, self.at, fallback)?;
        attributions.push(Attribution {
            user_keys: self.ctx.user_keys.clone(),
            btn_ref: token.to_string(),
            timestamp_ms: time,
        });
        let url = match launch_url(self.data) {
            Some(url) if self.config.forward_app_events => url,
            _ => return Ok(Outcome::Learned),
        };
        let body = AppEventsBody {
            application_id: self.config.application_id(self.ctx.platform.as_deref()),
            ifa: self.ctx.device_id.as_deref(),
            current_time: iso8601_ms(self.ctx.received_at_ms),
            events: [AppEvent {
                name: "btn:deeplink-opened",
                source: "button",
                source_token: token.to_string(),
                time: iso8601_ms(time),
                uuid: event_uuid(self.data, self.ctx, self.index, url, time),
                value: DeeplinkValue {
                    url: strip_deeplink_url(url),
                },
            }],
        };
        Ok(Outcome::Request(ButtonRequest {
            kind: RequestKind::AppEvent,
            method: Some("POST"),
            path: Some("/v1/app/events".to_string()),
            body: Some(to_json(&body)),
            order_id: String::new(),
            event_index: self.index,
            btn_ref: None,
        }))
    }
}

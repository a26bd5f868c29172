//! mParticle batch -> Button requests (SPEC section 3).

mod amounts;
mod batch;
mod commerce;
mod deeplink;

use crate::config::TransformConfig;
use crate::errors::{ErrorKind, FieldError, Location};
use crate::input::{field, object_field};
use crate::json::{Json, Object};
use crate::model::{ButtonRequest, Skip, TransformResult};
use batch::{consent_filter, BatchContext};
use bumpalo::Bump;
use commerce::{commerce_event, product_action, CommerceEvent};
use deeplink::{link_token, Transition};
use std::cell::RefCell;

/// What one event turned into.
pub enum Outcome {
    Request(ButtonRequest),
    /// Only an attribution was learned.
    Learned,
    Skipped(&'static str),
}

fn batch_rejection(kind: ErrorKind, field: Location<'_>, message: impl Into<String>) -> TransformResult {
    TransformResult {
        rejections: vec![FieldError::new(kind, field, message).at_event(-1)],
        ..TransformResult::default()
    }
}

/// An arena kept past this size is dropped after its batch, so a rare huge batch does not hold memory.
const KEPT_ARENA_BYTES: usize = 1 << 20;

thread_local! {
    /// Each thread's arena, emptied after every batch: its memory is reused, not allocated again.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::new());
}

/// Runs `f` with this thread's arena (a fresh one if it is in use), and empties it afterwards. Nothing
/// `f` returns borrows from it.
pub(crate) fn with_arena<T>(f: impl FnOnce(&Bump) -> T) -> T {
    ARENA.with(|cell| match cell.try_borrow_mut() {
        Ok(mut arena) => {
            let out = f(&arena);
            if arena.allocated_bytes() > KEPT_ARENA_BYTES {
                *arena = Bump::new();
            } else {
                arena.reset();
            }
            out
        }
        Err(_) => f(&Bump::new()),
    })
}

/// Transforms one mParticle batch given as JSON bytes. Never fails: problems are rejections.
pub fn transform_json(config: &TransformConfig, raw: &[u8], received_at_ms: i64) -> TransformResult {
    with_arena(|arena| match Json::parse_batch(raw, arena) {
        Ok(value) => transform_value(config, &value, received_at_ms),
        Err(err) => batch_rejection(
            ErrorKind::InvalidJson,
            Location::Root,
            format!("not valid JSON ({err})"),
        ),
    })
}

/// Transforms one parsed mParticle batch.
pub fn transform_value(config: &TransformConfig, value: &Json<'_>, received_at_ms: i64) -> TransformResult {
    let Some(batch) = value.as_object() else {
        return batch_rejection(ErrorKind::InvalidBatch, Location::Root, "a batch must be a JSON object");
    };
    let events: &[Json<'_>] = match field(batch, "events") {
        None => &[],
        Some(Json::Array(events)) => events,
        Some(_) => {
            return batch_rejection(
                ErrorKind::InvalidBatch,
                Location::Root.key("events"),
                "must be an array",
            )
        }
    };
    let ctx = BatchContext::new(batch, config.send_email, received_at_ms);
    let mut result = TransformResult {
        user_keys: ctx.user_keys.clone(),
        source_request_id: ctx.source_request_id.clone(),
        environment: field(batch, "environment").and_then(Json::as_str).map(str::to_string),
        event_count: events.len(),
        ..TransformResult::default()
    };
    if let Some(reason) = consent_filter(batch, config.gdpr_purpose.as_deref()) {
        result.filtered = Some(reason);
        return result;
    }
    // The token of the latest deep link seen so far in this batch.
    let mut link: Option<String> = None;
    let events_at = Location::Root.key("events");
    for (i, event) in events.iter().enumerate() {
        let index = i as i64;
        let at = events_at.index(i);
        match map_event(&ctx, config, event, &at, index, &mut link, &mut result) {
            Ok(Outcome::Request(request)) => result.requests.push(request),
            Ok(Outcome::Learned) => {}
            Ok(Outcome::Skipped(reason)) => result.skipped.push(Skip {
                event_index: index,
                reason,
            }),
            Err(err) => result.rejections.push(err.at_event(index)),
        }
    }
    result
}

fn map_event(
    ctx: &BatchContext,
    config: &TransformConfig,
    event: &Json<'_>,
    at: &Location<'_>,
    index: i64,
    link: &mut Option<String>,
    result: &mut TransformResult,
) -> Result<Outcome, FieldError> {
    let event = event
        .as_object()
        .ok_or_else(|| FieldError::new(ErrorKind::InvalidEvent, *at, "must be an object"))?;
    let event_type = field(event, "event_type").and_then(Json::as_str).unwrap_or("");
    let data_at = at.key("data");
    let data = || -> Result<&Object<'_>, FieldError> { object_field(event, "data", at) };
    match event_type {
        "commerce_event" => {
            let data = data()?;
            let Some(action) = product_action(data, &data_at)? else {
                return Ok(Outcome::Skipped("no_product_action"));
            };
            commerce_event(&CommerceEvent {
                ctx,
                config,
                data,
                action,
                at: &data_at,
                index,
                link_token: link.as_deref(),
            })
        }
        "application_state_transition" => {
            let data = data()?;
            let own = link_token(data);
            if let Some(token) = &own {
                link.clone_from(token);
            }
            let own_token = own.flatten();
            Transition {
                ctx,
                config,
                data,
                at: &data_at,
                index,
                own_token: own_token.as_deref(),
            }
            .map(&mut result.attributions)
        }
        _ => Ok(Outcome::Skipped("unsupported_event")),
    }
}

#[cfg(test)]
mod tests;

//! Commerce events: purchases to orders, refunds to cancellations or refund intents, other
//! product actions to user activity.

use super::amounts::{amount_error, currency, decimal_amount, event_time, minor_amount, order_id, quantity, Currency};
use super::batch::BatchContext;
use super::Outcome;
use crate::config::TransformConfig;
use crate::encode::{
    to_json, ActivityBody, ActivityData, ActivityProduct, Attributes, LineItem, OrderBody, RefundBody,
};
use crate::errors::{ErrorKind, FieldError, Location};
use crate::ids::{is_valid_btn_ref, order_path, LineItemIds};
use crate::input::{attribute_text, field, object_field, scalar_text};
use crate::json::{Json, Object};
use crate::model::{ButtonRequest, RequestKind};
use crate::time::iso8601_ms;
use std::borrow::Cow;

/// The event's products as line items; an empty list when there are none.
fn line_items<'j>(
    action: &'j Object<'_>,
    at: &Location<'_>,
    currency: &Currency,
) -> Result<Vec<LineItem<'j>>, FieldError> {
    let products_at = at.key("products");
    let products = match field(action, "products") {
        None => return Ok(Vec::new()),
        Some(Json::Array(products)) => products,
        Some(_) => {
            return Err(FieldError::new(
                ErrorKind::InvalidEvent,
                products_at,
                "must be an array",
            ))
        }
    };
    let mut ids = LineItemIds::default();
    products
        .iter()
        .enumerate()
        .map(|(j, product)| {
            let at = products_at.index(j);
            let product = product
                .as_object()
                .ok_or_else(|| FieldError::new(ErrorKind::InvalidEvent, at, "must be an object"))?;
            line_item(product, &at, currency, j, &mut ids)
        })
        .collect()
}

fn line_item<'j>(
    product: &'j Object<'_>,
    at: &Location<'_>,
    currency: &Currency,
    position: usize,
    ids: &mut LineItemIds<'j>,
) -> Result<LineItem<'j>, FieldError> {
    let text = |key: &str| field(product, key).and_then(scalar_text);
    let sku = text("id");
    let description = text("name");
    let quantity = quantity(product, at)?;
    let price = decimal_amount(product, "price", at)?;
    let amount = price
        .as_ref()
        .map(|p| {
            p.to_scaled_i64(currency.exponent)
                .map_err(|e| amount_error(at.key("price"), e))
        })
        .transpose()?;
    let total = match minor_amount(product, "total_product_amount", at, currency)? {
        Some(total) => total,
        // price * quantity exactly, rounded once.
        None => match &price {
            Some(price) => price
                .times(quantity.unsigned_abs())
                .to_scaled_i64(currency.exponent)
                .map_err(|e| amount_error(at.key("price"), e))?,
            None => {
                return Err(FieldError::new(
                    ErrorKind::InvalidAmount,
                    at.key("price"),
                    "a product needs price or total_product_amount",
                ))
            }
        },
    };
    let identifier = match sku.or(description) {
        Some(base) => ids.assign(Cow::Borrowed(base)),
        None => ids.assign(Cow::Owned(format!("item-{}", position + 1))),
    };
    let mut attributes = Attributes::default();
    if let Some(Json::Object(custom)) = field(product, "custom_attributes") {
        for (k, v) in custom.iter() {
            if let Some(v) = attribute_text(v) {
                attributes.0.push((k, v));
            }
        }
    }
    for key in ["brand", "variant", "coupon_code"] {
        if !attributes.contains(key) {
            if let Some(v) = text(key) {
                attributes.0.push((key, v));
            }
        }
    }
    Ok(LineItem {
        identifier,
        sku,
        description,
        quantity,
        total,
        amount,
        category: text("category").map(|c| [c]),
        attributes: (!attributes.0.is_empty()).then_some(attributes),
    })
}

/// The commissionable amount: `total_amount` minus tax and shipping (unless configured to keep
/// them), else the sum of the line totals.
fn order_total(
    action: &Object<'_>,
    at: &Location<'_>,
    currency: &Currency,
    items: &[LineItem<'_>],
    config: &TransformConfig,
) -> Result<i64, FieldError> {
    let overflow = |key: &str| amount_error(at.key(key), crate::money::MoneyError::Overflow);
    let Some(total) = minor_amount(action, "total_amount", at, currency)? else {
        if items.is_empty() {
            return Err(FieldError::new(
                ErrorKind::InvalidAmount,
                at.key("total_amount"),
                "is required when there are no products",
            ));
        }
        return items
            .iter()
            .try_fold(0i64, |sum, item| sum.checked_add(item.total))
            .ok_or_else(|| overflow("products"));
    };
    if config.include_tax_and_shipping {
        return Ok(total);
    }
    let tax = minor_amount(action, "tax_amount", at, currency)?.unwrap_or(0);
    let shipping = minor_amount(action, "shipping_amount", at, currency)?.unwrap_or(0);
    // Each part is in 0..=i64::MAX; in i128 the difference cannot wrap.
    let net = i128::from(total) - i128::from(tax) - i128::from(shipping);
    if net < 0 {
        return Err(FieldError::new(
            ErrorKind::InvalidAmount,
            at.key("total_amount"),
            "is less than tax_amount plus shipping_amount",
        ));
    }
    // 0 <= net <= total here.
    Ok(net as i64)
}

/// The first valid token of the event: the integration attribute, the event's custom attribute,
/// then the latest deep link of the batch.
fn event_btn_ref<'a>(ctx: &'a BatchContext, data: &'a Object<'_>, link_token: Option<&'a str>) -> Option<&'a str> {
    let custom = match field(data, "custom_attributes") {
        Some(Json::Object(attrs)) => field(attrs, "btn_ref").and_then(Json::as_str),
        _ => None,
    };
    ctx.integration_token
        .as_deref()
        .or(custom.filter(|t| is_valid_btn_ref(t)))
        .or(link_token)
}

pub struct CommerceEvent<'a, 'j> {
    pub ctx: &'a BatchContext,
    pub config: &'a TransformConfig,
    pub data: &'a Object<'j>,
    pub action: &'a Object<'j>,
    /// Where `data` is.
    pub at: &'a Location<'a>,
    pub index: i64,
    pub link_token: Option<&'a str>,
}

impl CommerceEvent<'_, '_> {
    pub fn purchase(&self) -> Result<Outcome, FieldError> {
        let action_at = self.at.key("product_action");
        let order_id = order_id(self.action, &action_at)?;
        let currency = currency(self.data, self.at, &self.config.default_currency)?;
        let fallback = self.ctx.batch_time_ms.unwrap_or(self.ctx.received_at_ms);
        let time = event_time(self.data, self.at, fallback)?;
        let items = line_items(self.action, &action_at, &currency)?;
        let total = order_total(self.action, &action_at, &currency, &items, self.config)?;
        let btn_ref = event_btn_ref(self.ctx, self.data, self.link_token);
        if btn_ref.is_none() && self.config.require_btn_ref {
            return Ok(Outcome::Skipped("missing_btn_ref"));
        }
        let body = OrderBody {
            order_id: &order_id,
            currency: currency.code,
            total,
            purchase_date: iso8601_ms(time),
            btn_ref,
            customer: (!self.ctx.customer.is_empty()).then_some(&self.ctx.customer),
            line_items: (!items.is_empty()).then_some(items),
        };
        Ok(Outcome::Request(ButtonRequest {
            kind: RequestKind::CreateOrder,
            method: Some("POST"),
            path: Some("/v1/order".to_string()),
            body: Some(to_json(&body)),
            order_id,
            event_index: self.index,
            btn_ref: btn_ref.map(str::to_string),
        }))
    }

    /// No products and no amount: the whole order is cancelled. Otherwise a refund intent that the
    /// delivery layer turns into an update of the order.
    pub fn refund(&self) -> Result<Outcome, FieldError> {
        let action_at = self.at.key("product_action");
        let order_id = order_id(self.action, &action_at)?;
        // Malformed products are a rejection (as for a purchase), never a cancel of the whole order.
        let has_products = match field(self.action, "products") {
            None => false,
            Some(Json::Array(products)) => !products.is_empty(),
            Some(_) => true,
        };
        if !has_products && field(self.action, "total_amount").is_none() {
            return Ok(Outcome::Request(ButtonRequest {
                kind: RequestKind::CancelOrder,
                method: Some("DELETE"),
                path: Some(order_path(&order_id)),
                body: None,
                order_id,
                event_index: self.index,
                btn_ref: None,
            }));
        }
        let currency = currency(self.data, self.at, &self.config.default_currency)?;
        let items = line_items(self.action, &action_at, &currency)?;
        let total = order_total(self.action, &action_at, &currency, &items, self.config)?;
        let body = RefundBody {
            order_id: &order_id,
            currency: currency.code,
            total,
            line_items: (!items.is_empty()).then_some(items),
        };
        Ok(Outcome::Request(ButtonRequest {
            kind: RequestKind::Refund,
            method: None,
            path: None,
            body: Some(to_json(&body)),
            order_id,
            event_index: self.index,
            btn_ref: None,
        }))
    }

    /// Product views, adds to cart and checkouts as Button user activity.
    pub fn activity(&self, name: &'static str) -> Result<Outcome, FieldError> {
        if !self.config.forward_activity {
            return Ok(Outcome::Skipped("activity_not_forwarded"));
        }
        let Some(application_id) = self.config.application_id(self.ctx.platform.as_deref()) else {
            return Ok(Outcome::Skipped("no_application_id"));
        };
        let action_at = self.at.key("product_action");
        let currency = currency(self.data, self.at, &self.config.default_currency)?;
        let products = line_items(self.action, &action_at, &currency)?
            .into_iter()
            .map(|item| ActivityProduct {
                id: item.sku.map(Cow::Borrowed).unwrap_or(item.identifier),
                name: item.description,
                currency: currency.code,
                value: item.amount.unwrap_or(item.total),
                quantity: item.quantity,
                categories: item.category,
                attributes: item.attributes,
            })
            .collect();
        let btn_ref = event_btn_ref(self.ctx, self.data, self.link_token);
        let body = ActivityBody {
            application_id,
            ifa: self.ctx.device_id.as_deref(),
            btn_ref,
            activity_data: ActivityData { name, products },
        };
        Ok(Outcome::Request(ButtonRequest {
            kind: RequestKind::Activity,
            method: Some("POST"),
            path: Some("/v1/app/activity".to_string()),
            body: Some(to_json(&body)),
            order_id: String::new(),
            event_index: self.index,
            btn_ref: btn_ref.map(str::to_string),
        }))
    }
}

/// Dispatches a `commerce_event` by its product action.
pub fn commerce_event(event: &CommerceEvent<'_, '_>) -> Result<Outcome, FieldError> {
    let action = field(event.action, "action").and_then(Json::as_str).unwrap_or("");
    let is = |name: &str| action.eq_ignore_ascii_case(name);
    if is("purchase") {
        event.purchase()
    } else if is("refund") {
        event.refund()
    } else if is("view_detail") {
        event.activity("product-viewed")
    } else if is("add_to_cart") {
        event.activity("add-to-cart")
    } else if is("checkout") {
        event.activity("cart-viewed")
    } else {
        Ok(Outcome::Skipped("unsupported_action"))
    }
}

/// `data.product_action`, if the commerce event has one.
pub fn product_action<'j, 'a>(data: &'j Object<'a>, at: &Location<'_>) -> Result<Option<&'j Object<'a>>, FieldError> {
    if field(data, "product_action").is_none() {
        return Ok(None);
    }
    object_field(data, "product_action", at).map(Some)
}

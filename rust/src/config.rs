//! `TransformConfig`: the options of the mapping, validated once on construction.

use crate::currency;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformConfig {
    /// Currency for events without `currency_code` (upper-case ISO 4217).
    pub default_currency: String,
    /// Report `total_amount` as is instead of subtracting tax and shipping.
    pub include_tax_and_shipping: bool,
    /// Send `customer.email_sha256`.
    pub send_email: bool,
    /// Skip purchases that carry no attribution token.
    pub require_btn_ref: bool,
    /// Send product views, adds to cart and checkouts as Button user activity.
    pub forward_activity: bool,
    /// Send deep-link opens as Button `btn:deeplink-opened` app events.
    pub forward_app_events: bool,
    /// Button application id per `device_info.platform` (keys lower-cased).
    pub application_ids: Vec<(String, String)>,
    /// The GDPR purpose a batch must have consented to; None turns the check off.
    pub gdpr_purpose: Option<String>,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            default_currency: "USD".to_string(),
            include_tax_and_shipping: false,
            send_email: true,
            require_btn_ref: false,
            forward_activity: false,
            forward_app_events: false,
            application_ids: Vec::new(),
            gdpr_purpose: None,
        }
    }
}

fn is_application_id(id: &str) -> bool {
    id.strip_prefix("app-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl TransformConfig {
    /// Normalises and checks every field; the error names the field.
    pub fn validated(mut self) -> Result<TransformConfig, String> {
        self.default_currency = self.default_currency.trim().to_ascii_uppercase();
        if currency::exponent(&self.default_currency).is_none() {
            return Err("default_currency: must be an active ISO 4217 currency code, e.g. \"USD\"".to_string());
        }
        for (platform, app_id) in &mut self.application_ids {
            *platform = platform.trim().to_ascii_lowercase();
            if platform.is_empty() {
                return Err("application_ids: platform names must not be empty".to_string());
            }
            if !is_application_id(app_id) {
                return Err(format!(
                    "application_ids[{platform:?}]: must be a Button application id like \"app-1a2b3c\""
                ));
            }
        }
        if let Some(purpose) = &self.gdpr_purpose {
            if purpose.trim().is_empty() {
                return Err("gdpr_purpose: must be a non-empty purpose name or None".to_string());
            }
        }
        Ok(self)
    }

    pub fn application_id(&self, platform: Option<&str>) -> Option<&str> {
        let platform = platform?.to_ascii_lowercase();
        self.application_ids
            .iter()
            .find(|(p, _)| *p == platform)
            .map(|(_, id)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let bad = TransformConfig {
            default_currency: "ABC".into(),
            ..Default::default()
        };
        assert!(bad.validated().unwrap_err().starts_with("default_currency"));
        let bad = TransformConfig {
            application_ids: vec![("ios".into(), "nope".into())],
            ..Default::default()
        };
        assert!(bad.validated().unwrap_err().starts_with("application_ids"));
        let ok = TransformConfig {
            default_currency: " eur ".into(),
            application_ids: vec![("iOS".into(), "app-abc123".into())],
            ..Default::default()
        }
        .validated()
        .unwrap();
        assert_eq!(ok.default_currency, "EUR");
        assert_eq!(ok.application_id(Some("IOS")), Some("app-abc123"));
    }
}

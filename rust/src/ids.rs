//! Identifier rules: order ids, attribution tokens, line-item identifiers and path encoding.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustc_hash::{FxHashMap, FxHashSet};
use std::borrow::Cow;

/// Everything but RFC 3986 unreserved characters is encoded in a path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub const MAX_ID_LEN: usize = 255;

/// Button order ids: printable ASCII, 1..=255 characters.
pub fn is_valid_order_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// `/v1/order/{id}` with the id percent-encoded (ids may hold `/`, spaces, `%`).
pub fn order_path(order_id: &str) -> String {
    format!("/v1/order/{}", utf8_percent_encode(order_id, PATH_SEGMENT))
}

/// A Button attribution token: 1..=255 characters of `[A-Za-z0-9._~-]`.
pub fn is_valid_btn_ref(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_ID_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// The query part of a URL: between the first `?` and the fragment.
fn query(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once('?')?;
    Some(rest.split('#').next().unwrap_or(rest))
}

/// The first valid `btn_ref` query parameter of a deep link, percent-decoded.
pub fn btn_ref_from_url(url: &str) -> Option<String> {
    query(url)?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "btn_ref")
        .filter_map(|(_, value)| percent_decode_str(value).decode_utf8().ok())
        .find(|token| is_valid_btn_ref(token))
        .map(|token| token.into_owned())
}

/// Keeps only the query parameters Button's app SDKs keep in a `btn:deeplink-opened` URL:
/// `btn_*`, `from_landing` and `from_tracking`.
pub fn strip_deeplink_url(url: &str) -> String {
    let without_fragment = url.split('#').next().unwrap_or(url);
    let (base, query) = match without_fragment.split_once('?') {
        Some((base, query)) => (base, query),
        None => return without_fragment.to_string(),
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or(pair);
            key.starts_with("btn_") || key == "from_landing" || key == "from_tracking"
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Past this many identifiers an order's are kept in a set: below it a scan is cheaper than hashing
/// (an order holds a handful of items), above it the set keeps hostile input linear.
const SCAN_LIMIT: usize = 32;

/// Hands out line-item identifiers that are unique within one order: a repeated identifier gets
/// `-2`, `-3`, ... (skipping any suffix already taken by another item). An identifier seen once is
/// handed back as it came (borrowed from the batch), so most items cost no allocation.
#[derive(Default)]
pub struct LineItemIds<'a> {
    /// The identifiers handed out, until there are more than `SCAN_LIMIT`; then `used_set` holds them.
    used: Vec<Cow<'a, str>>,
    used_set: Option<FxHashSet<Cow<'a, str>>>,
    /// The last suffix handed out per repeated identifier (one seen once is not in it).
    repeats: FxHashMap<String, u32>,
}

impl<'a> LineItemIds<'a> {
    pub fn assign(&mut self, base: Cow<'a, str>) -> Cow<'a, str> {
        if !self.is_used(&base) {
            return self.take(base);
        }
        // Suffixes below the last one handed out for this base are all taken: nothing is ever freed.
        let mut n = self.repeats.get(base.as_ref()).copied().unwrap_or(1);
        let id = loop {
            n += 1;
            let candidate = format!("{base}-{n}");
            if !self.is_used(&candidate) {
                break candidate;
            }
        };
        self.repeats.insert(base.into_owned(), n);
        self.take(Cow::Owned(id))
    }

    fn is_used(&self, id: &str) -> bool {
        match &self.used_set {
            Some(set) => set.contains(id),
            None => self.used.iter().any(|used| used == id),
        }
    }

    fn take(&mut self, id: Cow<'a, str>) -> Cow<'a, str> {
        match &mut self.used_set {
            Some(set) => {
                set.insert(id.clone());
            }
            None => {
                self.used.push(id.clone());
                if self.used.len() > SCAN_LIMIT {
                    self.used_set = Some(self.used.drain(..).collect());
                }
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids() {
        assert!(is_valid_order_id("A/B 100%"));
        assert!(is_valid_order_id(&"x".repeat(255)));
        assert!(!is_valid_order_id(&"x".repeat(256)));
        assert!(!is_valid_order_id(""));
        assert!(!is_valid_order_id("o-été"));
        assert!(!is_valid_order_id("tab\there"));
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(order_path("A/B 100%"), "/v1/order/A%2FB%20100%25");
        assert_eq!(order_path("order-2007_x.y~z"), "/v1/order/order-2007_x.y~z");
        assert_eq!(order_path("a?b#c"), "/v1/order/a%3Fb%23c");
    }

    #[test]
    fn btn_refs() {
        assert!(is_valid_btn_ref("srctok-abc123"));
        assert!(is_valid_btn_ref("fakesrctok-0123456789abcdef"));
        assert!(!is_valid_btn_ref("not a token!"));
        assert!(!is_valid_btn_ref(""));
        assert!(!is_valid_btn_ref(&"a".repeat(256)));
    }

    #[test]
    fn btn_ref_in_urls() {
        let url = "myapp://open?utm_source=x&btn_ref=srctok-fromlink#frag";
        assert_eq!(btn_ref_from_url(url).as_deref(), Some("srctok-fromlink"));
        assert_eq!(
            btn_ref_from_url("https://x.test/?btn_ref=bad!&btn_ref=srctok-2").as_deref(),
            Some("srctok-2")
        );
        assert_eq!(
            btn_ref_from_url("https://x.test/?btn_ref=srctok%2D3").as_deref(),
            Some("srctok-3")
        );
        assert_eq!(btn_ref_from_url("https://x.test/#btn_ref=srctok-4"), None);
        assert_eq!(btn_ref_from_url("https://x.test/?xbtn_ref=srctok-5"), None);
        assert_eq!(btn_ref_from_url("no query"), None);
    }

    #[test]
    fn deeplink_urls_keep_button_params_only() {
        assert_eq!(
            strip_deeplink_url("app://p/1?utm_source=a&btn_ref=srctok-1&from_landing=true&x=y#f"),
            "app://p/1?btn_ref=srctok-1&from_landing=true"
        );
        assert_eq!(strip_deeplink_url("app://p/1?utm=a"), "app://p/1");
    }

    #[test]
    fn line_item_ids_stay_unique_past_the_scan_limit() {
        let mut ids = LineItemIds::default();
        let got: Vec<Cow<str>> = (0..100)
            .map(|i| ids.assign(Cow::Borrowed(if i % 2 == 0 { "a" } else { "a-3" })))
            .collect();
        let unique: FxHashSet<&Cow<str>> = got.iter().collect();
        assert_eq!(unique.len(), 100);
        assert_eq!(got[..6], ["a", "a-3", "a-2", "a-3-2", "a-4", "a-3-3"]);
        assert_eq!(got[98..], ["a-51", "a-3-50"]);
    }

    #[test]
    fn line_item_ids_are_unique() {
        let mut ids = LineItemIds::default();
        let got: Vec<Cow<str>> = [
            "sku-1",
            "sku-1",
            "Gift Card",
            "item-4",
            "sku-1",
            "sku-1-2",
            "x",
            "x-2",
            "x",
        ]
        .iter()
        .map(|b| ids.assign(Cow::Borrowed(b)))
        .collect();
        assert_eq!(
            got,
            [
                "sku-1",
                "sku-1-2",
                "Gift Card",
                "item-4",
                "sku-1-3",
                "sku-1-2-2",
                "x",
                "x-2",
                "x-3"
            ]
        );
    }
}

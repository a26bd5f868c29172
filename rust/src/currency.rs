//! Active ISO 4217 currencies and their minor-unit exponents.
//!
//! Funds, precious metals and other codes without a minor unit (XAU, XDR, XXX, ...) are not order
//! currencies and are left out; so are withdrawn codes (HRK, SLL, ANG, ZWL, CUC, ...).

const ZERO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
    "XPF",
];

const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

const FOUR_DECIMALS: &[&str] = &["CLF", "UYW"];

const TWO_DECIMALS: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BMD", "BND", "BOB",
    "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC",
    "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP",
    "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW",
    "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP",
    "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN",
    "UYU", "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
];

/// The minor-unit exponent of an active ISO 4217 code (upper case), or None for anything else.
pub fn exponent(code: &str) -> Option<u32> {
    find(code).map(|(_, exponent)| exponent)
}

/// An active ISO 4217 code (upper case) as the table holds it, with its exponent; None for anything else.
pub fn find(code: &str) -> Option<(&'static str, u32)> {
    let tables: [(&[&'static str], u32); 4] = [
        (TWO_DECIMALS, 2),
        (ZERO_DECIMALS, 0),
        (THREE_DECIMALS, 3),
        (FOUR_DECIMALS, 4),
    ];
    tables.iter().find_map(|&(codes, exponent)| {
        let at = codes.binary_search(&code).ok()?;
        Some((codes[at], exponent))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [ZERO_DECIMALS, THREE_DECIMALS, FOUR_DECIMALS, TWO_DECIMALS] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:?}");
        }
    }

    #[test]
    fn exponents() {
        assert_eq!(exponent("USD"), Some(2));
        assert_eq!(exponent("JPY"), Some(0));
        assert_eq!(exponent("KWD"), Some(3));
        assert_eq!(exponent("CLF"), Some(4));
        assert_eq!(exponent("usd"), None);
        assert_eq!(exponent("ABC"), None);
        assert_eq!(exponent("XAU"), None);
        assert_eq!(exponent("HRK"), None);
        assert_eq!(find("KWD"), Some(("KWD", 3)));
    }
}

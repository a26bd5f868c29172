//! Exact decimal money: text in, integer minor units out. No binary float anywhere.

/// A decimal read exactly from text: `(-1)^negative * digits * 10^exponent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Base-10 digits, most significant first, without leading zeros (empty means zero).
    digits: Vec<u8>,
    exponent: i64,
}

/// Why an amount could not become minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    /// Not a decimal number (`"abc"`, `"1.2.3"`, `""`, `NaN`).
    Syntax,
    /// The result does not fit in a signed 64-bit integer.
    Overflow,
}

/// Exponents beyond this are clamped: they already overflow (or round to zero) any i64 amount.
const EXPONENT_CLAMP: i64 = 1_000_000;

/// Python's `str.strip()` set: Unicode white space plus the ASCII separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

impl Decimal {
    /// Parses `[+-]? (digits [. digits*] | . digits) ([eE] [+-]? digits)?`, surrounding white space allowed.
    pub fn parse(text: &str) -> Result<Decimal, MoneyError> {
        let s = text.trim_matches(is_py_space).as_bytes();
        let mut i = 0;
        let negative = match s.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut digits = Vec::with_capacity(s.len());
        let mut exponent: i64 = 0;
        let mut seen_digit = false;
        while i < s.len() && s[i].is_ascii_digit() {
            digits.push(s[i] - b'0');
            seen_digit = true;
            i += 1;
        }
        if i < s.len() && s[i] == b'.' {
            i += 1;
            while i < s.len() && s[i].is_ascii_digit() {
                digits.push(s[i] - b'0');
                exponent -= 1;
                seen_digit = true;
                i += 1;
            }
        }
        if !seen_digit {
            return Err(MoneyError::Syntax);
        }
        if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
            i += 1;
            let exp_negative = match s.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            let mut value: i64 = 0;
            while i < s.len() && s[i].is_ascii_digit() {
                value = (value * 10 + i64::from(s[i] - b'0')).min(EXPONENT_CLAMP);
                i += 1;
            }
            if i == start {
                return Err(MoneyError::Syntax);
            }
            exponent += if exp_negative { -value } else { value };
        }
        if i != s.len() {
            return Err(MoneyError::Syntax);
        }
        let first_nonzero = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
        digits.drain(..first_nonzero);
        Ok(Decimal {
            negative,
            digits,
            exponent,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    /// This value times a non-negative integer, exactly.
    pub fn times(&self, factor: u64) -> Decimal {
        let mut out = vec![0u8; self.digits.len() + 20];
        let mut carry: u128 = 0;
        let mut pos = out.len();
        for &d in self.digits.iter().rev() {
            let v = u128::from(d) * u128::from(factor) + carry;
            pos -= 1;
            out[pos] = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            pos -= 1;
            out[pos] = (carry % 10) as u8;
            carry /= 10;
        }
        let mut digits = out.split_off(pos);
        if factor == 0 {
            digits.clear();
        }
        let first_nonzero = digits.iter().position(|&d| d != 0).unwrap_or(digits.len());
        digits.drain(..first_nonzero);
        Decimal {
            negative: self.negative,
            digits,
            exponent: self.exponent,
        }
    }

    /// Scales by `10^scale` and rounds half-to-even to an i64.
    pub fn to_scaled_i64(&self, scale: u32) -> Result<i64, MoneyError> {
        if self.is_zero() {
            return Ok(0);
        }
        let shift = self.exponent + i64::from(scale);
        let len = self.digits.len() as i64;
        let (int_digits, dropped): (&[u8], &[u8]) = if shift >= 0 {
            (&self.digits, &[])
        } else if -shift >= len {
            (&[], &self.digits)
        } else {
            self.digits.split_at((len + shift) as usize)
        };
        let zeros = shift.max(0);
        if int_digits.len() as i64 + zeros > 19 {
            return Err(MoneyError::Overflow);
        }
        let mut magnitude: u128 = 0;
        for &d in int_digits {
            magnitude = magnitude * 10 + u128::from(d);
        }
        magnitude *= 10u128.pow(zeros as u32);
        // Half-to-even: compare the dropped part with one half of the last kept unit.
        // Dropped digits sit right after the kept ones only when no extra zeros come between.
        let gap = if shift < 0 { (-shift - len).max(0) } else { 0 };
        if gap == 0 && !dropped.is_empty() {
            let first = dropped[0];
            let rest_nonzero = dropped[1..].iter().any(|&d| d != 0);
            let round_up = first > 5 || (first == 5 && (rest_nonzero || magnitude % 2 == 1));
            if round_up {
                magnitude += 1;
            }
        }
        let limit: u128 = if self.negative { 1u128 << 63 } else { (1u128 << 63) - 1 };
        if magnitude > limit {
            return Err(MoneyError::Overflow);
        }
        if self.negative {
            // magnitude <= 2^63 here, so the negation fits.
            Ok((magnitude as i128).wrapping_neg() as i64)
        } else {
            Ok(magnitude as i64)
        }
    }

    /// The value as a whole number, when it is one (`2`, `2.0`, `2e0`); None for fractions.
    pub fn to_integer(&self) -> Result<Option<i64>, MoneyError> {
        let trailing_zeros = self.digits.iter().rev().take_while(|&&d| d == 0).count() as i64;
        if !self.is_zero() && self.exponent + trailing_zeros < 0 {
            return Ok(None);
        }
        self.to_scaled_i64(0).map(Some)
    }
}

/// `amount` (decimal text) in the minor units of a currency with `exponent` decimals.
pub fn to_minor_units(amount: &str, exponent: u32) -> Result<i64, MoneyError> {
    Decimal::parse(amount)?.to_scaled_i64(exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(text: &str, exp: u32) -> Result<i64, MoneyError> {
        to_minor_units(text, exp)
    }

    #[test]
    fn exponent_classes() {
        assert_eq!(minor("1500", 0), Ok(1500));
        assert_eq!(minor("12.34", 2), Ok(1234));
        assert_eq!(minor("12.3456", 3), Ok(12346));
        assert_eq!(minor("1.23456", 4), Ok(12346));
        assert_eq!(minor("0.5", 0), Ok(0));
        assert_eq!(minor("1.5", 0), Ok(2));
    }

    #[test]
    fn half_even_ties() {
        assert_eq!(minor("2.675", 2), Ok(268));
        assert_eq!(minor("1.015", 2), Ok(102));
        assert_eq!(minor("0.125", 2), Ok(12));
        assert_eq!(minor("0.135", 2), Ok(14));
        assert_eq!(minor("0.1250001", 2), Ok(13));
        assert_eq!(minor("0.0005", 3), Ok(0));
        assert_eq!(minor("0.0015", 3), Ok(2));
        assert_eq!(minor("-2.675", 2), Ok(-268));
        assert_eq!(minor("-0.001", 2), Ok(0));
        assert_eq!(minor("0.004999", 2), Ok(0));
        assert_eq!(minor("0.00000001", 2), Ok(0));
    }

    #[test]
    fn lenient_text() {
        assert_eq!(minor(" 0.10 ", 2), Ok(10));
        assert_eq!(minor("+3.", 2), Ok(300));
        assert_eq!(minor(".5", 2), Ok(50));
        assert_eq!(minor("1e2", 2), Ok(10000));
        assert_eq!(minor("1.5E-1", 2), Ok(15));
        assert_eq!(minor("00012.50", 2), Ok(1250));
        assert_eq!(minor("\u{1f}7\u{a0}", 0), Ok(7));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "", " ", "abc", "1.2.3", "1e", "e5", "NaN", "inf", "--1", "1_000", "١", "1 2", ".",
        ] {
            assert_eq!(minor(bad, 2), Err(MoneyError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn overflow() {
        assert_eq!(minor("92233720368547758.07", 2), Ok(i64::MAX));
        assert_eq!(minor("92233720368547758.08", 2), Err(MoneyError::Overflow));
        assert_eq!(minor("-92233720368547758.08", 2), Ok(i64::MIN));
        assert_eq!(minor("1e17", 2), Err(MoneyError::Overflow));
        assert_eq!(minor("1e999999999999", 2), Err(MoneyError::Overflow));
        assert_eq!(minor("1e-999999999999", 2), Ok(0));
        assert_eq!(minor(&"9".repeat(5000), 0), Err(MoneyError::Overflow));
        assert_eq!(minor(&format!("0.{}1", "0".repeat(5000)), 2), Ok(0));
    }

    #[test]
    fn exact_products() {
        let price = Decimal::parse("19.99").unwrap();
        assert_eq!(price.times(3).to_scaled_i64(2), Ok(5997));
        let price = Decimal::parse("2.675").unwrap();
        assert_eq!(price.times(3).to_scaled_i64(2), Ok(802));
        assert_eq!(price.times(0).to_scaled_i64(2), Ok(0));
        let big = Decimal::parse("92233720368547758.07").unwrap();
        assert_eq!(big.times(2).to_scaled_i64(2), Err(MoneyError::Overflow));
    }

    #[test]
    fn integers() {
        assert_eq!(Decimal::parse("2").unwrap().to_integer(), Ok(Some(2)));
        assert_eq!(Decimal::parse("2.0").unwrap().to_integer(), Ok(Some(2)));
        assert_eq!(Decimal::parse("20e-1").unwrap().to_integer(), Ok(Some(2)));
        assert_eq!(Decimal::parse("1.5").unwrap().to_integer(), Ok(None));
        assert_eq!(Decimal::parse("0").unwrap().to_integer(), Ok(Some(0)));
    }
}

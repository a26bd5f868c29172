//! Exact decimal money: text in, integer minor units out. No binary float anywhere.

/// A decimal read exactly from text: `(-1)^negative * coefficient * 10^exponent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    coefficient: Coefficient,
    exponent: i64,
}

/// The significant digits. As one integer whenever it fits, which every amount of real traffic does: the
/// digit-by-digit form (a vector per value) was a tenth of a transform.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Coefficient {
    /// Fits in a u128 (up to 38 digits).
    Small(u128),
    /// Larger: base-10 digits, most significant first, without leading zeros.
    Digits(Vec<u8>),
}

impl Coefficient {
    fn from_digits(digits: impl Iterator<Item = u8> + Clone) -> Coefficient {
        let mut value: u128 = 0;
        for d in digits.clone() {
            match value.checked_mul(10).and_then(|v| v.checked_add(u128::from(d))) {
                Some(next) => value = next,
                None => return Coefficient::Digits(digits.skip_while(|&d| d == 0).collect()),
            }
        }
        Coefficient::Small(value)
    }

    fn digits(&self) -> Vec<u8> {
        match self {
            Coefficient::Small(0) => Vec::new(),
            Coefficient::Small(value) => value.to_string().bytes().map(|b| b - b'0').collect(),
            Coefficient::Digits(digits) => digits.clone(),
        }
    }
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

/// The largest power of ten in a u128.
const MAX_POW10: i64 = 38;

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
        let digits_from = |start: usize| start + s[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        let int_end = digits_from(i);
        let int_digits = &s[i..int_end];
        i = int_end;
        let mut frac_digits: &[u8] = &[];
        if s.get(i) == Some(&b'.') {
            let frac_end = digits_from(i + 1);
            frac_digits = &s[i + 1..frac_end];
            i = frac_end;
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(MoneyError::Syntax);
        }
        let mut exponent = -(frac_digits.len() as i64);
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
        let digits = int_digits.iter().chain(frac_digits).map(|b| b - b'0');
        Ok(Decimal {
            negative,
            coefficient: Coefficient::from_digits(digits),
            exponent,
        })
    }

    pub fn is_zero(&self) -> bool {
        match &self.coefficient {
            Coefficient::Small(value) => *value == 0,
            Coefficient::Digits(digits) => digits.is_empty(),
        }
    }

    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    /// This value times a non-negative integer, exactly.
    pub fn times(&self, factor: u64) -> Decimal {
        let coefficient = match &self.coefficient {
            Coefficient::Small(value) => match value.checked_mul(u128::from(factor)) {
                Some(product) => Coefficient::Small(product),
                None => Coefficient::Digits(digits_times(&self.coefficient.digits(), factor)),
            },
            Coefficient::Digits(_) if factor == 0 => Coefficient::Small(0),
            Coefficient::Digits(digits) => Coefficient::Digits(digits_times(digits, factor)),
        };
        Decimal {
            negative: self.negative,
            coefficient,
            exponent: self.exponent,
        }
    }

    /// Scales by `10^scale` and rounds half-to-even to an i64.
    pub fn to_scaled_i64(&self, scale: u32) -> Result<i64, MoneyError> {
        let shift = self.exponent + i64::from(scale);
        let magnitude = match &self.coefficient {
            Coefficient::Small(value) => scaled_small(*value, shift)?,
            Coefficient::Digits(digits) => scaled_digits(digits, shift)?,
        };
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
        let whole = match &self.coefficient {
            _ if self.exponent >= 0 || self.is_zero() => true,
            // A nonzero value below 10^39 over 10^39 or more is a fraction.
            Coefficient::Small(value) => {
                -self.exponent <= MAX_POW10 && value % 10u128.pow((-self.exponent) as u32) == 0
            }
            Coefficient::Digits(digits) => {
                let trailing_zeros = digits.iter().rev().take_while(|&&d| d == 0).count() as i64;
                self.exponent + trailing_zeros >= 0
            }
        };
        if !whole {
            return Ok(None);
        }
        self.to_scaled_i64(0).map(Some)
    }
}

/// `value * 10^shift`, rounded half-to-even; an overflow past u128 is one past i64 too.
fn scaled_small(value: u128, shift: i64) -> Result<u128, MoneyError> {
    if value == 0 {
        return Ok(0);
    }
    if shift >= 0 {
        // Any nonzero value times 10^20 or more is past i64.
        return if shift > 19 {
            Err(MoneyError::Overflow)
        } else {
            value.checked_mul(10u128.pow(shift as u32)).ok_or(MoneyError::Overflow)
        };
    }
    // A u128 is below half of 10^39: dividing it by that or more rounds to zero.
    if -shift > MAX_POW10 {
        return Ok(0);
    }
    let divisor = 10u128.pow((-shift) as u32);
    let (quotient, remainder) = (value / divisor, value % divisor);
    let half = divisor / 2;
    let round_up = remainder > half || (remainder == half && quotient % 2 == 1);
    Ok(quotient + u128::from(round_up))
}

/// `scaled_small` for a coefficient given digit by digit.
fn scaled_digits(digits: &[u8], shift: i64) -> Result<u128, MoneyError> {
    if digits.is_empty() {
        return Ok(0);
    }
    let len = digits.len() as i64;
    let (int_digits, dropped): (&[u8], &[u8]) = if shift >= 0 {
        (digits, &[])
    } else if -shift >= len {
        (&[], digits)
    } else {
        digits.split_at((len + shift) as usize)
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
    Ok(magnitude)
}

/// Digits times a non-negative integer, without leading zeros.
fn digits_times(digits: &[u8], factor: u64) -> Vec<u8> {
    let mut out = vec![0u8; digits.len() + 20];
    let mut carry: u128 = 0;
    let mut pos = out.len();
    for &d in digits.iter().rev() {
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
    let mut product = out.split_off(pos);
    if factor == 0 {
        product.clear();
    }
    let first_nonzero = product.iter().position(|&d| d != 0).unwrap_or(product.len());
    product.drain(..first_nonzero);
    product
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

    /// The integer form against the digit-by-digit one, value by value (each form's own cases are above).
    #[test]
    fn both_forms_agree() {
        let as_digits = |d: &Decimal| Decimal {
            coefficient: Coefficient::Digits(d.coefficient.digits()),
            ..d.clone()
        };
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for _ in 0..30_000 {
            let mut text = String::new();
            if next(4) == 0 {
                text.push('-');
            }
            let digit = |n: u64| char::from(b'0' + n as u8);
            (0..next(22)).for_each(|_| text.push(digit(next(10))));
            // Fractions often end in 5 or 0: the ties and the whole numbers.
            text.push('.');
            (0..next(10)).for_each(|_| text.push(digit(next(10))));
            text.push(['5', '0', '1'][next(3) as usize]);
            if next(3) == 0 {
                text.push_str(&format!("e{}{}", if next(2) == 0 { "-" } else { "" }, next(25)));
            }
            let small = Decimal::parse(&text).unwrap();
            assert!(matches!(small.coefficient, Coefficient::Small(_)), "{text}");
            let digits = as_digits(&small);
            assert_eq!(small.to_integer(), digits.to_integer(), "{text}");
            for factor in [1, 0, 3, 1000, u64::MAX] {
                let (small, digits) = (small.times(factor), digits.times(factor));
                for scale in 0..=4 {
                    assert_eq!(
                        small.to_scaled_i64(scale),
                        digits.to_scaled_i64(scale),
                        "{text} x {factor}"
                    );
                }
                assert_eq!(small.to_integer(), digits.to_integer(), "{text} x {factor}");
            }
        }
    }

    #[test]
    fn past_a_u128_digit_by_digit() {
        let big = Decimal::parse(&format!("0.{}", "3".repeat(60))).unwrap();
        assert!(matches!(big.coefficient, Coefficient::Digits(_)));
        assert_eq!(big.to_scaled_i64(2), Ok(33));
        assert_eq!(big.times(3).to_scaled_i64(2), Ok(100));
        assert_eq!(big.to_integer(), Ok(None));
        let small = Decimal::parse("340282366920938463463374607431768211455").unwrap();
        assert_eq!(small.coefficient, Coefficient::Small(u128::MAX));
        assert!(matches!(small.times(2).coefficient, Coefficient::Digits(_)));
        assert_eq!(small.times(0).to_scaled_i64(2), Ok(0));
        assert_eq!(Decimal::parse("1e-40").unwrap().times(u64::MAX).to_scaled_i64(2), Ok(0));
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

//! Customer email hashing. The plaintext never leaves this module's caller frame: only the digest is kept.

use crate::money::is_py_space;
use sha2::{Digest, Sha256};

fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case hex SHA-256 of the email after trimming white space and lower-casing (Unicode full
/// lower-casing, as Python's `str.lower`). A value that already is 64 hex chars is taken as a hash
/// and only lower-cased. None when nothing is left after trimming.
pub fn hash_email(email: &str) -> Option<String> {
    let trimmed = email.trim_matches(is_py_space);
    if trimmed.is_empty() {
        return None;
    }
    if is_sha256_hex(trimmed) {
        return Some(trimmed.to_ascii_lowercase());
    }
    let digest = Sha256::digest(trimmed.to_lowercase().as_bytes());
    Some(hex(&digest))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JANE: &str = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d";

    #[test]
    fn trims_and_lowercases() {
        assert_eq!(hash_email("jane.doe@example.com").as_deref(), Some(JANE));
        assert_eq!(hash_email("  Jane.Doe@Example.COM \n").as_deref(), Some(JANE));
    }

    #[test]
    fn prehashed_is_only_lowercased() {
        let upper = JANE.to_ascii_uppercase();
        assert_eq!(hash_email(&upper).as_deref(), Some(JANE));
        assert_eq!(hash_email(&format!(" {JANE} ")).as_deref(), Some(JANE));
    }

    #[test]
    fn unicode_lowercasing_matches_python() {
        // Python: hashlib.sha256("ΣΑΣ@ÉX.COM".lower().encode()) lower-cases the final sigma to "ς".
        assert_eq!(hash_email("ΣΑΣ@ÉX.COM"), hash_email("σας@éx.com"));
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(hash_email(" \t"), None);
        assert_eq!(hash_email(""), None);
    }
}

//! Identifier rules of CONTRACT §2: APR and device ids match
//! `^[a-z0-9][a-z0-9-]{0,63}$`.

/// Longest identifier allowed.
pub const MAX_ID_LEN: usize = 64;

/// Whether `s` is a valid APR or device id.
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_ID_LEN {
        return false;
    }
    let first_ok = b[0].is_ascii_lowercase() || b[0].is_ascii_digit();
    first_ok
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract_pattern() {
        assert!(is_valid_id("los-aromos"));
        assert!(is_valid_id("0"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("-abc"));
        assert!(!is_valid_id("Abc"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a+"));
    }
}

//! Subscription keys: `tg_` + base62(32 random bytes) + `_` + base62(crc32(body)).
//!
//! The prefix lets secret scanners (and people) recognise a Tollgate key; the checksum lets the
//! proxy and scanners tell a real key from a typo without a lookup. The checksum is not a
//! secret and adds no entropy: the 32 bytes from the OS RNG are the key's strength (256 bits).
//!
//! # Guarantees
//!
//! - [`generate`] draws from the operating system's RNG; it never falls back to a weaker source.
//! - A generated key is always [`KEY_LEN`] characters and passes [`looks_like_tollgate_key`].
//! - Neither function logs or formats its input anywhere.

use rand::rngs::OsRng;
use rand::TryRngCore;

/// Every generated key starts with this.
pub const PREFIX: &str = "tg_";
/// Characters of the base62 body that encodes 32 bytes (ceil(256 / log2 62)).
const BODY_LEN: usize = 43;
/// Characters of the base62 checksum (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// Length of a generated key: prefix, body, `_`, checksum.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + 1 + CHECKSUM_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The OS random number generator failed (no entropy source); no key was made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RngError(String);

/// A fresh key from 32 bytes of OS randomness.
///
/// # Errors
///
/// [`RngError`] when the OS RNG is unavailable.
pub fn generate() -> Result<String, RngError> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| RngError(e.to_string()))?;
    Ok(encode(&bytes))
}

/// Whether `key` has the shape of a generated key and its checksum matches.
pub fn looks_like_tollgate_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((body, checksum)) = rest.split_once('_') else {
        return false;
    };
    body.len() == BODY_LEN
        && checksum.len() == CHECKSUM_LEN
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
        && base62_fixed(&crc32(body.as_bytes()).to_be_bytes(), CHECKSUM_LEN) == checksum
}

fn encode(bytes: &[u8; 32]) -> String {
    let body = base62_fixed(bytes, BODY_LEN);
    let checksum = base62_fixed(&crc32(body.as_bytes()).to_be_bytes(), CHECKSUM_LEN);
    format!("{PREFIX}{body}_{checksum}")
}

/// Big-endian bytes as a base62 number, left-padded with `0` to `width` characters.
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    let mut number: Vec<u8> = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    // Schoolbook division of the byte string by 62 until it is zero.
    while number.iter().any(|&b| b != 0) {
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// CRC-32 (IEEE 802.3, the one zip and PNG use), bit by bit: keys are short.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn base62_pads_and_encodes() {
        assert_eq!(base62_fixed(&[0], 3), "000");
        assert_eq!(base62_fixed(&[61], 1), "z");
        assert_eq!(base62_fixed(&[0, 62], 2), "10");
        assert_eq!(base62_fixed(&[0xFF; 32], BODY_LEN).len(), BODY_LEN);
        assert_eq!(base62_fixed(&u32::MAX.to_be_bytes(), CHECKSUM_LEN).len(), 6);
    }

    #[test]
    fn generated_keys_have_the_shape_and_verify() {
        let a = generate().expect("rng");
        let b = generate().expect("rng");
        assert_ne!(a, b);
        for key in [&a, &b] {
            assert_eq!(key.len(), KEY_LEN);
            assert!(key.starts_with(PREFIX));
            assert!(looks_like_tollgate_key(key), "{key} should verify");
        }
    }

    #[test]
    fn typos_are_detected() {
        let key = generate().expect("rng");
        // Change one body character to a different alphanumeric one.
        let mut chars: Vec<char> = key.chars().collect();
        let i = PREFIX.len() + 10;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!looks_like_tollgate_key(&typo));
        assert!(!looks_like_tollgate_key(&key[..key.len() - 1]));
        assert!(!looks_like_tollgate_key(&key.replacen("tg_", "tk_", 1)));
        assert!(!looks_like_tollgate_key(""));
        assert!(!looks_like_tollgate_key(
            "tg_demo_acme_free_primary_4f1c9a7e2b6d"
        ));
    }

    #[test]
    fn the_all_zero_key_round_trips() {
        let key = encode(&[0; 32]);
        assert_eq!(key.len(), KEY_LEN);
        assert!(looks_like_tollgate_key(&key));
    }
}

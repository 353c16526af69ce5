//! Content addressing. A shard's key is the SHA-256 of its bytes, written as 64 lowercase hex
//! digits; the same digest names the shard file (`shards/<hex>.bin`), keys its IndexedDB
//! record, and is what a downloaded body is verified against before it is stored or served.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SwError;

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A validated SHA-256 content address (64 lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContentHash(String);

impl ContentHash {
    /// The address of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(sha256_hex(bytes))
    }

    /// Parses a hex digest; uppercase or wrong-length input is refused rather than normalised,
    /// because a file name that differs from the digest would never be found again.
    pub fn parse(value: &str) -> Result<Self, SwError> {
        let ok = value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(ContentHash(value.to_owned()))
        } else {
            Err(SwError::InvalidHash { value: value.to_owned() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `bytes` are exactly the content this address names.
    pub fn verifies(&self, bytes: &[u8]) -> bool {
        sha256_hex(bytes) == self.0
    }
}

impl TryFrom<String> for ContentHash {
    type Error = SwError;
    fn try_from(value: String) -> Result<Self, SwError> {
        ContentHash::parse(&value)
    }
}

impl From<ContentHash> for String {
    fn from(hash: ContentHash) -> String {
        hash.0
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_known_input() {
        // FIPS 180-2 test vector.
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn parse_accepts_only_lowercase_64_hex() {
        let good = sha256_hex(b"shard");
        assert_eq!(ContentHash::parse(&good).unwrap().as_str(), good);
        for bad in ["", "abc", &good.to_uppercase(), &format!("{good}0"), &good.replace('a', "g")] {
            let err = ContentHash::parse(bad).unwrap_err();
            assert_eq!(err.name(), "InvalidHashError", "{bad:?} should be refused");
        }
    }

    #[test]
    fn verifies_detects_a_flipped_byte() {
        let mut bytes = b"weights weights weights".to_vec();
        let hash = ContentHash::of(&bytes);
        assert!(hash.verifies(&bytes));
        bytes[3] ^= 1;
        assert!(!hash.verifies(&bytes));
    }

    #[test]
    fn serde_round_trip_validates() {
        let hash = ContentHash::of(b"x");
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<ContentHash>("\"nothex\"").is_err());
    }
}

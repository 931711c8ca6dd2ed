//! Content digests: the `sha256:<hex>` identity of every blob and manifest berth handles,
//! and the `sha256-<hex>` tag form cosign and the referrers tag schema derive from it.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Length of a sha256 digest in lowercase hex characters.
const SHA256_HEX_LEN: usize = 64;

/// The only algorithm berth writes; the OCI spec allows others, but every registry and
/// tool berth talks to (Flux, cosign, oras) uses sha256 for the artifacts we care about.
pub const ALGORITHM: &str = "sha256";

/// Errors from parsing or checking a digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(
        "'{input}' is not a sha256 digest: expected 'sha256:' followed by 64 lowercase hex characters"
    )]
    Invalid { input: String },
    #[error("'{input}' uses digest algorithm '{algorithm}'; berth supports only sha256")]
    UnsupportedAlgorithm { input: String, algorithm: String },
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    Mismatch { expected: Digest, actual: Digest },
}

/// A sha256 content digest (`sha256:<64 hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of everything `reader` yields, with the number of bytes read.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
        let mut hasher = Sha256::new();
        let size = io::copy(&mut reader, &mut hasher)?;
        Ok((Digest::from_hasher(hasher), size))
    }

    /// Finish a running hash into a digest.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex_lower(&hasher.finalize()),
        }
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The tag form `sha256-<hex>` used by cosign's `.sig` tags and the referrers tag schema.
    pub fn tag_form(&self) -> String {
        format!("{ALGORITHM}-{}", self.hex)
    }

    /// Parse the tag form `sha256-<hex>` back into a digest.
    pub fn from_tag_form(tag: &str) -> Result<Digest, DigestError> {
        let hex = tag
            .strip_prefix("sha256-")
            .ok_or_else(|| DigestError::Invalid {
                input: tag.to_string(),
            })?;
        Digest::from_hex(hex).map_err(|_| DigestError::Invalid {
            input: tag.to_string(),
        })
    }

    fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() == SHA256_HEX_LEN
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(DigestError::Invalid {
                input: hex.to_string(),
            })
        }
    }

    /// Check that `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), DigestError> {
        let actual = Digest::of(bytes);
        if &actual == self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                actual,
            })
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ALGORITHM}:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(input: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = input.split_once(':') else {
            return Err(DigestError::Invalid {
                input: input.to_string(),
            });
        };
        if algorithm != ALGORITHM {
            return Err(DigestError::UnsupportedAlgorithm {
                input: input.to_string(),
                algorithm: algorithm.to_string(),
            });
        }
        Digest::from_hex(hex).map_err(|_| DigestError::Invalid {
            input: input.to_string(),
        })
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts everything written through it, so a blob can be
/// streamed to disk and identified in one pass without holding it in memory.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The digest and size of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hasher(self.hasher), self.written, self.inner)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
    }

    #[test]
    fn parse_and_display_round_trip() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.tag_form(), EMPTY.replace(':', "-"));
        assert_eq!(Digest::from_tag_form(&d.tag_form()).unwrap(), d);
    }

    #[test]
    fn rejects_uppercase_short_and_other_algorithms() {
        assert!(EMPTY.to_uppercase().parse::<Digest>().is_err());
        assert!("sha256:abc".parse::<Digest>().is_err());
        let err = "sha512:abcd".parse::<Digest>().unwrap_err();
        assert!(err.to_string().contains("sha512"), "{err}");
    }

    #[test]
    fn verify_detects_tampering() {
        let d = Digest::of(b"hello");
        assert!(d.verify(b"hello").is_ok());
        assert!(matches!(
            d.verify(b"hellO"),
            Err(DigestError::Mismatch { .. })
        ));
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        use std::io::Write;
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(n, 5);
        assert_eq!(inner, b"hello");
    }
}

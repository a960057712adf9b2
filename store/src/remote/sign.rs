//! Signed results: with a signing key, every result cairn uploads carries an ed25519 signature
//! over the digest function, the action's digest on the remote and the digest of the result
//! itself, so a valid signature cannot be moved to another action or another result. It
//! travels as one more output file of the result (`.cairn-signature/<key name>`, its bytes a
//! blob in the remote's CAS): every kind of server keeps a result's output files, since they
//! are what a result is. Keys are written as Nix writes them: `name:base64`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use prost::Message;

use crate::digest::{DigestFunction, RemoteDigest};
use crate::reapi;

/// Output paths under this directory hold signatures, never outputs.
pub const SIGNATURE_DIR: &str = ".cairn-signature/";

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not `name:base64` with the right length.
    #[error("Invalid {what} `{text}`: expected `name:` followed by base64 ({len} bytes)")]
    Format {
        /// Which kind of key.
        what: &'static str,
        /// The text (a secret key's text is never shown: only its name).
        text: String,
        /// The expected decoded length.
        len: usize,
    },
    /// The system's random source could not be read.
    #[error("Cannot read random bytes for a new key: {0}")]
    Random(std::io::Error),
}

/// A secret key that signs uploaded results.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish()
    }
}

/// A public key whose signatures are trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl SigningKey {
    /// A new random key named `name` (from the system's random source).
    pub fn generate(name: &str) -> Result<SigningKey, KeyError> {
        use std::io::Read;
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(KeyError::Random)?;
        Ok(SigningKey {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name:base64(seed ‖ public key)`, as Nix writes secret keys.
    pub fn to_secret_text(&self) -> String {
        let mut bytes = self.key.to_bytes().to_vec();
        bytes.extend_from_slice(&self.key.verifying_key().to_bytes());
        format!("{}:{}", self.name, BASE64.encode(bytes))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `result` (in the remote's digests, as it will be stored under `key`) with its
    /// signature added as an output file, and the signature's bytes, to be stored in the
    /// remote's CAS before the result.
    pub fn sign(
        &self,
        function: DigestFunction,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> (reapi::ActionResult, Vec<u8>) {
        let unsigned = strip_signatures(result).0;
        let signature = self
            .key
            .sign(&message(function, key, &unsigned))
            .to_bytes()
            .to_vec();
        let mut signed = unsigned;
        signed.output_files.push(reapi::OutputFile {
            path: format!("{SIGNATURE_DIR}{}", self.name),
            digest: Some(RemoteDigest::of_bytes(function, &signature).to_reapi()),
            ..Default::default()
        });
        (signed, signature)
    }
}

impl FromStr for SigningKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<SigningKey, KeyError> {
        let err = |name: &str| KeyError::Format {
            what: "secret key",
            text: format!("{name}:…"),
            len: 64,
        };
        let (name, encoded) = text.trim().split_once(':').ok_or_else(|| err(""))?;
        let bytes = BASE64.decode(encoded).map_err(|_| err(name))?;
        let seed: [u8; 32] = bytes
            .get(..32)
            .filter(|_| bytes.len() == 64)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| err(name))?;
        Ok(SigningKey {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }
}

impl PublicKey {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.to_bytes()))
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        let err = || KeyError::Format {
            what: "public key",
            text: text.to_string(),
            len: 32,
        };
        let (name, encoded) = text.trim().split_once(':').ok_or_else(err)?;
        let bytes: [u8; 32] = BASE64
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(err)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| err())?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }
}

/// The result without signature entries, and the signatures it carried: (key name, digest
/// of the signature blob).
pub fn strip_signatures(
    result: &reapi::ActionResult,
) -> (reapi::ActionResult, Vec<(String, reapi::Digest)>) {
    let mut stripped = result.clone();
    let mut signatures = Vec::new();
    stripped
        .output_files
        .retain(|f| match f.path.strip_prefix(SIGNATURE_DIR) {
            Some(name) => {
                if let Some(d) = &f.digest {
                    signatures.push((name.to_string(), d.clone()));
                }
                false
            }
            None => true,
        });
    (stripped, signatures)
}

/// Whether `signature` is a valid signature by `trusted` of `unsigned` (a result without
/// signature entries) stored under `key`.
pub fn verify(
    trusted: &PublicKey,
    function: DigestFunction,
    key: &RemoteDigest,
    unsigned: &reapi::ActionResult,
    signature: &[u8],
) -> bool {
    let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    trusted
        .key
        .verify_strict(&message(function, key, unsigned), &signature)
        .is_ok()
}

/// What is signed: the function, the action's digest and the digest of the result, so a
/// signature is bound to this result under this action.
fn message(
    function: DigestFunction,
    key: &RemoteDigest,
    unsigned: &reapi::ActionResult,
) -> Vec<u8> {
    let result = RemoteDigest::of_bytes(function, &unsigned.encode_to_vec());
    format!(
        "cairn signed result v1\0{}\0{}/{}\0{}/{}",
        function.as_str(),
        key.hex(),
        key.size,
        result.hex(),
        result.size
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(bytes: &[u8]) -> reapi::ActionResult {
        reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "out".into(),
                digest: Some(RemoteDigest::of_bytes(DigestFunction::Sha256, bytes).to_reapi()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_signature_binds_the_result_to_its_action() {
        let ci = SigningKey::generate("ci").unwrap();
        let other = SigningKey::generate("laptop").unwrap();
        let f = DigestFunction::Sha256;
        let key = RemoteDigest::of_bytes(f, b"action");
        let (signed, signature) = ci.sign(f, &key, &result(b"x"));
        let (unsigned, found) = strip_signatures(&signed);
        assert_eq!(unsigned, result(b"x"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "ci");
        assert!(verify(&ci.public(), f, &key, &unsigned, &signature));
        assert!(
            !verify(&other.public(), f, &key, &unsigned, &signature),
            "another key"
        );
        let elsewhere = RemoteDigest::of_bytes(f, b"another action");
        assert!(
            !verify(&ci.public(), f, &elsewhere, &unsigned, &signature),
            "moved"
        );
        assert!(
            !verify(&ci.public(), f, &key, &result(b"y"), &signature),
            "another result"
        );
        assert!(!verify(&ci.public(), f, &key, &unsigned, &signature[..63]));
    }

    #[test]
    fn keys_round_trip_in_nix_form_and_bad_ones_are_refused() {
        let key = SigningKey::generate("cairn-ci-1").unwrap();
        let parsed: SigningKey = key.to_secret_text().parse().unwrap();
        assert_eq!(parsed.public(), key.public());
        let public = key.public().to_string();
        assert!(public.starts_with("cairn-ci-1:"));
        assert_eq!(public.parse::<PublicKey>().unwrap(), key.public());
        assert!("nocolon".parse::<PublicKey>().is_err());
        assert!("k:AAAA".parse::<PublicKey>().is_err());
        let err = "k:bm90IGEga2V5"
            .parse::<SigningKey>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("bm90"), "a secret is never shown: {err}");
    }
}

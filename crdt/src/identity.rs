//! ed25519 identities: generation, signing, key files.
//!
//! A node's key signs every delta it originates and is also its libp2p
//! identity (the node crate builds the libp2p keypair from the same 32-byte
//! secret). A user's key signs that user's posts.
//!
//! Key file format: one line, `hearsay-ed25519-secret:<64 lowercase hex>`,
//! mode 0600. Text rather than raw bytes so that a wrong file (a config, a
//! truncated copy) is recognised and named in the error.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::ids::{NodeId, hex, unhex};

const KEY_FILE_PREFIX: &str = "hearsay-ed25519-secret:";

/// An ed25519 signing key.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({:?})", self.id())
    }
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_secret(seed)
    }

    /// The key for a 32-byte secret (seed).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret, e.g. to build the libp2p identity from it.
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half, as an id.
    pub fn id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Reads a key file written by [`Keypair::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let err = |why: String| Error::KeyFile {
            path: path.display().to_string(),
            why,
        };
        let text = fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let hexed = text
            .trim_end()
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(|| {
                err(format!(
                    "not a hearsay key (expected a line starting {KEY_FILE_PREFIX:?})"
                ))
            })?;
        let secret = unhex::<32>("key", hexed).map_err(|e| err(e.to_string()))?;
        Ok(Self::from_secret(secret))
    }

    /// Writes the key to `path` with mode 0600, refusing to overwrite.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |why: String| Error::KeyFile {
            path: path.display().to_string(),
            why,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| err(format!("cannot create: {e}")))?;
        writeln!(file, "{KEY_FILE_PREFIX}{}", hex(&self.secret()))
            .and_then(|()| file.sync_all())
            .map_err(|e| err(format!("cannot write: {e}")))
    }

    /// Loads the key at `path`, creating it first when the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::load(path)
        } else {
            let key = Self::generate();
            key.save(path)?;
            Ok(key)
        }
    }
}

/// Checks an ed25519 signature by `signer` over `message` (strict: rejects
/// malleable and small-order encodings).
pub fn verify(signer: &NodeId, message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(signer.as_bytes()) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = Keypair::generate();
        let sig = k.sign(b"hello");
        assert!(verify(&k.id(), b"hello", &sig));
        assert!(!verify(&k.id(), b"hellp", &sig));
        assert!(!verify(&Keypair::generate().id(), b"hello", &sig));
    }

    #[test]
    fn key_file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let k = Keypair::generate();
        k.save(&path).unwrap();
        assert_eq!(Keypair::load(&path).unwrap().id(), k.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(k.save(&path).is_err(), "save must not overwrite a key");
        assert_eq!(Keypair::load_or_generate(&path).unwrap().id(), k.id());
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        let e = Keypair::load(&missing).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        let junk = dir.path().join("junk");
        fs::write(&junk, "[node]\nregion = 'x'\n").unwrap();
        let e = Keypair::load(&junk).unwrap_err().to_string();
        assert!(e.contains("not a hearsay key"), "{e}");
        let short = dir.path().join("short");
        fs::write(&short, format!("{KEY_FILE_PREFIX}abcd\n")).unwrap();
        let e = Keypair::load(&short).unwrap_err().to_string();
        assert!(e.contains("hex digits"), "{e}");
    }
}

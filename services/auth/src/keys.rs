//! Signing keys. A key ring is a directory of Ed25519 PKCS#8 PEM files named
//! `<kid>.pem`: every key is published in the JWKS, and the one whose name sorts
//! last signs. Rotation is adding a newer file; retiring is removing an old one
//! once the tokens it signed have expired.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::EncodingKey;

use agora_kit::token::{JwksSource, PublicKey};

/// The keys this auth instance signs and publishes with.
pub struct KeyRing {
    signing_kid: String,
    signing_key: EncodingKey,
    public: Vec<PublicKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .field(
                "kids",
                &self.public.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeyRing {
    /// Loads every `*.pem` in `dir`. With `generate_if_empty`, an empty or missing
    /// directory gets a fresh key first (the embedded default); otherwise it is an
    /// error, because replicas generating their own keys would reject each
    /// other's tokens.
    pub fn load(dir: &Path, generate_if_empty: bool) -> anyhow::Result<Self> {
        let mut files = list_pems(dir)?;
        if files.is_empty() {
            if !generate_if_empty {
                anyhow::bail!(
                    "no signing keys (*.pem) in {}: create one with \
                     `openssl genpkey -algorithm ed25519 -out <kid>.pem`",
                    dir.display()
                );
            }
            generate(dir)?;
            files = list_pems(dir)?;
        }
        let mut public = Vec::new();
        let mut last = None;
        for (kid, path) in files {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("reading signing key {}", path.display()))?;
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{} is not an Ed25519 PKCS#8 PEM key: {e}", path.display())
            })?;
            public.push(PublicKey {
                kid: kid.clone(),
                x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
            });
            last = Some((kid, pem));
        }
        let (signing_kid, pem) = last.expect("at least one key was loaded");
        let signing_key = EncodingKey::from_ed_pem(pem.as_bytes())?;
        tracing::info!(signing_kid, keys = public.len(), "signing keys loaded");
        Ok(Self {
            signing_kid,
            signing_key,
            public,
        })
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub fn signing_key(&self) -> &EncodingKey {
        &self.signing_key
    }

    /// Every public key, for the JWKS.
    pub fn public_keys(&self) -> &[PublicKey] {
        &self.public
    }
}

/// Lets the auth service verify tokens from its own ring without a network hop.
pub struct LocalJwks(pub Arc<KeyRing>);

impl JwksSource for LocalJwks {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<PublicKey>>> + Send + '_>> {
        let keys = self.0.public.clone();
        Box::pin(async move { Ok(keys) })
    }
}

/// `(kid, path)` of every `*.pem` in `dir`, sorted by kid.
fn list_pems(dir: &Path) -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem")
            && let Some(kid) = path.file_stem().and_then(|s| s.to_str())
        {
            files.push((kid.to_owned(), path.clone()));
        }
    }
    files.sort();
    Ok(files)
}

/// Writes a new key named after the current time, readable by the owner only.
pub fn generate(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
    let now = time::OffsetDateTime::now_utc();
    let kid = format!(
        "k{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let path = dir.join(format!("{kid}.pem"));
    write_private(&path, pem.as_bytes())?;
    tracing::info!(kid, path = %path.display(), "generated a signing key");
    Ok(kid)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("agora-keys-{name}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_empty_ring_is_generated_once_and_reloaded() {
        let dir = temp_dir("gen");
        let first = KeyRing::load(&dir, true).unwrap();
        let again = KeyRing::load(&dir, true).unwrap();
        assert_eq!(first.signing_kid(), again.signing_kid());
        assert_eq!(first.public_keys()[0].x, again.public_keys()[0].x);
    }

    #[test]
    fn the_newest_key_signs_and_all_are_published() {
        let dir = temp_dir("rotate");
        std::fs::write(dir.join("a-old.pem"), pem()).unwrap();
        std::fs::write(dir.join("b-new.pem"), pem()).unwrap();
        let ring = KeyRing::load(&dir, false).unwrap();
        assert_eq!(ring.signing_kid(), "b-new");
        let kids: Vec<_> = ring.public_keys().iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["a-old", "b-new"]);
    }

    #[test]
    fn production_refuses_to_invent_keys() {
        let dir = temp_dir("none");
        let err = KeyRing::load(&dir, false).unwrap_err();
        assert!(err.to_string().contains("no signing keys"), "{err}");
    }

    fn pem() -> String {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string()
    }
}

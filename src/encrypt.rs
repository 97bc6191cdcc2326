//! Client-side encryption with age (<https://age-encryption.org/v1>): a stage of the one backup
//! pipeline (pg_dump → compress → **encrypt** → hash → targets), and its inverse in the checked
//! restore stream.
//!
//! A job encrypts to its recipients — X25519 `age1…` keys and SSH public keys (`ssh-ed25519`,
//! `ssh-rsa`), listed or read from a recipients file — or, for those without key pairs, to a
//! passphrase read from a file (age's scrypt mode). The backup host holds only public keys (or
//! the passphrase file); the private key lives offline (README "Key handling").
//!
//! What is recorded about the encryption is public: the recipients' fingerprints (the first 16
//! hex digits of the SHA-256 of each recipient's canonical text, `age1…` or `ssh-ed25519 AAAA…`
//! without its comment) and the SHA-256 of the plaintext (the compressed stream before
//! encryption), which restore checks after decryption. Never a private key or a passphrase:
//! neither is ever formatted into a message.
//!
//! [`Encryption::wrap`] is the one hook for anything else that must be encrypted whenever the
//! job is (the manifest's row counts here; globals for the DR work).

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest as _, Sha256};

use crate::error::config_error_hint;

/// What a backup's properties say about its encryption (`pgdrive_encryption`).
pub const SCHEME: &str = "age";
/// What an encrypted backup's name gains after its codec's extension.
pub const EXTENSION: &str = ".age";

/// How a job encrypts, as configured (parsed, not yet turned into recipients).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptSpec {
    /// `age1…` keys and SSH public keys.
    pub recipients: Vec<String>,
    /// A file of recipients, one per line (`#` comments, blank lines allowed), as `age -R` reads.
    pub recipients_file: Option<PathBuf>,
    /// A file holding a passphrase (its first line): scrypt mode, exclusive with recipients.
    pub passphrase_file: Option<PathBuf>,
}

impl EncryptSpec {
    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
            && self.recipients_file.is_none()
            && self.passphrase_file.is_none()
    }
}

/// One parsed recipient.
enum Recipient {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl Recipient {
    fn as_dyn(&self) -> &dyn age::Recipient {
        match self {
            Recipient::X25519(r) => r,
            Recipient::Ssh(r) => r,
        }
    }
}

/// A job's encryption, ready to seal any number of streams (each with a fresh file key).
pub struct Encryption {
    recipients: Vec<Recipient>,
    passphrase: Option<age::secrecy::SecretString>,
    /// Public fingerprints of the recipients (`scrypt` for a passphrase), in configured order.
    pub fingerprints: Vec<String>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the passphrase
        f.debug_struct("Encryption")
            .field("fingerprints", &self.fingerprints)
            .finish()
    }
}

/// The fingerprint of a recipient's canonical text.
pub fn fingerprint(canonical: &str) -> String {
    crate::storage::hex(&Sha256::digest(canonical.as_bytes())[..8])
}

/// Parses one recipient line (an `age1…` key, or an SSH public key with optional comment).
/// `origin` names where it came from; the value itself is never quoted (a mistyped private key
/// pasted as a recipient must not reach a log).
fn parse_recipient(line: &str, origin: &str) -> Result<(Recipient, String)> {
    let line = line.trim();
    if line.starts_with("age1") {
        let r: age::x25519::Recipient = line.parse().map_err(|_| {
            config_error_hint(
                format!("{origin}: an age1… recipient does not parse"),
                "copy the public key printed by `pgdrive keygen` or `age-keygen -y KEYFILE` (it starts with age1)",
            )
        })?;
        let canonical = r.to_string();
        return Ok((Recipient::X25519(r), fingerprint(&canonical)));
    }
    if line.starts_with("ssh-") {
        // canonical: the key type and its base64, without the comment
        let canonical: String = line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let r: age::ssh::Recipient = canonical.parse().map_err(|_| {
            config_error_hint(
                format!("{origin}: an SSH public key recipient does not parse (age takes ssh-ed25519 and ssh-rsa)"),
                "use the contents of the .pub file (ssh-ed25519 AAAA… comment)",
            )
        })?;
        return Ok((Recipient::Ssh(r), fingerprint(&canonical)));
    }
    if line.starts_with("AGE-SECRET-KEY-") || line.contains("PRIVATE KEY") {
        return Err(config_error_hint(
            format!("{origin}: a private key is configured as a recipient"),
            "configure the public key (age-keygen -y KEYFILE, or the .pub file); keep the private key offline and rotate it, since it was on this host",
        ));
    }
    Err(config_error_hint(
        format!("{origin}: a recipient is neither an age1… key nor an SSH public key"),
        "list age1… keys or ssh-ed25519 / ssh-rsa public keys",
    ))
}

/// The first line of a secret file, without its line ending; the file's contents are never
/// quoted.
fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        config_error_hint(
            format!("cannot read the {what} {}: {e}", path.display()),
            "check the path and that the pgdrive user may read it",
        )
    })?;
    let first = text.lines().next().unwrap_or("").to_string();
    if first.is_empty() {
        return Err(config_error_hint(
            format!("the {what} {} is empty", path.display()),
            "write the passphrase on its first line",
        ));
    }
    Ok(first)
}

impl Encryption {
    /// The encryption `spec` asks for; `None` when it configures none. Every recipient is
    /// parsed here, so a bad one fails the run (78) before anything is dumped.
    pub fn from_spec(spec: &EncryptSpec) -> Result<Option<Encryption>> {
        if spec.is_empty() {
            return Ok(None);
        }
        let mut lines: Vec<(String, String)> = spec
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), format!("encrypt recipient {}", i + 1)))
            .collect();
        if let Some(path) = &spec.recipients_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                config_error_hint(
                    format!("cannot read the recipients file {}: {e}", path.display()),
                    "check encrypt_recipients_file and that the pgdrive user may read it",
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                lines.push((
                    line.to_string(),
                    format!("{} line {}", path.display(), n + 1),
                ));
            }
        }
        if let Some(path) = &spec.passphrase_file {
            if !lines.is_empty() || spec.recipients_file.is_some() {
                return Err(config_error_hint(
                    "encryption names both recipients and a passphrase file: age encrypts to one or the other",
                    "keep either the recipients or encrypt_passphrase_file",
                ));
            }
            let passphrase = read_secret_file(path, "passphrase file")?;
            return Ok(Some(Encryption {
                recipients: Vec::new(),
                passphrase: Some(passphrase.into()),
                fingerprints: vec!["scrypt".to_string()],
            }));
        }
        if lines.is_empty() {
            return Err(config_error_hint(
                "the encryption recipients file lists no recipient",
                "add age1… or SSH public keys to it, one per line",
            ));
        }
        let mut recipients = Vec::new();
        let mut fingerprints = Vec::new();
        for (line, origin) in &lines {
            let (r, fp) = parse_recipient(line, origin)?;
            recipients.push(r);
            fingerprints.push(fp);
        }
        Ok(Some(Encryption {
            recipients,
            passphrase: None,
            fingerprints,
        }))
    }

    fn encryptor(&self) -> io::Result<age::Encryptor> {
        if let Some(p) = &self.passphrase {
            return Ok(age::Encryptor::with_user_passphrase(p.clone()));
        }
        age::Encryptor::with_recipients(self.recipients.iter().map(Recipient::as_dyn))
            .map_err(|e| io::Error::other(format!("age: {e}")))
    }

    /// Wraps `output` so that everything written is age-encrypted to this job's recipients:
    /// the hook for any object that must be encrypted whenever the job is. Call
    /// [`Sealed::finish`] at the end: without it the stream is truncated (and fails to decrypt).
    pub fn wrap<W: Write>(&self, output: W) -> io::Result<Sealed<W>> {
        Ok(Sealed {
            inner: self.encryptor()?.wrap_output(output)?,
            plain: Sha256::new(),
        })
    }

    /// `data` encrypted, base64 (for small records such as the manifest's row counts).
    pub fn seal_to_base64(&self, data: &[u8]) -> Result<String> {
        use base64::Engine as _;
        let mut sealed = self.wrap(Vec::new())?;
        sealed.write_all(data)?;
        let (bytes, _) = sealed.finish()?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The fingerprints as one property value.
    pub fn fingerprint_list(&self) -> String {
        self.fingerprints.join(",")
    }
}

/// An encrypting writer that also hashes the plaintext it is given.
pub struct Sealed<W: Write> {
    inner: age::stream::StreamWriter<W>,
    plain: Sha256,
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.plain.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Sealed<W> {
    /// Ends the age stream (its last, authenticated chunk); returns the inner writer and the
    /// plaintext's SHA-256 (hex).
    pub fn finish(self) -> io::Result<(W, String)> {
        let plain = crate::storage::hex(&self.plain.finalize());
        Ok((self.inner.finish()?, plain))
    }
}

/// The identities restore and verify decrypt with.
pub struct Identities {
    list: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Where they came from, for messages.
    pub source: String,
}

impl Identities {
    /// Reads an identity file: age identities (`AGE-SECRET-KEY-1…` lines, as age-keygen writes)
    /// or an unencrypted SSH private key (ed25519 or RSA). The contents are never quoted.
    pub fn load(path: &Path) -> Result<Identities> {
        let bytes = std::fs::read(path).map_err(|e| {
            config_error_hint(
                format!("cannot read the identity file {}: {e}", path.display()),
                "pass the private key with --identity FILE (or PGDRIVE_IDENTITY_FILE)",
            )
        })?;
        let source = path.display().to_string();
        let unusable = || {
            config_error_hint(
                format!("the identity file {source} holds no usable age identity or unencrypted SSH private key"),
                "pass an age identity file (age-keygen, pgdrive keygen) or an SSH private key without a passphrase",
            )
        };
        if bytes.starts_with(b"-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(
                io::BufReader::new(&bytes[..]),
                Some(source.clone()),
            )
            .map_err(|_| unusable())?;
            match id {
                age::ssh::Identity::Unencrypted(_) => {}
                _ => return Err(unusable()),
            }
            return Ok(Identities {
                list: vec![Box::new(id)],
                source,
            });
        }
        let file = age::IdentityFile::from_buffer(io::BufReader::new(&bytes[..]))
            .map_err(|_| unusable())?;
        let list = file.into_identities().map_err(|_| unusable())?;
        if list.is_empty() {
            return Err(unusable());
        }
        Ok(Identities { list, source })
    }

    /// A passphrase (scrypt) identity read from a file.
    pub fn passphrase(path: &Path) -> Result<Identities> {
        let p = read_secret_file(path, "passphrase file")?;
        Ok(Identities {
            list: vec![Box::new(age::scrypt::Identity::new(p.into()))],
            source: path.display().to_string(),
        })
    }
}

/// The identities this process decrypts with, set once by `restore` and `verify` from
/// `--identity` / `PGDRIVE_IDENTITY_FILE` and `PGDRIVE_ENCRYPT_PASSPHRASE_FILE` (see
/// [`init_identities`]); the checked restore stream reads them (`crate::restore`).
static IDENTITIES: std::sync::OnceLock<Option<Identities>> = std::sync::OnceLock::new();

/// Loads the identities for this process: the identity file (`--identity`, else
/// `PGDRIVE_IDENTITY_FILE`), and a
/// passphrase file when one is configured. Nothing is read when neither is given; an
/// unreadable or unusable file is a configuration error (78).
pub fn init_identities(identity_file: Option<&Path>, passphrase_file: Option<&Path>) -> Result<()> {
    let mut list = Vec::new();
    let mut sources = Vec::new();
    if let Some(path) = identity_file {
        let ids = Identities::load(path)?;
        list.extend(ids.list);
        sources.push(ids.source);
    }
    if let Some(path) = passphrase_file {
        let ids = Identities::passphrase(path)?;
        list.extend(ids.list);
        sources.push(ids.source);
    }
    let ids = (!list.is_empty()).then(|| Identities {
        list,
        source: sources.join(", "),
    });
    let _ = IDENTITIES.set(ids);
    Ok(())
}

/// [`init_identities`] as `restore` and `verify` call it: `--identity` (`flag`), else
/// `PGDRIVE_IDENTITY_FILE`, and `PGDRIVE_ENCRYPT_PASSPHRASE_FILE`.
pub fn init_for_restore(flag: Option<&Path>, settings: &crate::config::Settings) -> Result<()> {
    let identity = flag
        .map(Path::to_path_buf)
        .or_else(|| settings.get("PGDRIVE_IDENTITY_FILE").map(PathBuf::from));
    let passphrase = settings
        .get("PGDRIVE_ENCRYPT_PASSPHRASE_FILE")
        .map(PathBuf::from);
    init_identities(identity.as_deref(), passphrase.as_deref())
}

/// The identities [`init_identities`] loaded, if any.
pub fn identities() -> Option<&'static Identities> {
    IDENTITIES.get().and_then(Option::as_ref)
}

/// Why decrypting did not start.
pub enum OpenError {
    /// The header is not an age header (or cannot be read): the file is damaged or not age.
    NotAge(io::Error),
    /// No identity matches a recipient of the file.
    NoMatch,
    /// The identity could not be used (e.g. the scrypt work factor is too high).
    Other(String),
}

/// Opens an age stream with `identities`, reading its header from `input`.
pub fn decrypt<'a, R: Read + 'a>(
    input: R,
    identities: &Identities,
) -> std::result::Result<Box<dyn Read + 'a>, OpenError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| match e {
        age::DecryptError::Io(e) => OpenError::NotAge(e),
        other => OpenError::NotAge(io::Error::new(
            io::ErrorKind::InvalidData,
            other.to_string(),
        )),
    })?;
    decryptor
        .decrypt(
            identities
                .list
                .iter()
                .map(|i| i.as_ref() as &dyn age::Identity),
        )
        .map(|r| Box::new(r) as Box<dyn Read + 'a>)
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoMatch,
            age::DecryptError::Io(e) => OpenError::NotAge(e),
            other => OpenError::Other(other.to_string()),
        })
}

/// Checks that `input` starts with a well-formed age header (verify without an identity):
/// reads only the header.
pub fn check_header<R: BufRead>(input: R) -> std::result::Result<(), String> {
    age::Decryptor::new_buffered(input)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A new X25519 identity: (the identity file's text, the public recipient).
pub fn keygen() -> (String, String) {
    use age::secrecy::ExposeSecret as _;
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let created = crate::timeutil::rfc3339_millis(crate::timeutil::now_millis());
    let text = format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    (text, public)
}

/// Writes a new identity to `path` (created, mode 0600; an existing file is never replaced)
/// and returns its public recipient.
pub fn write_new_identity(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let (text, public) = keygen();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            config_error_hint(
                format!("cannot create the identity file {}: {e}", path.display()),
                "name a file that does not exist yet (an existing key is never overwritten)",
            )
        })?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", path.display())))?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(enc: &Encryption, ids: &Identities, data: &[u8]) -> Vec<u8> {
        let mut w = enc.wrap(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        let (ct, plain) = w.finish().unwrap();
        assert_eq!(plain, crate::storage::hex(&Sha256::digest(data)));
        let mut out = Vec::new();
        match decrypt(&ct[..], ids) {
            Ok(mut r) => r.read_to_end(&mut out).unwrap(),
            Err(_) => panic!("decrypt failed"),
        };
        out
    }

    fn x25519() -> (String, Identities) {
        let (text, public) = keygen();
        let file = age::IdentityFile::from_buffer(text.as_bytes()).unwrap();
        (
            public,
            Identities {
                list: file.into_identities().unwrap(),
                source: "test".into(),
            },
        )
    }

    #[test]
    fn x25519_round_trip_and_fingerprints_are_public() {
        let (public, ids) = x25519();
        let spec = EncryptSpec {
            recipients: vec![public.clone()],
            ..Default::default()
        };
        let enc = Encryption::from_spec(&spec).unwrap().unwrap();
        assert_eq!(enc.fingerprints, vec![fingerprint(&public)]);
        assert_eq!(enc.fingerprints[0].len(), 16);
        let data = b"COPY public.secret_table FROM stdin;\n".repeat(5000);
        assert_eq!(round_trip(&enc, &ids, &data), data);
    }

    #[test]
    fn a_wrong_identity_is_no_match() {
        let (public, _) = x25519();
        let (_, other) = x25519();
        let enc = Encryption::from_spec(&EncryptSpec {
            recipients: vec![public],
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let mut w = enc.wrap(Vec::new()).unwrap();
        w.write_all(b"data").unwrap();
        let (ct, _) = w.finish().unwrap();
        assert!(matches!(decrypt(&ct[..], &other), Err(OpenError::NoMatch)));
        assert!(check_header(&ct[..]).is_ok());
        assert!(check_header(&b"not age at all\n"[..]).is_err());
    }

    #[test]
    fn bad_recipients_are_refused_without_quoting_them() {
        for bad in [
            "age1notakey",
            "AGE-SECRET-KEY-1QQQQ",
            "hello",
            "ssh-ed25519 AAAAnope",
        ] {
            let e = Encryption::from_spec(&EncryptSpec {
                recipients: vec![bad.to_string()],
                ..Default::default()
            })
            .unwrap_err();
            let msg = crate::error::render(&e);
            assert!(!msg.contains(bad), "{msg}");
            assert_eq!(crate::error::classify(&e), crate::error::ExitStatus::Config);
        }
    }

    #[test]
    fn passphrase_mode_round_trips() {
        let dir = std::env::temp_dir().join(format!("pgdrive-enc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pass");
        std::fs::write(&path, "correct horse battery staple\n").unwrap();
        let enc = Encryption::from_spec(&EncryptSpec {
            passphrase_file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(format!("{enc:?}").contains("horse"), false);
        let ids = Identities::passphrase(&path).unwrap();
        assert_eq!(round_trip(&enc, &ids, b"rows"), b"rows");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02) and the OpenSSH extensions
//! pgdrive uses (`posix-rename@openssh.com`, `fsync@openssh.com`, `statvfs@openssh.com`,
//! `limits@openssh.com`; openssh-portable's PROTOCOL file): packets are built with [`Packet`]
//! and read with [`Reader`]. Nothing here does I/O; [`super::conn`] moves the bytes.
//!
//! Every packet is `uint32 length`, `byte type`, then the body; requests after INIT carry a
//! `uint32 id` that the reply repeats. Integers are big-endian; strings are `uint32 length` and
//! bytes.

use anyhow::{bail, Result};

pub const VERSION: u32 = 3;

pub const FXP_INIT: u8 = 1;
pub const FXP_VERSION: u8 = 2;
pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_WRITE: u8 = 6;
pub const FXP_LSTAT: u8 = 7;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_OPENDIR: u8 = 11;
pub const FXP_READDIR: u8 = 12;
pub const FXP_REMOVE: u8 = 13;
pub const FXP_STAT: u8 = 17;
pub const FXP_RENAME: u8 = 18;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;
pub const FXP_EXTENDED: u8 = 200;
pub const FXP_EXTENDED_REPLY: u8 = 201;

/// `SSH_FXF_*` open flags.
pub const OPEN_READ: u32 = 0x01;
pub const OPEN_WRITE: u32 = 0x02;
pub const OPEN_CREAT: u32 = 0x08;
pub const OPEN_TRUNC: u32 = 0x10;
pub const OPEN_EXCL: u32 = 0x20;

const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// `SSH_FX_*` status codes.
pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_FAILURE: u32 = 4;
pub const FX_OP_UNSUPPORTED: u32 = 8;
/// SFTP v5+; some v3 servers (Hetzner Storage Box) answer a rename onto an existing name with it.
pub const FX_FILE_ALREADY_EXISTS: u32 = 11;

pub const EXT_POSIX_RENAME: &str = "posix-rename@openssh.com";
pub const EXT_FSYNC: &str = "fsync@openssh.com";
pub const EXT_STATVFS: &str = "statvfs@openssh.com";
pub const EXT_LIMITS: &str = "limits@openssh.com";

/// Largest packet accepted from a server: OpenSSH's own limit is 256 KiB; a larger length is a
/// broken stream, not something to allocate for.
pub const MAX_PACKET: usize = 4 << 20;

/// A packet being built. [`Packet::finish`] fills in the length.
pub struct Packet(Vec<u8>);

impl Packet {
    /// A request of `kind` with request id `id`.
    pub fn request(kind: u8, id: u32) -> Packet {
        let mut p = Packet(vec![0, 0, 0, 0, kind]);
        p.u32(id);
        p
    }

    /// SSH_FXP_INIT, which has no id.
    pub fn init() -> Packet {
        let mut p = Packet(vec![0, 0, 0, 0, FXP_INIT]);
        p.u32(VERSION);
        p
    }

    pub fn u32(&mut self, v: u32) -> &mut Packet {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Packet {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Packet {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Packet {
        self.bytes(s.as_bytes())
    }

    /// Attributes with only the permissions set (or none).
    pub fn attrs(&mut self, permissions: Option<u32>) -> &mut Packet {
        match permissions {
            Some(mode) => self.u32(ATTR_PERMISSIONS).u32(mode),
            None => self.u32(0),
        }
    }

    /// The packet's bytes, length prefix included.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// Reads the fields of a received packet's body; every read checks the bounds.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Reader<'a> {
        Reader(body)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("the SFTP server sent a truncated packet");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    pub fn attrs(&mut self) -> Result<Attrs> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            self.u32()?;
            self.u32()?;
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            self.u32()?;
            a.mtime = Some(self.u32()?);
        }
        if flags & ATTR_EXTENDED != 0 {
            for _ in 0..self.u32()? {
                self.bytes()?;
                self.bytes()?;
            }
        }
        Ok(a)
    }
}

/// The attributes pgdrive looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    /// Seconds since the epoch, by the server's clock.
    pub mtime: Option<u32>,
}

impl Attrs {
    const TYPE_MASK: u32 = 0o170000;

    pub fn is_file(&self) -> bool {
        self.permissions
            .is_some_and(|p| p & Self::TYPE_MASK == 0o100000)
    }

    pub fn is_dir(&self) -> bool {
        self.permissions
            .is_some_and(|p| p & Self::TYPE_MASK == 0o040000)
    }
}

/// An SSH_FXP_STATUS reply that is not OK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl Status {
    pub fn parse(body: &mut Reader) -> Result<Status> {
        let code = body.u32()?;
        // some servers omit the message and language tag
        let message = if body.is_empty() {
            String::new()
        } else {
            body.string()?
        };
        Ok(Status { code, message })
    }

    pub fn name(&self) -> &'static str {
        match self.code {
            FX_OK => "ok",
            FX_EOF => "end of file",
            FX_NO_SUCH_FILE => "no such file",
            FX_PERMISSION_DENIED => "permission denied",
            FX_FAILURE => "failure",
            5 => "bad message",
            6 => "no connection",
            7 => "connection lost",
            FX_OP_UNSUPPORTED => "operation unsupported",
            FX_FILE_ALREADY_EXISTS => "file already exists",
            _ => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.name();
        if self.message.is_empty() || self.message.eq_ignore_ascii_case(name) {
            write!(f, "{name} (SFTP status {})", self.code)
        } else {
            write!(f, "{} (SFTP status {}: {name})", self.message, self.code)
        }
    }
}

impl std::error::Error for Status {}

/// The server's SSH_FXP_VERSION: its protocol version and the extensions it offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub extensions: Vec<(String, String)>,
}

impl Hello {
    pub fn parse(body: &[u8]) -> Result<Hello> {
        let mut r = Reader::new(body);
        let version = r.u32()?;
        let mut extensions = Vec::new();
        while !r.is_empty() {
            let name = r.string()?;
            let data = r.string()?;
            extensions.push((name, data));
        }
        Ok(Hello {
            version,
            extensions,
        })
    }

    pub fn offers(&self, name: &str) -> bool {
        self.extensions.iter().any(|(n, _)| n == name)
    }
}

/// `statvfs@openssh.com`'s reply: the bytes available to an unprivileged user.
pub fn parse_statvfs_free(body: &[u8]) -> Result<u64> {
    let mut r = Reader::new(body);
    let _bsize = r.u64()?;
    let frsize = r.u64()?;
    let _blocks = r.u64()?;
    let _bfree = r.u64()?;
    let bavail = r.u64()?;
    Ok(bavail.saturating_mul(frsize))
}

/// `limits@openssh.com`'s reply: (largest read, largest write), zero where the server sets none.
pub fn parse_limits(body: &[u8]) -> Result<(u64, u64)> {
    let mut r = Reader::new(body);
    let _packet = r.u64()?;
    let read = r.u64()?;
    let write = r.u64()?;
    Ok((read, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_their_length_and_fields_read_back() {
        let mut p = Packet::request(FXP_OPEN, 7);
        p.str("dir/a")
            .u32(OPEN_WRITE | OPEN_CREAT)
            .attrs(Some(0o600));
        let bytes = p.finish();
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            bytes.len() - 4
        );
        assert_eq!(bytes[4], FXP_OPEN);
        let mut r = Reader::new(&bytes[5..]);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.string().unwrap(), "dir/a");
        assert_eq!(r.u32().unwrap(), OPEN_WRITE | OPEN_CREAT);
        let a = r.attrs().unwrap();
        assert_eq!(a.permissions, Some(0o600));
        assert!(r.is_empty());
    }

    #[test]
    fn truncated_and_oversized_fields_are_errors_not_panics() {
        let mut r = Reader::new(&[0, 0, 0, 9, b'a']);
        assert!(r.bytes().is_err());
        assert!(Reader::new(&[0, 0]).u32().is_err());
        assert!(Hello::parse(&[0, 0, 0, 3, 0, 0, 0, 1, b'x']).is_err());
    }

    #[test]
    fn attributes_skip_what_they_do_not_keep() {
        let mut p = Packet(Vec::new());
        p.u32(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED)
            .u64(12345)
            .u32(1000)
            .u32(1000)
            .u32(0o100644)
            .u32(1)
            .u32(1_700_000_000)
            .u32(1)
            .str("k")
            .str("v");
        let mut r = Reader::new(&p.0);
        let a = r.attrs().unwrap();
        assert_eq!(a.size, Some(12345));
        assert_eq!(a.mtime, Some(1_700_000_000));
        assert!(a.is_file() && !a.is_dir());
        assert!(r.is_empty());
    }

    #[test]
    fn status_text_names_the_code() {
        let s = Status {
            code: FX_NO_SUCH_FILE,
            message: "No such file".into(),
        };
        assert_eq!(s.to_string(), "no such file (SFTP status 2)");
        let s = Status {
            code: FX_FAILURE,
            message: "Disk quota exceeded".into(),
        };
        assert_eq!(
            s.to_string(),
            "Disk quota exceeded (SFTP status 4: failure)"
        );
    }
}

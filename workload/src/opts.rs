//! Command-line options of the form `--name value`, parsed without allocation.

use crate::rt::Args;

/// Why the arguments were rejected; the binary prints it with the usage text
/// and exits 2.
#[derive(Debug)]
pub enum UsageError {
    UnknownOption(&'static [u8]),
    MissingValue(&'static [u8]),
    BadNumber(&'static [u8]),
    BadAddress(&'static [u8]),
    OutOfRange(&'static str),
    Missing(&'static str),
    BadChoice(&'static [u8]),
}

impl core::fmt::Display for UsageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UsageError::UnknownOption(o) => write!(f, "unknown option {}", s(o)),
            UsageError::MissingValue(o) => write!(f, "option {} needs a value", s(o)),
            UsageError::BadNumber(v) => write!(f, "{} is not a whole number", s(v)),
            UsageError::BadAddress(v) => write!(f, "{} is not an IPv4 address:port", s(v)),
            UsageError::OutOfRange(o) => write!(f, "value of --{o} is out of range"),
            UsageError::Missing(o) => write!(f, "option --{o} is required"),
            UsageError::BadChoice(v) => write!(f, "{} is not one of the choices", s(v)),
        }
    }
}

fn s(b: &[u8]) -> &str {
    core::str::from_utf8(b).unwrap_or("<non-utf8>")
}

/// The options after the subcommand name.
pub struct Opts<'a> {
    args: &'a Args,
    start: usize,
    used: u64,
}

impl<'a> Opts<'a> {
    pub fn new(args: &'a Args, start: usize) -> Opts<'a> {
        Opts { args, start, used: 0 }
    }

    fn find(&mut self, name: &str) -> Result<Option<&'static [u8]>, UsageError> {
        let mut i = self.start;
        while let Some(a) = self.args.get(i) {
            if a.len() == name.len() + 2 && a.starts_with(b"--") && &a[2..] == name.as_bytes() {
                let v = self.args.get(i + 1).ok_or(UsageError::MissingValue(a))?;
                self.used |= (1 << i) | (1 << (i + 1));
                return Ok(Some(v));
            }
            i += 1;
        }
        Ok(None)
    }

    /// A whole-number option within `min..=max`, or `default`.
    pub fn num(&mut self, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, UsageError> {
        let v = match self.find(name)? {
            None => return Ok(default),
            Some(v) => parse_u64(v).ok_or(UsageError::BadNumber(v))?,
        };
        if v < min || v > max {
            return Err(UsageError::OutOfRange(name));
        }
        Ok(v)
    }

    /// An IPv4 `a.b.c.d:port` option, or `default`.
    pub fn addr(&mut self, name: &'static str, default: Option<([u8; 4], u16)>) -> Result<([u8; 4], u16), UsageError> {
        match self.find(name)? {
            None => default.ok_or(UsageError::Missing(name)),
            Some(v) => parse_addr(v).ok_or(UsageError::BadAddress(v)),
        }
    }

    /// A word option (`--job cpu`), if given.
    pub fn word(&mut self, name: &'static str) -> Result<Option<&'static [u8]>, UsageError> {
        self.find(name)
    }

    /// A string option (returned with a trailing NUL appended into `buf`).
    pub fn path<'b>(
        &mut self,
        name: &'static str,
        default: &[u8],
        buf: &'b mut [u8; 512],
    ) -> Result<&'b [u8], UsageError> {
        let v = self.find(name)?.unwrap_or(default);
        if v.len() + 1 > buf.len() || v.is_empty() {
            return Err(UsageError::OutOfRange(name));
        }
        buf[..v.len()].copy_from_slice(v);
        buf[v.len()] = 0;
        Ok(&buf[..v.len() + 1])
    }

    /// Every argument must have been consumed by an option lookup.
    pub fn finish(self) -> Result<(), UsageError> {
        for i in self.start..self.args.len() {
            if self.used & (1 << i) == 0 {
                return Err(UsageError::UnknownOption(self.args.get(i).unwrap_or(b"")));
            }
        }
        Ok(())
    }
}

pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u64;
    }
    Some(v)
}

pub fn parse_addr(s: &[u8]) -> Option<([u8; 4], u16)> {
    let colon = s.iter().rposition(|&c| c == b':')?;
    let port = parse_u64(&s[colon + 1..]).filter(|&p| p > 0 && p < 65536)? as u16;
    let mut ip = [0u8; 4];
    let mut parts = s[..colon].split(|&c| c == b'.');
    for slot in ip.iter_mut() {
        *slot = parse_u64(parts.next()?).filter(|&o| o < 256)? as u8;
    }
    if parts.next().is_some() {
        return None;
    }
    Some((ip, port))
}

//! The state file's frame: one header line `cvbench-snapshot <kind> v<version> sha256:<hex>`
//! and then the JSON body the hash covers. The header is checked (kind, version, hash) before
//! a byte of the body is parsed, so a damaged or foreign file is refused with a reason.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::SnapshotError;

const MAGIC: &str = "cvbench-snapshot";
/// The largest state file read: the bare VM's state is a few KiB.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Frame `body` for guest kind `kind` at format `version`.
pub fn encode<T: Serialize>(kind: &str, version: u32, body: &T) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec_pretty(body)?;
    let mut out = format!("{MAGIC} {kind} v{version} sha256:{}\n", hex(&Sha256::digest(&json))).into_bytes();
    out.extend_from_slice(&json);
    Ok(out)
}

/// Check the frame of `bytes` (read from `path`) and parse its body.
pub fn decode<T: DeserializeOwned>(path: &Path, kind: &str, version: u32, bytes: &[u8]) -> Result<T, SnapshotError> {
    let not = |what: &str| SnapshotError::NotASnapshot { path: path.to_path_buf(), what: what.to_string() };
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| not("no header line"))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| not("the header is not text"))?;
    let body = &bytes[nl + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(not("the header does not start with cvbench-snapshot"));
    }
    if words.next() != Some(kind) {
        return Err(not(&format!("it is not a {kind} snapshot")));
    }
    let found = words
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| not("the header has no format version"))?;
    if found != version {
        return Err(SnapshotError::Version { path: path.to_path_buf(), found, expected: version });
    }
    let expected =
        words.next().and_then(|h| h.strip_prefix("sha256:")).ok_or_else(|| not("the header has no checksum"))?;
    if words.next().is_some() {
        return Err(not("the header has extra words"));
    }
    let actual = hex(&Sha256::digest(body));
    if actual != expected {
        return Err(SnapshotError::Checksum { path: path.to_path_buf(), expected: expected.to_string(), actual });
    }
    serde_json::from_slice(body).map_err(|source| SnapshotError::Parse { path: path.to_path_buf(), source })
}

/// Read and decode the state file at `path`, refusing one larger than [`MAX_STATE_BYTES`].
pub fn read<T: DeserializeOwned>(path: &Path, kind: &str, version: u32) -> Result<T, SnapshotError> {
    read_bounded(path, kind, version, MAX_STATE_BYTES)
}

/// [`read`] with the guest kind's own size bound (a Linux guest's state grows with its vCPUs).
pub fn read_bounded<T: DeserializeOwned>(path: &Path, kind: &str, version: u32, max: u64) -> Result<T, SnapshotError> {
    let io = |what, source| SnapshotError::Io { what, path: path.to_path_buf(), source };
    let file = super::open_regular(path).map_err(|e| io("open", e))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max + 1), &mut bytes).map_err(|e| io("read", e))?;
    if bytes.len() as u64 > max {
        return Err(SnapshotError::Invalid {
            path: path.to_path_buf(),
            what: format!("it is larger than {max} bytes"),
        });
    }
    decode(path, kind, version, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        a: u64,
    }

    fn p() -> &'static Path {
        Path::new("/snap/state")
    }

    #[test]
    fn a_framed_body_decodes_to_itself() {
        let bytes = encode("bare", 1, &Body { a: 7 }).unwrap();
        assert_eq!(decode::<Body>(p(), "bare", 1, &bytes).unwrap(), Body { a: 7 });
    }

    #[test]
    fn another_format_version_is_refused_with_both_numbers() {
        let bytes = encode("bare", 2, &Body { a: 7 }).unwrap();
        let e = decode::<Body>(p(), "bare", 1, &bytes).unwrap_err();
        assert!(matches!(e, SnapshotError::Version { found: 2, expected: 1, .. }), "{e}");
        assert!(e.to_string().contains("/snap/state"), "{e}");
    }

    #[test]
    fn a_changed_body_byte_fails_the_checksum() {
        let mut bytes = encode("bare", 1, &Body { a: 7 }).unwrap();
        let at = bytes.iter().rposition(|&b| b == b'7').unwrap();
        bytes[at] = b'8';
        let e = decode::<Body>(p(), "bare", 1, &bytes).unwrap_err();
        assert!(matches!(e, SnapshotError::Checksum { .. }), "{e}");
    }

    #[test]
    fn another_kind_or_no_header_is_not_a_snapshot() {
        let bytes = encode("linux", 1, &Body { a: 7 }).unwrap();
        assert!(matches!(decode::<Body>(p(), "bare", 1, &bytes), Err(SnapshotError::NotASnapshot { .. })));
        assert!(matches!(decode::<Body>(p(), "bare", 1, b"{}"), Err(SnapshotError::NotASnapshot { .. })));
    }

    #[test]
    fn an_unknown_field_with_a_good_checksum_is_a_parse_error() {
        #[derive(serde::Serialize)]
        struct Wider {
            a: u64,
            b: u64,
        }
        let bytes = encode("bare", 1, &Wider { a: 1, b: 2 }).unwrap();
        assert!(matches!(decode::<Body>(p(), "bare", 1, &bytes), Err(SnapshotError::Parse { .. })));
    }
}

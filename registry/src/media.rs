//! What a registry may send us, checked before anything is fetched: the manifest kinds we
//! accept (OCI image manifest and index, Docker v2 schema 2 manifest and manifest list), the
//! config and layer media types we can unpack, and the linux/amd64 choice in an index.

use cvbench_runtime::image::{
    Descriptor, Manifest, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
};
use serde::Deserialize;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The `Accept` list of a manifest request.
pub const ACCEPT: [&str; 4] = [MEDIA_MANIFEST, MEDIA_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

const CONFIGS: [&str; 2] = [MEDIA_CONFIG, DOCKER_CONFIG];
const LAYERS: [&str; 4] = [MEDIA_LAYER_TAR, MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, DOCKER_LAYER_GZIP];

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest schemaVersion {0} (want 2)")]
    SchemaVersion(u32),
    #[error("unknown media type `{0}`")]
    UnknownMediaType(String),
    #[error("the image index has no linux/amd64 manifest")]
    NoPlatform,
    #[error("invalid digest `{0}` (want sha256:<64 hex>)")]
    BadDigest(String),
    #[error("manifest of {0} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(usize),
}

/// The distribution registry's own limit on a manifest body.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A parsed manifest.
#[derive(Debug)]
pub enum Parsed {
    /// An image manifest and the media type it is served as.
    Image { media_type: String, manifest: Manifest },
    /// An index / manifest list: its entries.
    Index(Vec<Descriptor>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IndexBody {
    manifests: Vec<Descriptor>,
}

/// Parse a manifest body and check every media type in it.
pub fn parse(bytes: &[u8]) -> Result<Parsed, Error> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge(bytes.len()));
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
    if probe.schema_version != 2 {
        return Err(Error::SchemaVersion(probe.schema_version));
    }
    // OCI allows an absent mediaType; then `manifests` marks an index.
    let kind = match probe.media_type {
        Some(t) => t,
        None if probe.manifests.is_some() => MEDIA_INDEX.to_string(),
        None => MEDIA_MANIFEST.to_string(),
    };
    match kind.as_str() {
        MEDIA_INDEX | DOCKER_LIST => {
            let body: IndexBody = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
            Ok(Parsed::Index(body.manifests))
        }
        MEDIA_MANIFEST | DOCKER_MANIFEST => {
            let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
            check_image(&manifest)?;
            Ok(Parsed::Image { media_type: kind, manifest })
        }
        other => Err(Error::UnknownMediaType(other.to_string())),
    }
}

/// The config and every layer must be of a type we can use.
pub fn check_image(m: &Manifest) -> Result<(), Error> {
    // Digests become file names in the store: nothing but sha256:<64 hex> gets that far.
    for d in std::iter::once(&m.config).chain(&m.layers) {
        cvbench_runtime::image::digest_hex(&d.digest).map_err(|_| Error::BadDigest(d.digest.clone()))?;
    }
    if !CONFIGS.contains(&m.config.media_type.as_str()) {
        return Err(Error::UnknownMediaType(m.config.media_type.clone()));
    }
    match m.layers.iter().find(|l| !LAYERS.contains(&l.media_type.as_str())) {
        Some(l) => Err(Error::UnknownMediaType(l.media_type.clone())),
        None => Ok(()),
    }
}

/// The first linux/amd64 image manifest of an index.
pub fn pick_linux_amd64(entries: &[Descriptor]) -> Result<&Descriptor, Error> {
    entries
        .iter()
        .find(|d| {
            let p = d.platform.as_ref();
            let field = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_str()).map(str::to_string);
            field("os").as_deref() == Some("linux")
                && field("architecture").as_deref() == Some("amd64")
                && [MEDIA_MANIFEST, DOCKER_MANIFEST].contains(&d.media_type.as_str())
        })
        .ok_or(Error::NoPlatform)
        .and_then(|d| match cvbench_runtime::image::digest_hex(&d.digest) {
            Ok(_) => Ok(d),
            Err(_) => Err(Error::BadDigest(d.digest.clone())),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest(media: Option<&str>, layer: &str) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": MEDIA_CONFIG, "digest": digest('a'), "size": 2},
            "layers": [{"mediaType": layer, "digest": digest('b'), "size": 3}],
        });
        if let Some(m) = media {
            v["mediaType"] = m.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn oci_manifest_without_media_type_is_an_image() {
        let p = parse(&manifest(None, MEDIA_LAYER_ZSTD)).unwrap();
        assert!(matches!(p, Parsed::Image { ref media_type, .. } if media_type == MEDIA_MANIFEST));
    }

    #[test]
    fn docker_schema2_manifest_is_accepted() {
        let p = parse(&manifest(Some(DOCKER_MANIFEST), DOCKER_LAYER_GZIP)).unwrap();
        assert!(matches!(p, Parsed::Image { ref media_type, .. } if media_type == DOCKER_MANIFEST));
    }

    #[test]
    fn unknown_layer_media_type_is_refused_by_name() {
        let e = parse(&manifest(None, "application/x-mystery")).unwrap_err();
        assert!(matches!(e, Error::UnknownMediaType(ref t) if t == "application/x-mystery"), "{e}");
    }

    #[test]
    fn unknown_manifest_media_type_is_refused() {
        let e = parse(&manifest(Some("application/vnd.example+json"), MEDIA_LAYER_TAR)).unwrap_err();
        assert!(matches!(e, Error::UnknownMediaType(_)), "{e}");
    }

    #[test]
    fn digest_that_is_not_sha256_hex_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&manifest(None, MEDIA_LAYER_TAR)).unwrap();
        v["layers"][0]["digest"] = "sha256:../../../etc/passwd".into();
        let e = parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(e, Error::BadDigest(_)), "{e}");
    }

    #[test]
    fn oversized_manifest_is_refused_before_parsing() {
        let e = parse(&vec![b' '; MAX_MANIFEST_BYTES + 1]).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
    }

    #[test]
    fn schema1_is_refused() {
        let e = parse(br#"{"schemaVersion":1,"name":"x"}"#).unwrap_err();
        assert!(matches!(e, Error::SchemaVersion(1)));
    }

    #[test]
    fn index_choice_is_linux_amd64() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": digest('1'), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": DOCKER_MANIFEST, "digest": digest('2'), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ]
        });
        let Parsed::Index(entries) = parse(&serde_json::to_vec(&body).unwrap()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(pick_linux_amd64(&entries).unwrap().digest, digest('2'));
        assert!(matches!(pick_linux_amd64(&entries[..1]), Err(Error::NoPlatform)));
    }
}

//! The byte form of keys and ciphertexts: a magic number, then (bincode,
//! fixed-width integers) the object's kind, the layout version, the
//! parameters and the payload. Reading checks the size limit before
//! anything else, names a wrong kind or version as such, and turns `tfhe`'s
//! assertions on inconsistent sizes into errors.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::FheError;
use crate::params::FheParams;

/// Header of every serialized object.
const MAGIC: &[u8; 4] = b"CML\x01";

/// Version of the serialized layout.
const FORMAT_VERSION: u16 = 2;

/// The error for a payload whose sizes do not match its parameters.
pub(super) fn conformance(what: &'static str) -> FheError {
    FheError::Deserialize {
        what,
        message: "does not conform to the expected parameters".into(),
    }
}

/// Checks the seed a seeded object (ciphertexts, keys) will be expanded
/// from. cml writes only plain AES-CTR seeds whose generator starts at the
/// first table index; anything else is refused before expansion, where
/// `tfhe-csprng` would index out of its buffer (a byte index past 15) or
/// derive a key from attacker-sized XOF input. Any 128-bit AES seed is a
/// valid key, so what passes expands like an honest object.
pub(super) fn check_seed(
    what: &'static str,
    seed: &tfhe::core_crypto::commons::math::random::CompressionSeed,
) -> Result<(), FheError> {
    use tfhe_csprng::generators::aes_ctr::TableIndex;
    use tfhe_csprng::seeders::SeedKind;
    let why = match (&seed.inner.seed, seed.inner.first_index) {
        (SeedKind::Ctr(_), TableIndex::FIRST) => return Ok(()),
        (SeedKind::Ctr(_), _) => "its seed's generator does not start at the first index",
        _ => "its seed is not a plain AES-CTR seed",
    };
    Err(FheError::Deserialize {
        what,
        message: format!("{why} (cml never writes such a seed)"),
    })
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    kind: &'a str,
    version: u16,
    params: &'a FheParams,
    payload: &'a T,
}

#[derive(Deserialize)]
struct Header {
    kind: String,
    version: u16,
    params: FheParams,
}

fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding()
}

/// `kind`, `params` and `payload` as bytes.
pub(super) fn to_bytes<T: Serialize>(
    kind: &'static str,
    params: &FheParams,
    payload: &T,
) -> Result<Vec<u8>, FheError> {
    use bincode::Options;
    let mut out = MAGIC.to_vec();
    bincode_options()
        .serialize_into(
            &mut out,
            &EnvelopeRef {
                kind,
                version: FORMAT_VERSION,
                params,
                payload,
            },
        )
        .map_err(|e| FheError::Serialize {
            what: kind,
            message: e.to_string(),
        })?;
    Ok(out)
}

/// The parameters and payload of bytes holding a `kind`, at most `limit`
/// bytes long.
pub(super) fn from_bytes<T: DeserializeOwned>(
    kind: &'static str,
    bytes: &[u8],
    limit: u64,
) -> Result<(FheParams, T), FheError> {
    use bincode::Options;
    let err = |message: String| FheError::Deserialize {
        what: kind,
        message,
    };
    if bytes.len() as u64 > limit {
        return Err(err(format!(
            "{} bytes exceed the {limit}-byte limit",
            bytes.len()
        )));
    }
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| err("not a cml object (bad header)".into()))?;
    // The header first, so that the wrong kind of object or version is named
    // as such rather than failing somewhere inside the payload.
    let mut reader = body;
    let header: Header = bincode_options()
        .with_limit(limit)
        .deserialize_from(&mut reader)
        .map_err(|e| err(e.to_string()))?;
    if header.kind != kind {
        return Err(err(format!("these bytes hold {}", header.kind)));
    }
    if header.version != FORMAT_VERSION {
        return Err(err(format!(
            "format version {} is not supported (expected {FORMAT_VERSION})",
            header.version
        )));
    }
    // `tfhe`'s entity constructors assert on inconsistent sizes; a hostile
    // payload must be an error, not a panic.
    let payload = std::panic::catch_unwind(move || {
        let payload: Result<T, _> = bincode_options()
            .with_limit(limit)
            .deserialize_from(&mut reader);
        payload.map(|p| (p, reader.is_empty()))
    })
    .map_err(|_| err("inconsistent sizes".into()))?
    .map_err(|e| err(e.to_string()))?;
    match payload {
        (payload, true) => Ok((header.params, payload)),
        (_, false) => Err(err("trailing bytes after the object".into())),
    }
}

//! A batch of serialized ciphertexts in one HTTP body: `CMLB`, a format
//! version (u16, little-endian), a count (u32), then each item as a length
//! (u64) and its bytes. Items are encrypted inputs (a predict request) or
//! encrypted outputs (its answer), each in its own versioned envelope.
//!
//! Reading checks the count and every length against bounds the reader
//! gives (derived from the model's parameters), before it slices anything,
//! and allocates nothing but the list of slices.
//!
//! ```
//! use cml_runtime::batch;
//!
//! let body = batch::encode(&[b"one".to_vec(), b"two!".to_vec()]);
//! let items = batch::decode(&body, 8, 16).unwrap();
//! assert_eq!(items, vec![&b"one"[..], &b"two!"[..]]);
//! assert!(batch::decode(&body, 1, 16).is_err()); // more items than allowed
//! ```

use thiserror::Error;

const MAGIC: &[u8; 4] = b"CMLB";
/// The batch format version.
pub const VERSION: u16 = 1;
const HEADER: usize = 4 + 2 + 4;

/// Why a batch body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// Not a batch, or another version of the format.
    #[error("not a cml batch (version {VERSION}): {0}")]
    Format(String),
    /// More items than allowed, or none.
    #[error("a batch of {found} items; 1 to {max} are accepted")]
    Count {
        /// Items declared.
        found: u64,
        /// The bound.
        max: usize,
    },
    /// An item larger than allowed.
    #[error("item {index} has {found} bytes; at most {max} are accepted")]
    ItemTooLarge {
        /// Which item.
        index: usize,
        /// Its declared length.
        found: u64,
        /// The bound.
        max: u64,
    },
    /// The body ends before its items do, or goes on after them.
    #[error("the body has {found} bytes where its items need {expected}")]
    Length {
        /// Bytes the header and lengths account for.
        expected: u64,
        /// Bytes there are.
        found: u64,
    },
}

/// Frames `items` as one batch body.
pub fn encode(items: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = items.iter().map(|i| 8 + i.len()).sum();
    let mut out = Vec::with_capacity(HEADER + total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        out.extend_from_slice(&(item.len() as u64).to_le_bytes());
        out.extend_from_slice(item);
    }
    out
}

/// Splits a batch body into its items: at most `max_items`, each at most
/// `max_item_bytes`.
pub fn decode(
    body: &[u8],
    max_items: usize,
    max_item_bytes: u64,
) -> Result<Vec<&[u8]>, BatchError> {
    if body.len() < HEADER || &body[..4] != MAGIC {
        return Err(BatchError::Format("no `CMLB` header".into()));
    }
    let version = u16::from_le_bytes([body[4], body[5]]);
    if version != VERSION {
        return Err(BatchError::Format(format!("version {version}")));
    }
    let count = u32::from_le_bytes([body[6], body[7], body[8], body[9]]) as u64;
    if count == 0 || count > max_items as u64 {
        return Err(BatchError::Count {
            found: count,
            max: max_items,
        });
    }
    let mut items = Vec::with_capacity(count as usize);
    let mut rest = &body[HEADER..];
    let mut expected = HEADER as u64;
    for index in 0..count as usize {
        let Some((len, tail)) = rest.split_first_chunk::<8>() else {
            return Err(BatchError::Length {
                expected: expected + 8,
                found: body.len() as u64,
            });
        };
        let len = u64::from_le_bytes(*len);
        if len > max_item_bytes {
            return Err(BatchError::ItemTooLarge {
                index,
                found: len,
                max: max_item_bytes,
            });
        }
        expected += 8 + len;
        if (tail.len() as u64) < len {
            return Err(BatchError::Length {
                expected,
                found: body.len() as u64,
            });
        }
        let (item, tail) = tail.split_at(len as usize);
        items.push(item);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(BatchError::Length {
            expected,
            found: body.len() as u64,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let body = encode(&[vec![1; 10], vec![2; 20]]);
        assert_eq!(decode(&body, 2, 20).unwrap().len(), 2);
        let err = |b: &[u8]| decode(b, 2, 20).unwrap_err().to_string();
        assert!(err(b"").contains("no `CMLB` header"));
        assert!(
            err(&body[..body.len() - 1]).contains("the body has 55 bytes where its items need 56")
        );
        let mut longer = body.clone();
        longer.push(0);
        assert!(err(&longer).contains("the body has 57 bytes"));
        let mut v2 = body.clone();
        v2[4] = 2;
        assert!(err(&v2).contains("version 2"));
        assert!(decode(&body, 1, 20)
            .unwrap_err()
            .to_string()
            .contains("1 to 1"));
        assert!(decode(&body, 2, 19)
            .unwrap_err()
            .to_string()
            .contains("item 1 has 20 bytes"));
        let mut huge = body.clone();
        huge[HEADER..HEADER + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains("item 0 has 18446744073709551615 bytes"));
        assert!(err(&encode(&[])).contains("a batch of 0 items"));
    }
}

//! A bounded reader of Universal Binary JSON (UBJSON, draft 12), the binary
//! form XGBoost writes when a model file's name does not end in `.json`.
//!
//! It builds a [`serde_json::Value`], so the importers read both forms with
//! one set of types. Every length is checked against the bytes that remain
//! before anything is allocated, containers nest at most [`MAX_DEPTH`]
//! deep, and typed containers of zero-size elements (which could declare
//! any count for free) are refused, so a small file cannot make a large
//! value. `f32`/`f64` NaN and infinities become `null` (no JSON number holds
//! them); the importers then report the field.
//!
//! ```
//! use cml_runtime::import::ubjson::parse;
//!
//! // {"a": [1, 2.5]} with a typed, counted array of two float64s.
//! let mut bytes = b"{i\x01a[$D#i\x02".to_vec();
//! bytes.extend(1.0f64.to_be_bytes());
//! bytes.extend(2.5f64.to_be_bytes());
//! bytes.push(b'}');
//! assert_eq!(parse(&bytes).unwrap(), serde_json::json!({"a": [1.0, 2.5]}));
//! ```

use serde_json::{Map, Number, Value};

/// Deepest container nesting accepted.
pub const MAX_DEPTH: usize = 128;

/// A UBJSON document that cannot be read: where (byte offset) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {message}")]
pub struct UbjsonError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

/// Parses one UBJSON value that spans all of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Value, UbjsonError> {
    let mut r = Reader { bytes, pos: 0 };
    let marker = r.marker()?;
    let value = r.value(marker, 0)?;
    if r.pos != bytes.len() {
        return Err(r.fail(format!(
            "{} bytes after the end of the document",
            bytes.len() - r.pos
        )));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn fail(&self, message: impl Into<String>) -> UbjsonError {
        UbjsonError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], UbjsonError> {
        if n > self.remaining() {
            return Err(self.fail(format!(
                "needs {n} bytes, only {} remain (truncated file?)",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, UbjsonError> {
        Ok(self.take(1)?[0])
    }

    /// The next marker, skipping no-ops.
    fn marker(&mut self) -> Result<u8, UbjsonError> {
        loop {
            let m = self.byte()?;
            if m != b'N' {
                return Ok(m);
            }
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], UbjsonError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// An integer of the type `marker`, if it is an integer type.
    fn int(&mut self, marker: u8) -> Result<i64, UbjsonError> {
        Ok(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.array()?)),
            b'U' => i64::from(self.byte()?),
            b'I' => i64::from(i16::from_be_bytes(self.array()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array()?)),
            b'L' => i64::from_be_bytes(self.array()?),
            other => {
                self.pos -= 1;
                return Err(self.fail(format!(
                    "expected an integer type marker, found {}",
                    show(other)
                )));
            }
        })
    }

    /// A length: an integer marker then a non-negative value that fits in
    /// the remaining bytes at `min_size` bytes per element.
    fn length(&mut self, min_size: usize) -> Result<usize, UbjsonError> {
        let start = self.pos;
        let marker = self.byte()?;
        let n = self.int(marker)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_size) <= self.remaining());
        fits.ok_or_else(|| UbjsonError {
            offset: start,
            message: format!(
                "length {n} does not fit in the {} bytes that remain",
                self.remaining()
            ),
        })
    }

    fn string(&mut self) -> Result<String, UbjsonError> {
        let n = self.length(1)?;
        let start = self.pos;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| UbjsonError {
            offset: start,
            message: "string is not valid UTF-8".into(),
        })
    }

    fn float(x: f64) -> Value {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }

    fn value(&mut self, marker: u8, depth: usize) -> Result<Value, UbjsonError> {
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::from(self.int(marker)?),
            b'd' => Self::float(f64::from(f32::from_be_bytes(self.array()?))),
            b'D' => Self::float(f64::from_be_bytes(self.array()?)),
            b'C' => Value::String(char::from(self.byte()?).to_string()),
            b'S' => Value::String(self.string()?),
            b'H' => {
                let start = self.pos;
                let text = self.string()?;
                let n: Number = text.parse().map_err(|_| UbjsonError {
                    offset: start,
                    message: format!("`{text}` is not a number"),
                })?;
                Value::Number(n)
            }
            b'[' | b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(self.fail(format!("containers nest deeper than {MAX_DEPTH}")));
                }
                self.container(marker == b'{', depth + 1)?
            }
            other => {
                self.pos -= 1;
                return Err(self.fail(format!("unknown type marker {}", show(other))));
            }
        })
    }

    /// Size in bytes of one element of a typed container, `None` for types
    /// whose size varies.
    fn fixed_size(&self, marker: u8) -> Result<Option<usize>, UbjsonError> {
        Ok(match marker {
            b'i' | b'U' | b'C' => Some(1),
            b'I' => Some(2),
            b'l' | b'd' => Some(4),
            b'L' | b'D' => Some(8),
            b'S' | b'H' | b'[' | b'{' => None,
            other => {
                return Err(self.fail(format!(
                    "typed container of {}: only sized element types are accepted",
                    show(other)
                )))
            }
        })
    }

    fn container(&mut self, object: bool, depth: usize) -> Result<Value, UbjsonError> {
        // Optimized header: `$type#count` or `#count`.
        let mut typed = None;
        let mut count = None;
        if self.bytes.get(self.pos) == Some(&b'$') {
            self.pos += 1;
            let t = self.byte()?;
            let size = self.fixed_size(t)?;
            if self.byte()? != b'#' {
                self.pos -= 1;
                return Err(self.fail("a typed container needs a `#` count"));
            }
            // Keys of an object take at least 2 bytes (length and one byte).
            let per = size.unwrap_or(1) + if object { 2 } else { 0 };
            count = Some(self.length(per)?);
            typed = Some(t);
        } else if self.bytes.get(self.pos) == Some(&b'#') {
            self.pos += 1;
            count = Some(self.length(if object { 3 } else { 1 })?);
        }
        let element = |r: &mut Self| -> Result<Value, UbjsonError> {
            match typed {
                Some(t) => r.value(t, depth),
                None => {
                    let m = r.marker()?;
                    r.value(m, depth)
                }
            }
        };
        if object {
            let mut map = Map::new();
            let mut i = 0;
            loop {
                match count {
                    Some(n) if i == n => break,
                    None if self.bytes.get(self.pos) == Some(&b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {}
                }
                let key = self.string()?;
                let v = element(self)?;
                map.insert(key, v);
                i += 1;
            }
            Ok(Value::Object(map))
        } else {
            let mut items = Vec::with_capacity(count.unwrap_or(0));
            loop {
                match count {
                    Some(n) if items.len() == n => break,
                    None => {
                        // Skip no-ops before a possible end marker.
                        while self.bytes.get(self.pos) == Some(&b'N') {
                            self.pos += 1;
                        }
                        if self.bytes.get(self.pos) == Some(&b']') {
                            self.pos += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                items.push(element(self)?);
            }
            Ok(Value::Array(items))
        }
    }
}

fn show(marker: u8) -> String {
    if marker.is_ascii_graphic() {
        format!("`{}`", char::from(marker))
    } else {
        format!("0x{marker:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_type() {
        let mut b = b"{i\x01aZi\x01bTi\x01cFi\x01di\xffi\x01eU\xc8i\x01fI\x01\x00".to_vec();
        b.extend(b"i\x01gl\x00\x01\x00\x00i\x01hL\x00\x00\x00\x00\x00\x00\x00\x07");
        b.extend(b"i\x01id");
        b.extend(0.5f32.to_be_bytes());
        b.extend(b"i\x01jCxi\x01kSi\x02hii\x01lHi\x031.5i\x01m[Ni\x01U\x02]");
        b.extend(b"i\x01n[#i\x02i\x03i\x04i\x01o{#i\x01i\x01pT}");
        let v = parse(&b).unwrap();
        assert_eq!(
            v,
            json!({"a": null, "b": true, "c": false, "d": -1, "e": 200, "f": 256,
                   "g": 65536, "h": 7, "i": 0.5, "j": "x", "k": "hi", "l": 1.5,
                   "m": [1, 2], "n": [3, 4], "o": {"p": true}})
        );
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let err = |b: &[u8]| parse(b).unwrap_err().to_string();
        // A count of 2^62 float64s in a 17-byte file.
        let e = err(b"[$D#L\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        assert!(
            e.starts_with("byte 4: length 4611686018427387904 does not fit"),
            "{e}"
        );
        assert!(err(b"[$D#i\xff").contains("length -1 does not fit"));
        assert!(err(b"[$Z#L\x40\x00\x00\x00\x00\x00\x00\x00").contains("only sized element"));
        assert!(err(b"Si\x05ab").contains("length 5 does not fit"));
        assert!(err(b"[i\x01").contains("truncated"));
        assert!(err(b"{i\x01a").contains("truncated"));
        assert!(err(b"x").contains("unknown type marker `x`"));
        assert!(err(b"Ti\x01").contains("after the end"));
        assert!(err(&[b'['; 400]).contains("nest deeper"));
        assert!(err(b"Si\x01\xff").contains("UTF-8"));
        let nan = [&b"[$d#i\x01"[..], &f32::NAN.to_be_bytes()].concat();
        assert_eq!(parse(&nan).unwrap(), json!([null]));
    }
}

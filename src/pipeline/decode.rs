//! Payload decoding: one MQTT payload into samples (sans-IO; what it allocates is bounded by the
//! payload).

use serde_json::Value;

/// How a stream's payloads are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadFormat {
    /// One JSON number: one sample of one channel.
    Number,
    /// A JSON array: flat (interleaved by channel) or one inner array per sample.
    Array,
    /// A JSON object: one sample, one channel per listed field, optional timestamp field.
    Object {
        /// Fields, in channel order.
        fields: Vec<String>,
        /// Field holding the sample's timestamp.
        timestamp_field: Option<String>,
    },
    /// Raw little-endian f32, interleaved by channel.
    F32Le,
    /// Raw little-endian signed 16-bit PCM, scaled to [-1, 1), interleaved by channel.
    I16Le,
}

impl PayloadFormat {
    /// Whether its samples carry their time (an object with a `timestamp_field`); the others'
    /// are numbered.
    pub fn timed(&self) -> bool {
        matches!(
            self,
            Self::Object {
                timestamp_field: Some(_),
                ..
            }
        )
    }
}

/// The longest timestamp text a payload may carry (RFC 3339 with nanoseconds and a zone is 35).
pub const MAX_TIME_TEXT: usize = 64;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON, or not the JSON shape the format expects.
    #[error("bad JSON: {0}")]
    Json(String),
    /// A value is NaN or infinite.
    #[error("value {index} is not finite")]
    NotFinite {
        /// Index of the value in the payload.
        index: usize,
    },
    /// The number of values is not a whole number of samples.
    #[error("{len} values do not make whole samples of {channels} channels")]
    WrongLength {
        /// Values (or bytes, for f32le) found.
        len: usize,
        /// Channels expected.
        channels: usize,
    },
    /// A field is missing or not a number (a timestamp field: nor a text of at most
    /// [`MAX_TIME_TEXT`] bytes).
    #[error("field {field:?} is missing or not a number (a timestamp: nor a short text)")]
    Field {
        /// The field.
        field: String,
    },
    /// The payload holds no samples.
    #[error("payload holds no samples")]
    Empty,
}

impl DecodeError {
    fn json(e: &serde_json::Error) -> Self {
        Self::Json(e.to_string())
    }
}

/// Decodes `payload` into `out` (cleared first; values interleaved by channel) and returns the
/// payload's timestamp, if the format carries one.
///
/// # Errors
/// [`DecodeError`] for anything malformed; `out` is then unspecified.
pub fn decode_into(
    format: &PayloadFormat,
    channels: usize,
    payload: &[u8],
    out: &mut Vec<f32>,
) -> Result<Option<Value>, DecodeError> {
    out.clear();
    let mut timestamp = None;
    match format {
        PayloadFormat::Number => {
            let v: f64 = serde_json::from_slice(payload).map_err(|e| DecodeError::json(&e))?;
            out.push(v as f32);
        }
        PayloadFormat::Array => {
            // Fast path: a flat array of numbers. Fall back to one inner array per sample.
            match serde_json::from_slice::<Vec<f64>>(payload) {
                Ok(flat) => out.extend(flat.iter().map(|&v| v as f32)),
                Err(flat_err) => {
                    let nested: Vec<Vec<f64>> = serde_json::from_slice(payload)
                        .map_err(|_| DecodeError::json(&flat_err))?;
                    for sample in &nested {
                        if sample.len() != channels {
                            return Err(DecodeError::WrongLength {
                                len: sample.len(),
                                channels,
                            });
                        }
                        out.extend(sample.iter().map(|&v| v as f32));
                    }
                }
            }
        }
        PayloadFormat::Object {
            fields,
            timestamp_field,
        } => {
            let obj: serde_json::Map<String, Value> =
                serde_json::from_slice(payload).map_err(|e| DecodeError::json(&e))?;
            for field in fields {
                let v =
                    obj.get(field)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| DecodeError::Field {
                            field: field.clone(),
                        })?;
                out.push(v as f32);
            }
            if let Some(tf) = timestamp_field {
                // A time as text is kept with every sample until its window is cut, and
                // published in alerts: no longer than any time's text.
                let short = |v: &&Value| v.as_str().is_some_and(|t| t.len() <= MAX_TIME_TEXT);
                timestamp = Some(
                    obj.get(tf)
                        .filter(|v| v.is_number() || short(v))
                        .cloned()
                        .ok_or_else(|| DecodeError::Field { field: tf.clone() })?,
                );
            }
        }
        PayloadFormat::I16Le => {
            if !payload.len().is_multiple_of(2 * channels) {
                return Err(DecodeError::WrongLength {
                    len: payload.len(),
                    channels,
                });
            }
            out.extend(
                payload
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0),
            );
        }
        PayloadFormat::F32Le => {
            if !payload.len().is_multiple_of(4 * channels) {
                return Err(DecodeError::WrongLength {
                    len: payload.len(),
                    channels,
                });
            }
            out.extend(
                payload
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
    }
    if out.is_empty() {
        return Err(DecodeError::Empty);
    }
    if !out.len().is_multiple_of(channels) {
        return Err(DecodeError::WrongLength {
            len: out.len(),
            channels,
        });
    }
    // f64 -> f32 can overflow to infinity; raw f32 can carry NaN.
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(DecodeError::NotFinite { index });
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(format: &PayloadFormat, channels: usize, p: &[u8]) -> Result<Vec<f32>, DecodeError> {
        let mut out = Vec::new();
        decode_into(format, channels, p, &mut out).map(|_| out)
    }

    #[test]
    fn numbers_arrays_and_raw() {
        assert_eq!(dec(&PayloadFormat::Number, 1, b"1.5").unwrap(), vec![1.5]);
        assert_eq!(
            dec(&PayloadFormat::Array, 2, b"[1,2,3,4]").unwrap(),
            vec![1., 2., 3., 4.]
        );
        assert_eq!(
            dec(&PayloadFormat::Array, 2, b"[[1,2],[3,4]]").unwrap(),
            vec![1., 2., 3., 4.]
        );
        let raw: Vec<u8> = [1.0f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            dec(&PayloadFormat::F32Le, 1, &raw).unwrap(),
            vec![1.0, -2.0]
        );
    }

    #[test]
    fn pcm_i16() {
        let pcm: Vec<u8> = [16_384i16, -32_768]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            dec(&PayloadFormat::I16Le, 1, &pcm).unwrap(),
            vec![0.5, -1.0]
        );
        assert!(matches!(
            dec(&PayloadFormat::I16Le, 1, &[0]),
            Err(DecodeError::WrongLength { .. })
        ));
    }

    #[test]
    fn object_fields_in_order_with_timestamp() {
        let f = PayloadFormat::Object {
            fields: vec!["b".into(), "a".into()],
            timestamp_field: Some("t".into()),
        };
        let mut out = Vec::new();
        let ts = decode_into(
            &f,
            2,
            br#"{"a":1,"b":2,"t":"2020-01-01 00:00:00"}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![2.0, 1.0]);
        assert_eq!(ts, Some(Value::String("2020-01-01 00:00:00".into())));
        assert_eq!(
            dec(&f, 2, br#"{"a":1,"t":0}"#),
            Err(DecodeError::Field { field: "b".into() })
        );
        // A time as text no longer than any time's: it is kept with each sample.
        let long = format!(r#"{{"a":1,"b":2,"t":"{}"}}"#, "9".repeat(MAX_TIME_TEXT + 1));
        assert_eq!(
            dec(&f, 2, long.as_bytes()),
            Err(DecodeError::Field { field: "t".into() })
        );
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let a = PayloadFormat::Array;
        assert!(matches!(dec(&a, 1, b"[1,"), Err(DecodeError::Json(_))));
        assert!(matches!(
            dec(&a, 1, b"{\"x\":1}"),
            Err(DecodeError::Json(_))
        ));
        assert_eq!(dec(&a, 1, b"[]"), Err(DecodeError::Empty));
        assert_eq!(
            dec(&a, 2, b"[1,2,3]"),
            Err(DecodeError::WrongLength {
                len: 3,
                channels: 2
            })
        );
        assert_eq!(
            dec(&a, 2, b"[[1,2],[3]]"),
            Err(DecodeError::WrongLength {
                len: 1,
                channels: 2
            })
        );
        assert_eq!(
            dec(&a, 1, b"[1, 1e39]"),
            Err(DecodeError::NotFinite { index: 1 })
        );
        assert!(matches!(
            dec(&PayloadFormat::Number, 1, b"NaN"),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(
            dec(&PayloadFormat::Number, 1, b"\"1\""),
            Err(DecodeError::Json(_))
        ));
        let nan = f32::NAN.to_le_bytes();
        assert_eq!(
            dec(&PayloadFormat::F32Le, 1, &nan),
            Err(DecodeError::NotFinite { index: 0 })
        );
        assert!(matches!(
            dec(&PayloadFormat::F32Le, 1, &[0, 0, 0]),
            Err(DecodeError::WrongLength { .. })
        ));
        assert!(matches!(
            dec(&a, 1, &[0xff, 0xfe, 0x00]),
            Err(DecodeError::Json(_))
        ));
    }
}

//! `manifest.toml`: what a model version folder promises about its `model.onnx`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ModelError;

/// The manifest format this build reads.
pub const FORMAT: u32 = 1;

/// A model version's manifest. Tables this build does not use (`data`, `training`,
/// `validation`) are kept as free-form TOML.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Format number ([`FORMAT`]).
    pub format: u32,
    /// Model name.
    pub name: String,
    /// Version label, unique within the name.
    pub version: String,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// The command that produced the model.
    #[serde(default)]
    pub command: String,
    /// Hex SHA-256 of `model.onnx`.
    pub sha256: String,
    /// Input tensor.
    pub input: InputSpec,
    /// Output tensors.
    pub output: OutputSpec,
    /// Calibrated threshold.
    pub threshold: ThresholdSpec,
    /// Audio models (`input.kind = "logmel"`): the log-mel parameters the windows were made with.
    #[serde(default)]
    pub features: Option<crate::pipeline::features::LogMelParams>,
    /// Training data summary.
    #[serde(default)]
    pub data: Option<toml::Table>,
    /// Training summary.
    #[serde(default)]
    pub training: Option<toml::Table>,
    /// Validation scores.
    #[serde(default)]
    pub validation: Option<toml::Table>,
}

/// `[input]`: a float32 tensor `[batch, window, channels]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input kind; `window` (raw samples) is the one this build serves.
    pub kind: String,
    /// Tensor name.
    pub name: String,
    /// W.
    pub window: usize,
    /// C.
    pub channels: usize,
    /// Element type; `float32`.
    #[serde(default = "float32")]
    pub dtype: String,
    /// The channels' names, in order, when training knew them (a CSV's columns): a stream or
    /// recording with other names, or the same in another order, is refused.
    #[serde(default)]
    pub channel_names: Vec<String>,
    /// The channels' units, in order, when training was told them (`ebgand train --units`).
    #[serde(default)]
    pub channel_units: Vec<String>,
}

impl InputSpec {
    /// Checks the names of the channels a stream or recording gives (`what` says which)
    /// against the names the model was trained on. Either side without names passes.
    ///
    /// # Errors
    /// A message naming both lists when they differ, in content or in order.
    pub fn check_names(&self, names: &[String], what: &str) -> Result<(), String> {
        if self.channel_names.is_empty() || names.is_empty() || self.channel_names == names {
            return Ok(());
        }
        let mut same = self.channel_names.clone();
        let mut theirs = names.to_vec();
        same.sort();
        theirs.sort();
        let how = if same == theirs {
            "the same channels in another order"
        } else {
            "other channels"
        };
        Err(format!(
            "{what} gives {how}: [{}], but the model was trained on [{}] (in this order)",
            names.join(", "),
            self.channel_names.join(", ")
        ))
    }
}

fn float32() -> String {
    "float32".into()
}

/// `[output]`: tensor names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// `[batch]` energies.
    pub energy: String,
    /// `[batch, window * channels]` residuals.
    pub residual: String,
}

/// `[threshold]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Energy above which a window is anomalous.
    pub value: f32,
    /// Quantile of held-out healthy energies it came from.
    pub quantile: f64,
    /// Held-out windows it was computed on.
    #[serde(default)]
    pub windows: u64,
}

impl Manifest {
    /// Reads and parses `dir/manifest.toml` alone: no value checks, no content hash. For
    /// listings; [`ModelVersion::open`] is what checks a version before use.
    ///
    /// # Errors
    /// [`ModelError::Io`] or [`ModelError::Manifest`].
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_toml(&text, &path)
    }

    /// Parses manifest text alone, as [`Manifest::read`] does after reading the file; `path`
    /// only names the manifest in the error.
    ///
    /// # Errors
    /// [`ModelError::Manifest`] when the text does not parse into a manifest.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ModelError> {
        toml::from_str(text).map_err(|e| ModelError::Manifest {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }
}

/// A model version folder, read and checked (manifest parsed, content hash verified).
#[derive(Debug, Clone)]
pub struct ModelVersion {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl ModelVersion {
    /// Reads `dir/manifest.toml`, checks its format and values, and verifies the SHA-256 of
    /// `dir/model.onnx`.
    ///
    /// # Errors
    /// [`ModelError::Io`] when a file cannot be read, [`ModelError::Manifest`] for a manifest that
    /// does not parse or holds bad values, [`ModelError::Hash`] when the model's content does not
    /// match the manifest.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let manifest_path = dir.join("manifest.toml");
        let manifest = Manifest::read(dir)?;
        let bad = |reason: String| ModelError::Manifest {
            path: manifest_path.clone(),
            reason,
        };
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "format {} (this build reads {FORMAT})",
                manifest.format
            )));
        }
        match (manifest.input.kind.as_str(), &manifest.features) {
            ("window", None) => {}
            ("logmel", Some(f)) => {
                if (manifest.input.window, manifest.input.channels) != (f.frames, f.n_mels) {
                    return Err(bad(format!(
                        "a logmel input is features.frames x features.n_mels ({} x {}), not {} x {}",
                        f.frames, f.n_mels, manifest.input.window, manifest.input.channels
                    )));
                }
            }
            ("logmel", None) => {
                return Err(bad("input.kind \"logmel\" needs a [features] table".into()));
            }
            ("window", Some(_)) => {
                return Err(bad("[features] is only for input.kind \"logmel\"".into()));
            }
            (other, _) => {
                return Err(bad(format!(
                    "input.kind {other:?} (this build serves \"window\" and \"logmel\")"
                )));
            }
        }
        if manifest.input.dtype != "float32" {
            return Err(bad(format!(
                "input.dtype {:?} (expected \"float32\")",
                manifest.input.dtype
            )));
        }
        if manifest.input.window == 0 || manifest.input.channels == 0 {
            return Err(bad(
                "input.window and input.channels must be at least 1".into()
            ));
        }
        let names = &manifest.input.channel_names;
        if !names.is_empty() && names.len() != manifest.input.channels {
            return Err(bad(format!(
                "input.channel_names has {} names for {} channels",
                names.len(),
                manifest.input.channels
            )));
        }
        let units = &manifest.input.channel_units;
        if !units.is_empty() && units.len() != manifest.input.channels {
            return Err(bad(format!(
                "input.channel_units has {} units for {} channels",
                units.len(),
                manifest.input.channels
            )));
        }
        let t = manifest.threshold.value;
        if !(t.is_finite() && t > 0.0) {
            return Err(bad(format!(
                "threshold.value {t} must be a positive finite number"
            )));
        }
        let model_path = dir.join("model.onnx");
        let bytes = std::fs::read(&model_path).map_err(|source| ModelError::Io {
            path: model_path.clone(),
            source,
        })?;
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(manifest.sha256.trim()) {
            return Err(ModelError::Hash {
                path: model_path,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Path of `model.onnx`.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.onnx")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vibration/fixture-1")
    }

    #[test]
    fn committed_fixture_opens() {
        let v = ModelVersion::open(&fixture()).unwrap();
        assert_eq!(v.manifest.input.window, 64);
        assert_eq!(v.manifest.input.channels, 1);
        assert!(v.manifest.threshold.value > 0.0);
    }

    #[test]
    fn tampered_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["manifest.toml", "model.onnx"] {
            std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
        }
        let mut bytes = std::fs::read(dir.path().join("model.onnx")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(dir.path().join("model.onnx"), bytes).unwrap();
        assert!(matches!(
            ModelVersion::open(dir.path()),
            Err(ModelError::Hash { .. })
        ));
    }

    #[test]
    fn bad_manifest_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture().join("model.onnx"), dir.path().join("model.onnx")).unwrap();
        let text = std::fs::read_to_string(fixture().join("manifest.toml")).unwrap();
        std::fs::write(
            dir.path().join("manifest.toml"),
            text.replace("format = 1", "format = 9"),
        )
        .unwrap();
        let err = ModelVersion::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
        std::fs::write(dir.path().join("manifest.toml"), "name = 1").unwrap();
        assert!(matches!(
            ModelVersion::open(dir.path()),
            Err(ModelError::Manifest { .. })
        ));
    }
}

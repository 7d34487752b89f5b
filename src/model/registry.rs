//! The model registry: versions side by side under the state directory, one active version
//! per model name, and a history of activations.
//!
//! ```text
//! <root>/<name>/<version>/model.onnx, manifest.toml   immutable once imported
//! <root>/<name>/ACTIVE                                the active version's label
//! <root>/<name>/HISTORY                               one JSON line per activation
//! ```
//! `ACTIVE` is replaced by writing a temp file, fsyncing it, renaming it over the old one and
//! fsyncing the folder, so a crash at any moment leaves the old or the new pointer, never a
//! mix; a version folder is imported under a hidden temp name and renamed into place whole.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ModelError, ModelVersion};

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file operation failed.
    #[error("registry {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The version is not in the registry.
    #[error("model {name} has no version {version:?} in the registry (it has: {known})")]
    UnknownVersion {
        /// Model.
        name: String,
        /// Version asked for.
        version: String,
        /// Versions present.
        known: String,
    },
    /// The version folder is not a valid model version.
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// Nothing to roll back to.
    #[error("model {0} has no earlier version to roll back to")]
    NoPrevious(String),
    /// The version is already in the registry.
    #[error("model {name} already has a version {version:?}; versions are immutable")]
    Exists {
        /// Model.
        name: String,
        /// Version.
        version: String,
    },
}

/// The reason an activation by rollback records.
pub const ROLLBACK: &str = "rollback";

/// One line of `HISTORY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The version made active.
    pub version: String,
    /// The version it replaced.
    pub previous: Option<String>,
    /// Why (`cli`, `rollback`, `control`, `registry`, `trained`, `seed ...`, `refused X: ...`).
    pub reason: String,
    /// A version the daemon refused, when this activation puts the pointer back after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The registry under one root folder.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

/// The version `folder/file` names (`None` when it is missing or empty).
fn read_pointer(folder: &Path, file: &str) -> Result<Option<String>, RegistryError> {
    let path = folder.join(file);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Io { path, source }),
    }
}

/// Replaces `folder/file` with one line naming `version`, whole or not at all (a temp file
/// synced, renamed over it, the folder synced).
fn write_pointer(folder: &Path, file: &str, version: &str) -> Result<(), RegistryError> {
    let tmp = folder.join(format!(".{file}.{}", std::process::id()));
    crate::durable::write_synced(&tmp, format!("{version}\n").as_bytes()).map_err(io(&tmp))?;
    let path = folder.join(file);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(folder)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Registry {
    /// Opens (creating) the registry at `root`.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the folder cannot be created.
    pub fn open(root: &Path) -> Result<Self, RegistryError> {
        fs::create_dir_all(root).map_err(io(root))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A version's folder.
    pub fn path(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    /// Model names present.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the root cannot be listed.
    pub fn names(&self) -> Result<Vec<String>, RegistryError> {
        list_dirs(&self.root)
    }

    /// Versions of `name`, oldest first by the manifest's creation time, then label (hidden
    /// temp folders of an interrupted import are skipped).
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the folder cannot be listed.
    pub fn versions(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        Ok(self
            .created(name)?
            .into_iter()
            .map(|(_, version)| version)
            .collect())
    }

    /// Versions of `name` with their manifests' creation times, oldest first (as
    /// [`Registry::versions`]).
    fn created(&self, name: &str) -> Result<Vec<(String, String)>, RegistryError> {
        let dir = self.root.join(name);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut v: Vec<(String, String)> = list_dirs(&dir)?
            .into_iter()
            .map(|version| {
                // Sorting needs the creation time only: no hashing of every model here.
                let created = super::Manifest::read(&dir.join(&version))
                    .map(|m| m.created)
                    .unwrap_or_default();
                (created, version)
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The active version of `name`, if any.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when `ACTIVE` exists but cannot be read.
    pub fn active(&self, name: &str) -> Result<Option<String>, RegistryError> {
        read_pointer(&self.root.join(name), "ACTIVE")
    }

    /// The retrained version of `name` the daemon was warming up in shadow when it last
    /// recorded one (`WARMING`), so a restart resumes the warm-up instead of leaving the
    /// version unserved until the next training run.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when `WARMING` exists but cannot be read.
    pub fn warming(&self, name: &str) -> Result<Option<String>, RegistryError> {
        read_pointer(&self.root.join(name), "WARMING")
    }

    /// Records the version of `name` warming up in shadow, or with `None` that none is.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the record cannot be written or removed.
    pub fn set_warming(&self, name: &str, version: Option<&str>) -> Result<(), RegistryError> {
        let folder = self.root.join(name);
        match version {
            Some(v) => write_pointer(&folder, "WARMING", v),
            None => {
                let path = folder.join("WARMING");
                match fs::remove_file(&path) {
                    Ok(()) => sync_dir(&folder),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(RegistryError::Io { path, source }),
                }
            }
        }
    }

    /// Opens the active version of `name`, checked (manifest, content hash).
    ///
    /// # Errors
    /// [`RegistryError`] when it cannot be read or is invalid.
    pub fn open_active(&self, name: &str) -> Result<Option<ModelVersion>, RegistryError> {
        match self.active(name)? {
            Some(v) => Ok(Some(ModelVersion::open(&self.path(name, &v))?)),
            None => Ok(None),
        }
    }

    /// The activation history of `name`, oldest first.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when `HISTORY` exists but cannot be read.
    pub fn history(&self, name: &str) -> Result<Vec<Activation>, RegistryError> {
        let path = self.root.join(name).join("HISTORY");
        match fs::read_to_string(&path) {
            // A line cut short by a crash is skipped, not fatal.
            Ok(text) => Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(RegistryError::Io { path, source }),
        }
    }

    /// Copies a model version folder into the registry under its manifest's name and version.
    /// Returns the version label.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a folder that is not a valid version,
    /// [`RegistryError::Exists`] when the version is there already.
    pub fn import(&self, src: &Path) -> Result<ModelVersion, RegistryError> {
        let version = ModelVersion::open(src)?;
        let m = &version.manifest;
        let dest = self.path(&m.name, &m.version);
        if dest.exists() {
            return Err(RegistryError::Exists {
                name: m.name.clone(),
                version: m.version.clone(),
            });
        }
        let parent = self.root.join(&m.name);
        fs::create_dir_all(&parent).map_err(io(&parent))?;
        let tmp = parent.join(format!(".import-{}-{}", m.version, std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        for file in ["model.onnx", "manifest.toml"] {
            let to = tmp.join(file);
            fs::copy(src.join(file), &to).map_err(io(&to))?;
            File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(io(&to))?;
        }
        sync_dir(&tmp)?;
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        sync_dir(&parent)?;
        Ok(ModelVersion::open(&dest)?)
    }

    /// The version to serve at start: the active one, or else the configured folder
    /// `configured` imported (unless already here) and activated, the seed; `None` when
    /// neither exists and the model learns from its streams.
    ///
    /// # Errors
    /// The configured folder is not a valid version ([`RegistryError::Invalid`]), or an I/O
    /// error.
    pub fn seed(
        &self,
        name: &str,
        configured: Option<&Path>,
    ) -> Result<Option<String>, RegistryError> {
        if let Some(v) = self.active(name)? {
            return Ok(Some(v));
        }
        let Some(path) = configured else {
            tracing::info!(model = %name, registry = %self.root().display(), "No version of this model yet: it learns from its streams.");
            return Ok(None);
        };
        let version = ModelVersion::open(path)?.manifest.version;
        if !self.path(name, &version).exists() {
            self.import(path)?;
        }
        self.activate(name, &version, &format!("seed from {}", path.display()))?;
        tracing::info!(model = %name, version = %version, from = %path.display(), "Registry seeded.");
        Ok(Some(version))
    }

    /// Makes `version` the active version of `name` (it must be in the registry and valid),
    /// recording why, and ends any warm-up record (`WARMING`): a version activated, whether
    /// the warming one promoted or another chosen (by `ebgand models activate` or `rollback`
    /// while the daemon was stopped, too), leaves nothing to resume. Returns the version it
    /// replaced.
    ///
    /// # Errors
    /// [`RegistryError::UnknownVersion`], [`RegistryError::Invalid`] or an I/O error; the
    /// active pointer is then unchanged (an error clearing `WARMING` comes after the pointer
    /// and its history are written).
    pub fn activate(
        &self,
        name: &str,
        version: &str,
        reason: &str,
    ) -> Result<Option<String>, RegistryError> {
        let previous = self.activate_with(name, version, reason, None)?;
        self.set_warming(name, None)?;
        Ok(previous)
    }

    /// Puts the pointer back to `version` after the daemon refused `refused`; rollback skips
    /// refused versions.
    ///
    /// # Errors
    /// As [`Registry::activate`].
    pub fn revert(
        &self,
        name: &str,
        version: &str,
        refused: &str,
        reason: &str,
    ) -> Result<Option<String>, RegistryError> {
        self.activate_with(name, version, reason, Some(refused.to_owned()))
    }

    fn activate_with(
        &self,
        name: &str,
        version: &str,
        reason: &str,
        refused: Option<String>,
    ) -> Result<Option<String>, RegistryError> {
        let dir = self.path(name, version);
        if !dir.is_dir() || version.starts_with('.') || version.contains('/') {
            return Err(RegistryError::UnknownVersion {
                name: name.into(),
                version: version.into(),
                known: self.versions(name)?.join(", "),
            });
        }
        ModelVersion::open(&dir)?;
        let previous = self.active(name)?;
        let folder = self.root.join(name);
        write_pointer(&folder, "ACTIVE", version)?;
        let entry = Activation {
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            version: version.into(),
            previous: previous.clone(),
            reason: reason.into(),
            refused,
        };
        let history = folder.join("HISTORY");
        let mut h = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history)
            .map_err(io(&history))?;
        let line = serde_json::to_string(&entry).unwrap_or_default();
        h.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| h.sync_all())
            .map_err(io(&history))?;
        Ok(previous)
    }

    /// The version to roll back to. The history is replayed as a stack of served versions:
    /// an activation pushes its version, a rollback pops back to its target, so successive
    /// rollbacks walk the history backwards (c, then b, then a) instead of toggling between
    /// the last two. The target is the nearest version below the active one that the daemon
    /// never refused and that is still valid.
    ///
    /// # Errors
    /// [`RegistryError::NoPrevious`] when there is none.
    pub fn rollback_target(&self, name: &str) -> Result<String, RegistryError> {
        let active = self.active(name)?;
        let history = self.history(name)?;
        let refused: std::collections::HashSet<&str> = history
            .iter()
            .filter_map(|a| a.refused.as_deref())
            .collect();
        let mut served: Vec<&str> = Vec::new();
        for a in &history {
            if a.reason == ROLLBACK && served.contains(&a.version.as_str()) {
                while served.last().is_some_and(|v| *v != a.version) {
                    served.pop();
                }
            } else if served.last() != Some(&a.version.as_str()) {
                served.push(&a.version);
            }
        }
        served
            .iter()
            .rev()
            .find(|v| {
                Some(**v) != active.as_deref()
                    && !refused.contains(*v)
                    && ModelVersion::open(&self.path(name, v)).is_ok()
            })
            .map(|v| (*v).to_owned())
            .ok_or_else(|| RegistryError::NoPrevious(name.into()))
    }

    /// What `prune(name, keep, spare)` would remove: every version but the active one, the
    /// one warming up (`WARMING`: a daemon holds it in shadow, or resumes its warm-up at its
    /// next start), the `keep - 1` others activated or created most recently (the last
    /// activation in the history, else the manifest's creation time), and those in `spare` (a
    /// version a running daemon holds: served, or in shadow).
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the folder or the history cannot be read.
    pub fn prunable(
        &self,
        name: &str,
        keep: usize,
        spare: &[&str],
    ) -> Result<Vec<String>, RegistryError> {
        let active = self.active(name)?;
        let warming = self.warming(name)?;
        let history = self.history(name)?;
        // One manifest read per version: the creation times `versions` sorts by.
        let mut others: Vec<(u64, String)> = self
            .created(name)?
            .into_iter()
            .filter(|(_, v)| Some(v) != active.as_ref() && Some(v) != warming.as_ref())
            .map(|(created, v)| {
                let activated = history
                    .iter()
                    .filter(|a| a.version == v)
                    .map(|a| a.at)
                    .max();
                let created = humantime::parse_rfc3339_weak(&created)
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                (activated.unwrap_or(0).max(created), v)
            })
            .collect();
        // Newest first; the label breaks ties the same way every time.
        others.sort_by(|a, b| b.cmp(a));
        let room = keep.saturating_sub(usize::from(active.is_some()));
        Ok(others
            .into_iter()
            .skip(room)
            .map(|(_, v)| v)
            .filter(|v| !spare.contains(&v.as_str()))
            .collect())
    }

    /// Removes the versions [`Registry::prunable`] names (each renamed to a hidden folder
    /// first, so a crash mid-way never leaves half a version listed). Returns them.
    ///
    /// # Errors
    /// [`RegistryError::Io`]; the versions removed before the failure stay removed.
    pub fn prune(
        &self,
        name: &str,
        keep: usize,
        spare: &[&str],
    ) -> Result<Vec<String>, RegistryError> {
        let gone = self.prunable(name, keep, spare)?;
        for v in &gone {
            let path = self.path(name, v);
            let hidden = self.root.join(name).join(format!(".pruned.{v}"));
            fs::rename(&path, &hidden).map_err(io(&path))?;
            fs::remove_dir_all(&hidden).map_err(io(&hidden))?;
        }
        if !gone.is_empty() {
            sync_dir(&self.root.join(name))?;
        }
        Ok(gone)
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), RegistryError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(version: &str, dir: &Path) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vibration/fixture-1");
        let out = dir.join(version);
        fs::create_dir_all(&out).unwrap();
        fs::copy(src.join("model.onnx"), out.join("model.onnx")).unwrap();
        let m = fs::read_to_string(src.join("manifest.toml")).unwrap();
        fs::write(
            out.join("manifest.toml"),
            m.replace(
                "version = \"fixture-1\"",
                &format!("version = \"{version}\""),
            ),
        )
        .unwrap();
        out
    }

    #[test]
    fn import_activate_rollback_history() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::open(root.path()).unwrap();
        assert_eq!(reg.active("vibration").unwrap(), None);
        for v in ["v1", "v2"] {
            reg.import(&fixture(v, src.path())).unwrap();
        }
        assert!(matches!(
            reg.import(&fixture("v1", src.path())),
            Err(RegistryError::Exists { .. })
        ));
        assert_eq!(reg.versions("vibration").unwrap(), vec!["v1", "v2"]);
        assert_eq!(reg.activate("vibration", "v1", "seed").unwrap(), None);
        assert_eq!(
            reg.activate("vibration", "v2", "cli").unwrap(),
            Some("v1".into())
        );
        assert_eq!(reg.active("vibration").unwrap().as_deref(), Some("v2"));
        assert_eq!(reg.rollback_target("vibration").unwrap(), "v1");
        assert!(matches!(
            reg.activate("vibration", "v9", "cli"),
            Err(RegistryError::UnknownVersion { .. })
        ));
        assert!(matches!(
            reg.activate("vibration", "../x", "cli"),
            Err(RegistryError::UnknownVersion { .. })
        ));
        let h = reg.history("vibration").unwrap();
        assert_eq!(
            h.iter().map(|a| a.version.as_str()).collect::<Vec<_>>(),
            vec!["v1", "v2"]
        );
        assert_eq!(h[1].previous.as_deref(), Some("v1"));
    }

    #[test]
    fn the_warming_record_is_written_whole_read_back_and_cleared() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::open(root.path()).unwrap();
        for v in ["v1", "v2"] {
            reg.import(&fixture(v, src.path())).unwrap();
        }
        assert_eq!(reg.warming("vibration").unwrap(), None);
        reg.set_warming("vibration", Some("v2")).unwrap();
        assert_eq!(reg.warming("vibration").unwrap().as_deref(), Some("v2"));
        // Neither a version nor a temp file left beside it.
        assert_eq!(reg.versions("vibration").unwrap(), vec!["v1", "v2"]);
        let dir = root.path().join("vibration");
        assert!(
            fs::read_dir(&dir).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
        );
        reg.set_warming("vibration", None).unwrap();
        assert_eq!(reg.warming("vibration").unwrap(), None);
        // Clearing what is not there is not an error.
        reg.set_warming("vibration", None).unwrap();
        // Any activation ends the record: another version chosen by hand (here while no
        // daemon runs, which would otherwise resume the warm-up at its next start and
        // promote it over that choice), or the warming version itself.
        for v in ["v1", "v2"] {
            reg.set_warming("vibration", Some("v2")).unwrap();
            reg.activate("vibration", v, "cli").unwrap();
            assert_eq!(reg.warming("vibration").unwrap(), None, "activating {v}");
        }
    }

    #[test]
    fn corrupt_version_cannot_be_activated() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::open(root.path()).unwrap();
        reg.import(&fixture("v1", src.path())).unwrap();
        reg.activate("vibration", "v1", "seed").unwrap();
        reg.import(&fixture("v2", src.path())).unwrap();
        fs::write(reg.path("vibration", "v2").join("model.onnx"), b"garbage").unwrap();
        let err = reg.activate("vibration", "v2", "cli").unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
        assert_eq!(reg.active("vibration").unwrap().as_deref(), Some("v1"));
        assert!(matches!(
            reg.rollback_target("vibration"),
            Err(RegistryError::NoPrevious(_))
        ));
    }

    #[test]
    fn rollback_skips_refused_versions() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::open(root.path()).unwrap();
        for v in ["v1", "v2", "v3"] {
            reg.import(&fixture(v, src.path())).unwrap();
        }
        reg.activate("vibration", "v1", "seed").unwrap();
        reg.activate("vibration", "v2", "cli").unwrap();
        reg.activate("vibration", "v3", "cli").unwrap();
        reg.revert("vibration", "v2", "v3", "refused v3: gate")
            .unwrap();
        assert_eq!(reg.rollback_target("vibration").unwrap(), "v1");
    }

    #[test]
    fn rollbacks_walk_the_history_backwards() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::open(root.path()).unwrap();
        for v in ["a", "b", "c"] {
            reg.import(&fixture(v, src.path())).unwrap();
            reg.activate("vibration", v, "cli").unwrap();
        }
        let mut walked = Vec::new();
        while let Ok(target) = reg.rollback_target("vibration") {
            reg.activate("vibration", &target, ROLLBACK).unwrap();
            walked.push(target);
        }
        assert_eq!(walked, ["b", "a"], "not back and forth between c and b");
        // A new activation after rolling back starts a new top.
        reg.activate("vibration", "c", "cli").unwrap();
        assert_eq!(reg.rollback_target("vibration").unwrap(), "a");
    }

    #[test]
    fn prune_keeps_the_active_version_and_the_most_recent_others() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let reg = Registry::open(root.path()).unwrap();
        for (i, v) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
            let dir = fixture(v, src.path());
            let m = fs::read_to_string(dir.join("manifest.toml")).unwrap();
            let m = m.replace("2026-11-29T00:00:00Z", &format!("2026-11-29T0{i}:00:00Z"));
            fs::write(dir.join("manifest.toml"), m).unwrap();
            reg.import(&dir).unwrap();
        }
        // v1 active (oldest); v4, v3, v2 newest first by creation.
        reg.activate("vibration", "v1", "seed").unwrap();
        assert_eq!(reg.prunable("vibration", 2, &[]).unwrap(), ["v3", "v2"]);
        // A version the daemon holds (a shadow) is spared.
        assert_eq!(reg.prunable("vibration", 2, &["v2"]).unwrap(), ["v3"]);
        // So is the one warming up, whether or not a daemon runs to say so.
        reg.set_warming("vibration", Some("v3")).unwrap();
        assert_eq!(reg.prunable("vibration", 2, &[]).unwrap(), ["v2"]);
        reg.set_warming("vibration", None).unwrap();
        assert_eq!(reg.prune("vibration", 2, &[]).unwrap(), ["v3", "v2"]);
        assert_eq!(reg.versions("vibration").unwrap(), ["v1", "v4"]);
        assert_eq!(reg.active("vibration").unwrap().as_deref(), Some("v1"));
        assert!(reg.prune("vibration", 2, &[]).unwrap().is_empty());
        assert_eq!(reg.prune("vibration", 1, &[]).unwrap(), ["v4"]);
        assert_eq!(reg.versions("vibration").unwrap(), ["v1"]);
        assert!(
            fs::read_dir(root.path().join("vibration"))
                .unwrap()
                .all(|e| !e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".pruned")),
            "no hidden leftovers"
        );
    }
}

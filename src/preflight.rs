//! What `run` needs before it starts, checked without starting: `ebgand check-config` reports
//! every problem at once, and `run` refuses to start on any (exit 78, which the systemd unit
//! does not restart on), instead of failing one problem at a time in a restart loop.

use std::path::{Path, PathBuf};

use crate::config::Settings;

/// Every problem `run` would meet at start, one message each: the configured models (folder,
/// manifest, hash, shape and channel names against their streams), the ONNX Runtime library,
/// the state folders (each must be a folder this process can write, or creatable), and the
/// trainer's Python when a model learns from its stream.
pub fn problems(settings: &Settings) -> Vec<String> {
    let mut out = crate::model::check_models(settings);
    if let Err(e) = crate::model::runtime::ort_environment(settings.runtime.library.as_deref()) {
        out.push(format!("runtime.library: {e}"));
    }
    let mut folders = vec![
        ("mqtt.outbox_dir", settings.mqtt.outbox_dir.clone()),
        ("registry.dir", settings.registry.dir.clone()),
        ("learning.dir", settings.learning.dir.clone()),
    ];
    if let Some(j) = &settings.journal {
        folders.push(("journal.dir", j.dir.clone()));
    }
    for (key, dir) in folders {
        if let Err(why) = writable(&dir) {
            out.push(format!("{key}: {}: {why}", dir.display()));
        }
    }
    let learns = settings
        .streams
        .iter()
        .any(|s| settings.models.get(&s.model).is_some_and(Option::is_none));
    let retrains = settings.learning.retrain_seeded
        && settings.learning.retrain_every.is_some()
        && !settings.models.is_empty();
    let why_trainer = if learns {
        "a model with no path learns from its stream"
    } else {
        "[learning] retrain_seeded retrains the configured models"
    };
    if learns || retrains {
        if let Err(why) = executable(&settings.train.python) {
            out.push(format!(
                "train.python: {}: {why} ({why_trainer} and needs the trainer: `make \
                 setup-venv`, or set train.python)",
                settings.train.python.display()
            ));
        }
        let package = settings.train.worker.join("ebgand_trainer");
        if !package.join("__main__.py").is_file() {
            out.push(format!(
                "train.worker: {}: no ebgand_trainer package there ({why_trainer}; set \
                 train.worker to the folder that holds it, `models/trainer` in the source tree)",
                settings.train.worker.display()
            ));
        }
    }
    out
}

/// Whether `dir` can be written: an existing folder takes a temporary file; a missing one
/// needs its nearest existing ancestor to be a folder that does. Nothing is left behind.
fn writable(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    loop {
        // A dangling link is there (the folder cannot be created in its place), not missing.
        if at.symlink_metadata().is_ok() {
            if !at.is_dir() {
                return Err(if at.exists() && at == dir {
                    "not a folder".into()
                } else if at == dir {
                    "a link to nothing".into()
                } else {
                    format!("cannot be created: {} is not a folder", at.display())
                });
            }
            return tempfile::tempfile_in(at)
                .map(drop)
                .map_err(|e| format!("not writable ({}: {e})", at.display()));
        }
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            // Relative to the working folder, which exists: it must take the file too.
            Some(_) => at = Path::new("."),
            None => return Ok(()),
        }
    }
}

/// Whether `program` (a path, or a name looked up in `PATH`) is an executable file.
fn executable(program: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if program.components().count() > 1 {
        vec![program.to_path_buf()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let found = candidates.iter().find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    match found {
        Some(_) => Ok(()),
        None => Err("not found, or not executable".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn folders_are_writable_or_creatable_and_files_are_not_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(dir.path()).is_ok());
        assert!(writable(&dir.path().join("a/b/c")).is_ok());
        assert!(!dir.path().join("a").exists(), "nothing created");
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert_eq!(writable(&file).unwrap_err(), "not a folder");
        assert!(
            writable(&file.join("journal"))
                .unwrap_err()
                .contains("is not a folder")
        );
        // A link to nothing cannot be created as a folder (`run` would fail on it).
        let dangling = dir.path().join("outbox");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        assert_eq!(writable(&dangling).unwrap_err(), "a link to nothing");
        assert!(writable(&dangling.join("sub")).is_err());
    }

    #[test]
    fn programs_are_found_by_path_or_in_path() {
        assert!(executable(Path::new("sh")).is_ok());
        assert!(executable(Path::new("/bin/sh")).is_ok());
        assert!(executable(Path::new("no-such-python-here")).is_err());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("python3");
        std::fs::write(&plain, "").unwrap();
        assert!(executable(&plain).is_err(), "a file that is not executable");
    }
}

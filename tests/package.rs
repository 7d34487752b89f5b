//! The Debian package (`make package`), installed the way an operator installs it, into a
//! throwaway Debian root made from Debian's own packages (`mmdebstrap`): there `check-config`
//! passes on the installed config, `score` on the installed model gives the energies the build
//! tree gives, `systemd-analyze verify` passes on the installed unit; an upgrade from the
//! previous package version keeps the registry's active version, its history, an edited
//! config and an alert pending in the outbox; removing keeps the config and the state, purging
//! leaves nothing but what Debian policy allows (dpkg's own records, the system user). Also:
//! the binary's glibc floor and its size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The newest glibc the packaged binary may need (Ubuntu 20.04, Debian 11).
const GLIBC_FLOOR: (u32, u32) = (2, 31);
const MAX_BINARY_BYTES: u64 = 25 * 1024 * 1024;

fn arch() -> String {
    let o = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// The package `make package` built for this version.
fn package() -> PathBuf {
    let deb = root().join(format!(
        "target/debian/ebgand_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch()
    ));
    assert!(
        deb.exists(),
        "{} not found: run `make package` (make test does)",
        deb.display()
    );
    deb
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A command inside the Debian root.
fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8");
    c
}

/// Every path under `root`, relative, but the kernel's and the package tests' own.
fn files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if ["proc", "sys", "dev", "tmp", "run"].contains(&rel.as_str()) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(rel);
        }
    }
    out
}

/// The highest `GLIBC_x.y` version `binary` needs.
fn glibc_needed(binary: &Path) -> (u32, u32) {
    let o = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .expect("objdump not found: install binutils (make setup)");
    let text = String::from_utf8_lossy(&o.stdout);
    text.split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("no GLIBC_ versions: not a dynamically linked glibc binary")
}

/// `ebgand run` inside the root, as the unit runs it (user `ebgand`, the installed config) but
/// with the broker at a test mosquitto's port: it comes online, publishes the outbox's pending
/// alert `pending`, scores a stream with the installed model, and drains on SIGTERM.
async fn the_installed_daemon_runs(root: &Path, pending: u64) {
    use std::time::Duration;
    // The outbox as the daemon would have left it: the service user's (this test wrote it).
    run(&mut chroot(
        root,
        &["chown", "-R", "ebgand:ebgand", "/var/lib/ebgand/outbox"],
    ));
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, "ebgand/#").await;
    let port = broker.port.to_string();
    let log = std::fs::File::create(root.join("tmp/ebgand.log")).unwrap();
    let mut daemon = chroot(
        root,
        &[
            "setpriv",
            "--reuid=ebgand",
            "--regid=ebgand",
            "--init-groups",
            "/usr/bin/ebgand",
            "run",
        ],
    )
    .env("HOME", "/var/lib/ebgand")
    .env("EBGAND__MQTT__PORT", &port)
    // The edited config names the plant's broker; this one is the test's.
    .env("EBGAND__MQTT__HOST", "127.0.0.1")
    .env("EBGAND__HTTP__LISTEN", "")
    .stdout(std::process::Stdio::null())
    .stderr(log)
    .spawn()
    .unwrap();
    let said = || std::fs::read_to_string(root.join("tmp/ebgand.log")).unwrap_or_default();
    let online = || {
        obs.on("ebgand/status")
            .last()
            .is_some_and(|s| s.json["status"] == "online")
    };
    let mut waited = 0;
    while !online() {
        assert!(waited < 300, "not online in 15 s: {}", said());
        assert!(daemon.try_wait().unwrap().is_none(), "stopped: {}", said());
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let mut tx = Sender::start(broker.port).await;
    let mut m = ebgand::demo::sim::Machine::new(11);
    for _ in 0..20 {
        tx.publish(
            "sensors/m1/vibration",
            serde_json::to_vec(&m.samples(64, false)).unwrap(),
        )
        .await;
    }
    tx.flushed().await;
    eventually(
        Duration::from_secs(20),
        "the kept alert and a state",
        || {
            let alert = obs
                .on("ebgand/alerts/vibration/m1")
                .iter()
                .any(|a| a.json["alert_id"] == pending);
            let state = obs
                .on("ebgand/state/vibration/m1")
                .iter()
                .any(|s| s.json["model"]["version"] == "ebgan-1");
            alert && state
        },
    )
    .await;
    kill(&daemon, "-TERM");
    let status = wait_exit(&mut daemon).await;
    assert!(status.success(), "{status}: {}", said());
    // Its state is the service user's.
    use std::os::unix::fs::MetadataExt;
    let uid = |p: &str| std::fs::metadata(root.join(p)).unwrap().uid();
    assert_eq!(uid("var/lib/ebgand/journal"), uid("var/lib/ebgand"));
}

#[test]
fn the_packaged_binary_runs_on_glibc_2_31_and_is_small() {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(package())
        .arg(dir.path()));
    let binary = dir.path().join("usr/bin/ebgand");
    let needed = glibc_needed(&binary);
    assert!(
        needed <= GLIBC_FLOOR,
        "the binary needs GLIBC_{}.{}, above the floor {}.{}",
        needed.0,
        needed.1,
        GLIBC_FLOOR.0,
        GLIBC_FLOOR.1
    );
    let lib = std::fs::read_dir(dir.path().join("usr/lib/ebgand"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("libonnxruntime.so"))
        .expect("ONNX Runtime in /usr/lib/ebgand");
    assert!(glibc_needed(&lib) <= GLIBC_FLOOR);
    let size = std::fs::metadata(&binary).unwrap().len();
    assert!(size < MAX_BINARY_BYTES, "binary is {size} bytes");
}

#[test]
fn the_package_installs_checks_scores_upgrades_and_purges_in_a_debian_root() {
    let deb = package();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let o = Command::new("mmdebstrap")
        .args([
            "--quiet",
            "--variant=minbase",
            "--include=systemd,adduser,libstdc++6,procps,man-db,tzdata",
            "bookworm",
        ])
        .arg(&root)
        .output()
        .expect("mmdebstrap not found: install it with `sudo apt-get install mmdebstrap` (or `make setup`)");
    assert!(
        o.status.success(),
        "mmdebstrap failed (it needs root and Debian's mirror): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let before = files(&root);

    // The previous version: the same contents, an older version number.
    let unpacked = work.path().join("previous");
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&unpacked));
    let control = unpacked.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    let previous = format!("{}-0", env!("CARGO_PKG_VERSION"));
    std::fs::write(
        &control,
        text.replace(
            &format!("Version: {version}"),
            &format!("Version: {previous}"),
        ),
    )
    .unwrap();
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&unpacked)
        .arg(root.join("tmp/previous.deb")));
    std::fs::copy(&deb, root.join("tmp/current.deb")).unwrap();

    // Install the previous version.
    run(&mut chroot(&root, &["dpkg", "-i", "/tmp/previous.deb"]));
    assert!(
        run(&mut chroot(&root, &["getent", "passwd", "ebgand"]))
            .stdout
            .starts_with(b"ebgand:"),
        "system user"
    );
    // (A link to /lib/systemd/system/ebgand.service inside the root.)
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/ebgand.service")
            .symlink_metadata()
            .is_ok(),
        "enabled on install"
    );
    // check-config on the installed config, found at its installed path.
    let o = run(&mut chroot(&root, &["ebgand", "check-config"]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("configuration OK"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // systemd's own check of the installed unit (man-db in the root: it also runs the unit's
    // `Documentation=man:ebgand(1)`).
    run(&mut chroot(
        &root,
        &[
            "systemd-analyze",
            "verify",
            "/lib/systemd/system/ebgand.service",
        ],
    ));
    // The installed model scores a recording as the build tree does.
    let recording = shared_data().join("cwru/1797_IR_7_DE12.npz");
    std::fs::copy(&recording, root.join("tmp/rec.npz")).unwrap();
    let energies = |o: Output| -> Vec<String> {
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(v.get("energy")?.to_string())
            })
            .collect()
    };
    let installed = energies(run(&mut chroot(
        &root,
        &[
            "ebgand",
            "score",
            "--judge",
            "threshold",
            "--model",
            "/usr/share/ebgand/models/vibration/ebgan-1",
            "--key",
            "DE",
            "/tmp/rec.npz",
        ],
    )));
    let built = energies(ebgand(
        &[
            "score",
            "--judge",
            "threshold",
            "--model",
            "models/vibration/ebgan-1",
            "--key",
            "DE",
            recording.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(installed.len() > 100, "{} windows", installed.len());
    assert_eq!(installed, built, "the installed model scores differently");

    // State an upgrade must keep: a registry with an activated version, an alert pending in
    // the outbox, and an edited config.
    // As the service's user, as the README says: files root made there, the service could not
    // change.
    run(&mut chroot(
        &root,
        &[
            "setpriv",
            "--reuid=ebgand",
            "--regid=ebgand",
            "--init-groups",
            "ebgand",
            "models",
            "import",
            "/usr/share/ebgand/models/vibration/ebgan-1",
            "--activate",
        ],
    ));
    let state = root.join("var/lib/ebgand");
    let history = std::fs::read_to_string(state.join("models/vibration/HISTORY")).unwrap();
    let pending: u64 = {
        let mut outbox = ebgand::durable::outbox::Outbox::open(&state.join("outbox"), 100).unwrap();
        outbox
            .add(
                "ebgand/alerts/vibration/m1",
                serde_json::json!({"stream": "vibration/m1", "state": "raised", "seq": 7}),
            )
            .unwrap()
            .id
    };
    let config = root.join("etc/ebgand/ebgand.toml");
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("host = \"127.0.0.1\"", "host = \"broker.plant.lan\"");
    std::fs::write(&config, &edited).unwrap();

    // Upgrade.
    run(&mut chroot(&root, &["dpkg", "-i", "/tmp/current.deb"]));
    let status = run(&mut chroot(
        &root,
        &["dpkg-query", "-W", "-f=${Version}", "ebgand"],
    ));
    assert_eq!(String::from_utf8_lossy(&status.stdout), version);
    assert_eq!(
        std::fs::read_to_string(state.join("models/vibration/ACTIVE"))
            .unwrap()
            .trim(),
        "ebgan-1"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("models/vibration/HISTORY")).unwrap(),
        history
    );
    let outbox = ebgand::durable::outbox::Outbox::open(&state.join("outbox"), 100).unwrap();
    assert_eq!(
        outbox.pending().iter().map(|p| p.id).collect::<Vec<_>>(),
        [pending],
        "the pending alert survives the upgrade"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // The upgraded daemon runs from the package as the service user, on the installed config,
    // against a real mosquitto: it scores, and delivers the alert the upgrade kept.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(the_installed_daemon_runs(&root, pending));

    // Remove: the program goes, the config and the state stay.
    run(&mut chroot(&root, &["dpkg", "-r", "ebgand"]));
    assert!(!root.join("usr/bin/ebgand").exists());
    assert!(!root.join("usr/lib/ebgand").exists());
    assert!(config.exists(), "a removed package keeps its conffile");
    assert!(state.join("models/vibration/ACTIVE").exists());
    // Installed again: the unit the removal masked is unmasked and enabled (it was left
    // masked, and every start failed until someone unmasked it by hand).
    run(&mut chroot(&root, &["dpkg", "-i", "/tmp/current.deb"]));
    let unit = root.join("etc/systemd/system/ebgand.service");
    assert!(
        unit.symlink_metadata().is_err(),
        "masked after a reinstall: {:?}",
        std::fs::read_link(&unit)
    );
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/ebgand.service")
            .symlink_metadata()
            .is_ok(),
        "enabled after a reinstall"
    );
    // The config names the library by its link, which an upgrade to another ONNX Runtime
    // keeps pointing at the library the package ships.
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("library = \"/usr/lib/ebgand/libonnxruntime.so\""),
        "the edited config kept"
    );
    assert!(root.join("usr/lib/ebgand/libonnxruntime.so").exists());
    run(&mut chroot(&root, &["dpkg", "-r", "ebgand"]));

    // Purge: only what policy allows stays.
    run(&mut chroot(&root, &["dpkg", "-P", "ebgand"]));
    let after = files(&root);
    let allowed = |p: &str| {
        p.starts_with("var/lib/dpkg/")
            || p.starts_with("var/log/")
            || p.starts_with("var/cache/debconf/")
            // man-db's own cache, rendered pages included (systemd-analyze ran `man`).
            || p.starts_with("var/cache/man/")
            || [
                "etc/passwd",
                "etc/passwd-",
                "etc/group",
                "etc/group-",
                "etc/shadow",
                "etc/shadow-",
                "etc/gshadow",
                "etc/gshadow-",
                "etc/subuid",
                "etc/subgid",
            ]
            .contains(&p)
    };
    let left: Vec<&String> = after.difference(&before).filter(|p| !allowed(p)).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    let gone: Vec<&String> = before.difference(&after).collect();
    assert!(
        gone.is_empty(),
        "purge removed files it did not install: {gone:?}"
    );
}

//! The systemd watchdog is fed only while the stages make progress. The real binary runs with
//! systemd's notification protocol pointed at a socket of this test (`NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` = 2 s, as systemd sets them for `WatchdogSec=2`) and with scoring frozen by a
//! fault hook (only in test builds): an idle daemon is fed; once windows arrive, the scorer
//! holds them without progress, the feeding stops (systemd would restart the service), and
//! `/readyz` and `ebgand_stage_stalled` name the scorer; with the broker gone, the stages may be
//! waiting on the network, which reconnecting handles, so the feeding resumes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What the daemon told "systemd", with when.
#[derive(Clone, Default)]
struct Notices(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notices {
    fn listen(socket: UnixDatagram) -> Self {
        let notices = Self::default();
        let store = notices.0.clone();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => store.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
        });
        notices
    }

    /// Watchdog pets after `since`.
    fn pets_after(&self, since: Instant) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, n)| *t > since && n.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    }

    fn said(&self, line: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, n)| n.lines().any(|l| l == line))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_only_while_the_stages_make_progress() {
    let mut broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let notices = Notices::listen(UnixDatagram::bind(&socket_path).unwrap());
    let http = ebgand::demo::free_port().unwrap();
    let listen = format!("127.0.0.1:{http}");
    let _daemon = spawn_daemon_with(
        broker.port,
        "wd",
        dir.path(),
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
            ("EBGAND_FAULTS", "pause_scoring"),
            ("EBGAND__HTTP__LISTEN", &listen),
        ],
    );
    eventually(Duration::from_secs(20), "READY=1", || {
        notices.said("READY=1")
    })
    .await;

    // Idle: every stage waits for input, and the watchdog is fed (every 0.5 s).
    let idle = Instant::now();
    eventually(
        Duration::from_secs(20),
        "an idle daemon fed 3 times",
        || notices.pets_after(idle) >= 3,
    )
    .await;

    // Windows arrive; the scorer takes them and never finishes (the fault).
    let mut tx = Sender::start(broker.port).await;
    for _ in 0..8 {
        tx.publish(
            "sensors/m1/vibration",
            serde_json::to_vec(&vec![0.5f32; 64]).unwrap(),
        )
        .await;
    }
    tx.flushed().await;
    let readyz = move || http_get(http, "/readyz");
    let mut said = String::new();
    eventually(
        Duration::from_secs(15),
        "/readyz naming the stalled scorer",
        || {
            said = readyz();
            said.contains("scorer:vibration stalled")
        },
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    let metrics = http_get(http, "/metrics");
    assert!(
        metrics.contains("ebgand_stage_stalled{stage=\"scorer:vibration\"} 1"),
        "{metrics}"
    );
    // Not fed for a whole watchdog interval: systemd would restart the service.
    let stalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        notices.pets_after(stalled),
        0,
        "the watchdog was fed while the scorer held windows without progress"
    );

    // The broker goes away: waiting is the network's doing now, and the watchdog is fed.
    broker.stop().await;
    let outage = Instant::now();
    eventually(Duration::from_secs(10), "pets during the outage", || {
        notices.pets_after(outage) >= 2
    })
    .await;
}

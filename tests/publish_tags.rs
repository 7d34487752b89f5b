//! The publish connection marks the right alert done at each PUBACK. It matches PUBACKs to
//! alerts through a FIFO of tags kept in the order requests enter rumqttc's channel, which
//! relies on rumqttc (pinned exactly in Cargo.toml) sending one PUBLISH per request, in order.
//!
//! A scripted broker (the STYLE guide's exception: a real broker cannot be told which PUBACKs
//! to withhold) acknowledges every publish except two alerts; the outbox must then hold
//! exactly those two. Before that, a publish is cancelled while it waits on a full request
//! channel (as a SIGTERM cancels a stuck event): its tag must not shift every later alert.
//! Then the broker drops the connection with 100 publishes unacknowledged and more queued,
//! keeping or losing the session: every alert must reach it again, each marked done by its own
//! PUBACK (left to rumqttc, some were never sent again); and what is published while it
//! reconnects goes out after them, never ahead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ebgand::config::Settings;
use ebgand::durable::outbox::{Outbox, SharedOutbox};
use ebgand::mqtt::Publisher;
use ebgand::telemetry::Metrics;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PingResp, PubAck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What the scripted broker saw and does.
#[derive(Default)]
struct Script {
    connected: bool,
    /// PUBACKs are held while false.
    acking: bool,
    /// Alerts (by `alert_id`) never acknowledged.
    withhold: HashSet<u64>,
    /// QoS 1 publishes waiting for their PUBACK, oldest first.
    waiting: Vec<(u16, Option<u64>)>,
    /// Alert ids received.
    alerts: Vec<u64>,
    /// Alert ids received, each with the connection it came on.
    order: Vec<(usize, u64)>,
    publishes: usize,
    /// Connections accepted.
    connections: usize,
    /// Close the connection (what it holds unacknowledged is lost with it).
    cut: bool,
    /// What CONNACK says of the session (a broker that lost it, say, restarted without
    /// persistence, says `false`).
    session_present: bool,
}

/// Accepts clients one after another and answers CONNECT, PINGREQ and QoS 1 PUBLISH as
/// scripted.
async fn scripted_broker(listener: tokio::net::TcpListener, script: Arc<Mutex<Script>>) {
    loop {
        let (socket, _) = listener.accept().await.unwrap();
        serve(socket, &script).await;
    }
}

async fn serve(mut socket: tokio::net::TcpStream, script: &Mutex<Script>) {
    {
        let mut s = script.lock().unwrap();
        s.connections += 1;
        s.waiting.clear();
    }
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        let mut out = BytesMut::new();
        tokio::select! {
            n = socket.read_buf(&mut buf) => {
                if n.unwrap_or(0) == 0 {
                    return;
                }
                while let Ok(packet) = Packet::read(&mut buf, 1 << 20) {
                    let mut s = script.lock().unwrap();
                    match packet {
                        Packet::Connect(_) => {
                            s.connected = true;
                            ConnAck::new(ConnectReturnCode::Success, s.session_present)
                                .write(&mut out)
                                .unwrap();
                        }
                        Packet::PingReq => {
                            PingResp.write(&mut out).unwrap();
                        }
                        Packet::Publish(p) => {
                            s.publishes += 1;
                            let alert = serde_json::from_slice::<serde_json::Value>(&p.payload)
                                .ok()
                                .and_then(|j| j["alert_id"].as_u64());
                            if let Some(id) = alert {
                                s.alerts.push(id);
                                let connection = s.connections;
                                s.order.push((connection, id));
                            }
                            if p.qos == QoS::AtLeastOnce {
                                s.waiting.push((p.pkid, alert));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ = tick.tick() => {}
        }
        {
            let mut s = script.lock().unwrap();
            if s.cut {
                s.cut = false;
                s.connected = false;
                return;
            }
            if s.acking {
                let waiting = std::mem::take(&mut s.waiting);
                for (pkid, alert) in waiting {
                    if !alert.is_some_and(|id| s.withhold.contains(&id)) {
                        PubAck::new(pkid).write(&mut out).unwrap();
                    }
                }
            }
        }
        if !out.is_empty() && socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A publisher connected to a scripted broker on `port`, with an outbox of `capacity` alerts.
struct Connected {
    publisher: Publisher,
    outbox: SharedOutbox,
    abort: CancellationToken,
    run: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// An alert for window `seq`, then a state and an energy message; the alert's id.
async fn alert_state_energy(publisher: &Publisher, seq: u64) -> u64 {
    let id = publisher
        .alert(
            "vibration/m1",
            serde_json::json!({"stream": "vibration/m1", "seq": seq, "state": "raised"}),
        )
        .await
        .unwrap();
    publisher
        .state("vibration/m1", b"{}".to_vec())
        .await
        .unwrap();
    publisher
        .energy("vibration/m1", b"{\"energy\":1}".to_vec())
        .await
        .unwrap();
    id
}

/// The alerts left in the outbox once the acknowledged ones are done and `n` remain.
async fn left_in_outbox(outbox: &SharedOutbox, n: usize) -> BTreeSet<u64> {
    eventually(
        Duration::from_secs(10),
        "the acknowledged alerts done",
        || outbox.lock().len() == n,
    )
    .await;
    outbox.lock().pending().iter().map(|p| p.id).collect()
}

async fn connect(port: u16, script: &Mutex<Script>, capacity: usize) -> Connected {
    connect_with(settings(port, "tags", VIBRATION), script, capacity).await
}

async fn connect_with(s: Settings, script: &Mutex<Script>, capacity: usize) -> Connected {
    assert_eq!(s.mqtt.inflight, 100);
    let dir = tempfile::tempdir().unwrap();
    let outbox = SharedOutbox::new(
        Outbox::open(dir.path(), capacity).unwrap(),
        prometheus_client::metrics::gauge::Gauge::default(),
    );
    let (publisher, events) =
        Publisher::new(&s.mqtt, "node", Arc::new(Metrics::new()), outbox.clone());
    let abort = CancellationToken::new();
    let run = tokio::spawn(events.run(CancellationToken::new(), abort.clone()));
    eventually(Duration::from_secs(10), "connected", || {
        script.lock().unwrap().connected
    })
    .await;
    Connected {
        publisher,
        outbox,
        abort,
        run,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_puback_marks_its_own_alert_done_even_after_a_cancelled_publish() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(Mutex::new(Script {
        withhold: [2, 5].into(),
        ..Script::default()
    }));
    tokio::spawn(scripted_broker(listener, script.clone()));

    // rumqttc keeps 100 QoS 1 publishes in flight (it reuses a packet id only once acknowledged,
    // so the two alerts withheld below stay last); with the broker not acknowledging, it stops
    // taking requests and its channel (256) fills.
    let c = connect(port, &script, 100).await;

    // Untagged QoS 1 publishes until the request channel is full; the one that finds it full
    // is cancelled while it waits (as a SIGTERM cancels a stuck event).
    let mut cancelled = None;
    for i in 0..1000 {
        let sent = tokio::time::timeout(
            Duration::from_millis(200),
            c.publisher.state(&format!("s{i}"), b"{}".to_vec()),
        )
        .await;
        if sent.is_err() {
            cancelled = Some(i);
            break;
        }
    }
    assert!(cancelled.is_some(), "the request channel never filled");

    script.lock().unwrap().acking = true;
    // Alerts 1..6 interleaved with state and energy; the broker withholds the PUBACKs of 2 and 5.
    for seq in 1..=6u64 {
        assert_eq!(alert_state_energy(&c.publisher, seq).await, seq);
    }
    eventually(Duration::from_secs(10), "every alert received", || {
        script.lock().unwrap().alerts.len() == 6
    })
    .await;
    assert_eq!(left_in_outbox(&c.outbox, 2).await, BTreeSet::from([2, 5]));
    c.abort.cancel();
    c.run.await.unwrap();
}

/// A scripted broker keeping or losing the session, a publisher connected to it with the
/// settings `s` makes for its port, and alerts 1..=90 published with nothing acknowledged: 100
/// publishes in flight, the rest waiting in the request channel.
async fn in_flight_window_full(
    session_present: bool,
    s: impl FnOnce(u16) -> Settings,
) -> (Arc<Mutex<Script>>, tokio::task::JoinHandle<()>, Connected) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(Mutex::new(Script {
        session_present,
        ..Script::default()
    }));
    let broker = tokio::spawn(scripted_broker(listener, script.clone()));
    let c = connect_with(s(port), &script, 1000).await;
    for seq in 1..=90u64 {
        alert_state_energy(&c.publisher, seq).await;
    }
    eventually(Duration::from_secs(10), "the in-flight window full", || {
        script.lock().unwrap().publishes >= 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    (script, broker, c)
}

/// A broker that stops acknowledging and then drops the connection, with `mqtt.inflight` (100)
/// publishes unacknowledged and more queued behind them, alerts among them. Whether it kept the
/// session or lost it, each alert reaches it again and each PUBACK marks its own alert done:
/// the one alert it withholds on the new connection is the one left in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_in_flight_across_a_lost_connection_is_sent_again_and_marked_by_its_own_puback()
{
    for session_present in [true, false] {
        // Nothing is acknowledged: 100 publishes go out, the rest wait in the request channel.
        let (script, broker, c) =
            in_flight_window_full(session_present, |port| settings(port, "tags", VIBRATION)).await;
        let alerts = 90u64;
        // The connection drops; the next one is acknowledged, all but alert 77.
        {
            let mut sc = script.lock().unwrap();
            sc.cut = true;
            sc.acking = true;
            sc.withhold = [77].into();
        }
        eventually(Duration::from_secs(20), "every alert received", || {
            let sc = script.lock().unwrap();
            sc.connections >= 2 && (1..=alerts).all(|id| sc.alerts.contains(&id))
        })
        .await;
        assert_eq!(
            left_in_outbox(&c.outbox, 1).await,
            BTreeSet::from([77]),
            "session present: {session_present}"
        );
        c.abort.cancel();
        c.run.await.unwrap();
        broker.abort();
    }
}

/// The connection drops with publishes in flight and more queued; five more alerts are
/// published during the reconnect backoff. On the next connection the broker must receive
/// every alert in the order it was published: what was taken back first, the five after
/// (were they to overtake, a retained state published beside an older alert would be replaced
/// by that older one's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_made_while_reconnecting_go_out_after_those_taken_back() {
    for session_present in [true, false] {
        let (script, broker, c) = in_flight_window_full(session_present, |port| {
            let mut s = settings(port, "tags", VIBRATION);
            // A backoff long enough to publish in, whatever the machine's load.
            s.mqtt.reconnect_min = Duration::from_millis(1500);
            s.mqtt.reconnect_max = Duration::from_millis(1500);
            s
        })
        .await;
        {
            let mut sc = script.lock().unwrap();
            sc.cut = true;
            sc.acking = true;
        }
        eventually(Duration::from_secs(10), "the connection dropped", || {
            !script.lock().unwrap().connected
        })
        .await;
        // The publisher sees the socket close, takes back what it holds, and backs off.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The premise: the five are handed to the publisher while no connection is up (they
        // may wait for room in its queue until one is).
        {
            let sc = script.lock().unwrap();
            assert!(
                sc.connections == 1 && !sc.connected,
                "reconnected before the five were published: {} connections, connected {}",
                sc.connections,
                sc.connected
            );
        }
        for seq in 91..=95u64 {
            alert_state_energy(&c.publisher, seq).await;
        }
        eventually(
            Duration::from_secs(20),
            "every alert received again",
            || {
                let sc = script.lock().unwrap();
                let again: HashSet<u64> =
                    sc.order.iter().filter(|o| o.0 >= 2).map(|o| o.1).collect();
                (1..=95).all(|id| again.contains(&id))
            },
        )
        .await;
        let order = script.lock().unwrap().order.clone();
        let mut seen = HashSet::new();
        let again: Vec<u64> = order
            .iter()
            .filter(|o| o.0 >= 2 && seen.insert(o.1))
            .map(|o| o.1)
            .collect();
        let first_late = again.iter().position(|&id| id > 90).unwrap();
        assert!(
            again[..first_late]
                .iter()
                .zip(&again[1..first_late])
                .all(|(a, b)| a < b)
                && again[first_late..] == [91, 92, 93, 94, 95],
            "session present: {session_present}; alerts on the new connection, in order: {again:?}"
        );
        assert_eq!(left_in_outbox(&c.outbox, 0).await, BTreeSet::new());
        c.abort.cancel();
        c.run.await.unwrap();
        broker.abort();
    }
}

//! A message read just before the ingest connection is lost is never acknowledged on the
//! next one. rumqttc reads up to ten packets at a time and keeps those it has not yielded
//! when a later one fails; yielded on the next connection, their packet ids would be
//! acknowledged there, where the same id may name another message (a broker restarted
//! without its sessions numbers afresh), acked before it was journaled.
//!
//! A scripted broker (the STYLE guide's exception: a real broker cannot be made to put a
//! publish and a failing packet in one read) sends, in one write, a publish and the header of
//! a packet over `mqtt.max_packet_bytes`; the client drops the connection on the second with
//! the first read but not yet yielded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ebgand::demo::sim::Machine;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PKID: u16 = 7;

#[derive(Default)]
struct Script {
    /// Ingest connections so far.
    ingest: u32,
    /// PUBACKs from the ingest connection: (its connection, packet id).
    acks: Vec<(u32, u16)>,
    /// Ingest connections that ended.
    closed: u32,
    /// The publish the first ingest connection gets.
    window: Vec<u8>,
}

async fn serve(mut socket: tokio::net::TcpStream, script: Arc<Mutex<Script>>) {
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut ingest: Option<u32> = None;
    loop {
        let n = socket.read_buf(&mut buf).await.unwrap_or(0);
        if n == 0 {
            if ingest.is_some() {
                script.lock().unwrap().closed += 1;
            }
            return;
        }
        let mut out = BytesMut::new();
        while let Ok(packet) = Packet::read(&mut buf, 1 << 20) {
            let mut s = script.lock().unwrap();
            match packet {
                Packet::Connect(c) => {
                    if !c.client_id.ends_with("-pub") {
                        s.ingest += 1;
                        ingest = Some(s.ingest);
                    }
                    // The broker keeps no session: it numbers packets afresh.
                    ConnAck::new(ConnectReturnCode::Success, false)
                        .write(&mut out)
                        .unwrap();
                }
                Packet::Subscribe(sub) => {
                    let granted =
                        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); sub.filters.len()];
                    SubAck::new(sub.pkid, granted).write(&mut out).unwrap();
                    if ingest == Some(1) {
                        let mut p = Publish::new(
                            "sensors/m1/vibration",
                            QoS::AtLeastOnce,
                            s.window.clone(),
                        );
                        p.pkid = PKID;
                        p.write(&mut out).unwrap();
                        // A PUBLISH of 100 MB, its header alone: over the client's limit.
                        out.extend_from_slice(&[0x32, 0x80, 0xc2, 0xd7, 0x2f, 0, 1, b'x']);
                    }
                }
                Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                    PubAck::new(p.pkid).write(&mut out).unwrap();
                }
                Packet::PubAck(a) => {
                    if let Some(conn) = ingest {
                        s.acks.push((conn, a.pkid));
                    }
                }
                Packet::PingReq => {
                    PingResp.write(&mut out).unwrap();
                }
                _ => {}
            }
        }
        if !out.is_empty() && socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_read_before_a_lost_connection_is_not_acked_on_the_next() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(Mutex::new(Script {
        window: serde_json::to_vec(&Machine::new(1).samples(64, false)).unwrap(),
        ..Script::default()
    }));
    let served = script.clone();
    let broker = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(socket, served.clone()));
        }
    });
    let mut s = settings(port, "lost", VIBRATION);
    s.mqtt.reconnect_min = Duration::from_millis(50);
    s.mqtt.reconnect_max = Duration::from_millis(200);
    let daemon = TestDaemon::start(s).await;
    eventually(Duration::from_secs(20), "the window scored", || {
        daemon.metric("ebgand_windows_scored_total") >= 1
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "a second ingest connection",
        || script.lock().unwrap().ingest >= 2,
    )
    .await;
    daemon.shutdown().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the ingest connections closed",
        || {
            let s = script.lock().unwrap();
            s.closed >= s.ingest
        },
    )
    .await;
    broker.abort();
    let acks = script.lock().unwrap().acks.clone();
    assert!(
        acks.iter().all(|&(conn, _)| conn == 1),
        "acked on a connection that never delivered it: {acks:?}"
    );
}

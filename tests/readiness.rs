//! `/readyz` says ready only once the broker granted a stream filter: a broker whose ACL
//! refuses every stream filter but grants the control topic, subscribed in the same request,
//! leaves the daemon not ready, with the refusals counted.
//!
//! A scripted broker (the STYLE guide's exception: mosquitto 2.0 grants a subscription its ACL
//! denies and withholds the messages, so no real broker here refuses one) answers CONNECT,
//! PINGREQ and QoS 1 PUBLISH, and SUBSCRIBE with a refusal for every filter but the control
//! topics, or with a grant for all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, SubAck, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves every client that connects on its own task; refuses each filter that does not start
/// with `granted_prefix`.
async fn scripted_broker(listener: tokio::net::TcpListener, granted_prefix: &'static str) {
    loop {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::spawn(serve(socket, granted_prefix));
    }
}

async fn serve(mut socket: tokio::net::TcpStream, granted_prefix: &str) {
    let mut buf = BytesMut::with_capacity(1 << 16);
    loop {
        if socket.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        let mut out = BytesMut::new();
        while let Ok(packet) = Packet::read(&mut buf, 1 << 20) {
            match packet {
                Packet::Connect(_) => ConnAck::new(ConnectReturnCode::Success, false)
                    .write(&mut out)
                    .map(drop)
                    .unwrap(),
                Packet::PingReq => PingResp.write(&mut out).map(drop).unwrap(),
                Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                    PubAck::new(p.pkid).write(&mut out).map(drop).unwrap();
                }
                Packet::Subscribe(s) => {
                    let codes = s
                        .filters
                        .iter()
                        .map(|f| {
                            if f.path.starts_with(granted_prefix) {
                                SubscribeReasonCode::Success(QoS::AtLeastOnce)
                            } else {
                                SubscribeReasonCode::Failure
                            }
                        })
                        .collect();
                    SubAck::new(s.pkid, codes)
                        .write(&mut out)
                        .map(drop)
                        .unwrap();
                }
                _ => {}
            }
        }
        if !out.is_empty() && socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn daemon_on(granted_prefix: &'static str, prefix: &str) -> TestDaemon {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(scripted_broker(listener, granted_prefix));
    TestDaemon::spawn(settings(port, prefix, VIBRATION))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_every_stream_filter_is_refused_even_with_control_granted() {
    let daemon = daemon_on("rz/control", "rz").await;
    // The broker's answers have come: the publish connection up, the stream filter refused
    // and counted.
    eventually(Duration::from_secs(20), "the refusal", || {
        daemon.metric("ebgand_mqtt_subscriptions_refused_total") >= 1
            && !daemon
                .metrics
                .not_ready()
                .unwrap_or_default()
                .contains("publish connection down")
    })
    .await;
    assert!(!daemon.metrics.ready());
    let why = daemon.metrics.not_ready().unwrap_or_default();
    assert!(
        why.contains("ingest connection down or not subscribed"),
        "{why}"
    );
    daemon.shutdown().await.unwrap();

    // The same broker granting everything: ready.
    let daemon = daemon_on("", "rz2").await;
    eventually(Duration::from_secs(20), "ready", || daemon.metrics.ready()).await;
    assert_eq!(daemon.metric("ebgand_mqtt_subscriptions_refused_total"), 0);
    daemon.shutdown().await.unwrap();
}

//! Unit tests of the ingest stage.
use super::*;

#[test]
fn partitions_the_broker_makes_are_subscribed_under_their_prefixes_and_taken_off() {
    let mut raw = crate::config::RawConfig::from_toml(crate::config::DOCUMENTED_CONFIG)
        .unwrap_or_else(|e| panic!("{e}"));
    raw.partition.prefixes = vec!["part/0".into(), "part/3".into()];
    let s = raw.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        filters(&s),
        [
            "part/0/sensors/+/vibration",
            "part/3/sensors/+/vibration",
            "ebgand/control/+"
        ]
    );
    let prefixes = ["part/0/".to_owned(), "part/3/".to_owned()];
    let t = "part/3/sensors/m1/vibration";
    assert_eq!(
        &t[partition_prefix_len(&prefixes, t)..],
        "sensors/m1/vibration"
    );
    let t = "part/30/sensors/m1/vibration";
    assert_eq!(partition_prefix_len(&prefixes, t), 0);
}

/// A replayed journal record is not the sensor; it must not clear the stale alert
/// an earlier run raised (the stream may still be silent).
#[tokio::test]
async fn a_replayed_message_does_not_clear_a_stale_alert() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut j, _) = crate::durable::journal::Journal::open(dir.path(), 1 << 20).unwrap();
        j.append(1, "sensors/m1/vibration", 0, 3, b"[1,2,3]")
            .unwrap();
        j.sync().unwrap();
    }
    let raw = crate::config::RawConfig::from_toml(crate::config::DOCUMENTED_CONFIG)
        .unwrap_or_else(|e| panic!("{e}"));
    let s = raw.validate().unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let (_source, acker) = crate::mqtt::Source::new(&s.mqtt, "node", Vec::new(), metrics.clone());
    let (wtx, _wrx) = mpsc::channel(16);
    let queues: HashMap<String, mpsc::Sender<Window>> = [(s.streams[0].model.clone(), wtx)].into();
    let js = crate::config::JournalSettings {
        dir: dir.path().to_path_buf(),
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
        checkpoint: Duration::from_secs(1),
    };
    let log = IngestLog::open(&js, Progress::default(), crate::faults::Faults::default()).unwrap();
    let (ntx, mut nrx) = mpsc::channel(16);
    let mut ingest = Ingest::new(&s, queues, acker, metrics, None)
        .journaled(log)
        .telling(ntx, Progress::default())
        .stale_before(["vibration/m1".to_owned()]);
    ingest.replay().await;
    assert_eq!(ingest.table.len(), 1, "the record was replayed");
    let news = nrx.try_recv();
    assert!(news.is_err(), "replay alone published: {news:?}");
}

//! The alerting stage across a restart: detectors restored, alerts an earlier run stored not
//! handed on twice and set right against the windows judged again, and the streams an earlier
//! run alerted on that this run does not carry on.

use super::*;

#[tokio::test]
async fn an_alert_stored_by_an_earlier_run_is_not_handed_on_twice() {
    let sink = Recording::default();
    let resumed = Resumed {
        detectors: HashMap::new(),
        alerted_through: [("vib/m1".to_owned(), 2)].into(),
        raised: ["vib/m1".to_owned()].into(),
    };
    let (mut a, _) = stage(&sink, (), resumed);
    let s = stream("vib/m1");
    a.batch(batch(&s, 0, &[2.0, 2.0, 0.5, 0.5, 2.0, 2.0]))
        .await
        .unwrap();
    // Window 1 raised again (judged again after a crash): not published. Window 3 clears:
    // past what the earlier run stored, published; so is the raise at window 5.
    assert_eq!(
        sink.alerts(),
        vec![
            Sent::Alert("vib/m1".into(), "cleared", 3),
            Sent::Alert("vib/m1".into(), "raised", 5)
        ]
    );
    assert_eq!(a.out.metrics.alerts_deduplicated.get(), 1);
}

#[tokio::test]
async fn a_restored_detector_carries_on_from_its_saved_state() {
    let sink = Recording::default();
    let resumed = Resumed {
        detectors: [(
            "vib/m1".to_owned(),
            DetectorState {
                state: AlertState::Raised,
                run: 1,
                ..DetectorState::default()
            },
        )]
        .into(),
        ..Resumed::default()
    };
    let (mut a, progress) = stage(&sink, (), resumed);
    a.batch(batch(&stream("vib/m1"), 40, &[0.5])).await.unwrap();
    // One healthy window more makes two: the raised alert clears at once.
    assert_eq!(
        sink.alerts(),
        vec![Sent::Alert("vib/m1".into(), "cleared", 40)]
    );
    assert_eq!(progress.snapshot()["vib/m1"].next_seq, 41);
}

#[tokio::test]
async fn a_checkpoint_taken_mid_batch_resumes_to_each_alert_once() {
    let sink = Recording::default();
    let (mut a, progress) = stage(&sink, (), Resumed::default());
    let s = stream("vib/m1");
    // Raise after 2, clear after 2: window 1 is the first of a run.
    a.batch(batch(&s, 0, &[0.5, 2.0])).await.unwrap();
    let before = progress.snapshot()["vib/m1"].clone();
    assert_eq!(before.next_seq, 2);
    *sink.watch.lock().unwrap() = Some(progress.clone());
    //                          2    3    4    5
    a.batch(batch(&s, 2, &[2.0, 0.5, 0.5, 0.5])).await.unwrap();
    // While the batch was handed on, a checkpoint would have held the state before it, whole:
    // the window number and the detector that goes with it.
    let watched = sink.watched.lock().unwrap().clone();
    assert_eq!(watched.len(), 4);
    assert!(watched.iter().all(|(_, j)| j.as_ref() == Some(&before)));
    // Then the state after its newest window.
    assert_eq!(progress.snapshot()["vib/m1"].next_seq, 6);
    assert_eq!(
        sink.alerts(),
        vec![
            Sent::Alert("vib/m1".into(), "raised", 2),
            Sent::Alert("vib/m1".into(), "cleared", 4)
        ]
    );

    // The process died while window 3 was handed on: the raise at 2 is in the outbox, the
    // clear at 4 never happened. The restart resumes from that checkpoint and judges the batch
    // again: the raise is not published twice, the clear is published once.
    let (_, at) = watched.iter().find(|(seq, _)| *seq == 3).unwrap().clone();
    let resumed = Resumed {
        detectors: [("vib/m1".to_owned(), at.unwrap().detector)].into(),
        alerted_through: [("vib/m1".to_owned(), 2)].into(),
        raised: ["vib/m1".to_owned()].into(),
    };
    let again = Recording::default();
    let (mut b, progress) = stage(&again, (), resumed);
    b.batch(batch(&s, 2, &[2.0, 0.5, 0.5, 0.5])).await.unwrap();
    assert_eq!(
        again.alerts(),
        vec![Sent::Alert("vib/m1".into(), "cleared", 4)]
    );
    assert_eq!(b.out.metrics.alerts_deduplicated.get(), 1);
    assert_eq!(progress.snapshot()["vib/m1"].next_seq, 6);
}

/// Windows judged again after a crash that disagree with the alerts the earlier run stored
/// for them (a season saved earlier, a version activated just before the crash): at the first
/// window past the last stored alert, what subscribers were told is set right. m1 was told
/// raised and is judged healthy again: cleared there. m2 was told cleared and stays raised
/// when judged again: raised there. m3 was told raised and is raised again at that window:
/// nothing to publish.
#[tokio::test]
async fn windows_judged_again_otherwise_set_right_what_subscribers_were_told() {
    let sink = Recording::default();
    let streams = ["vib/m1", "vib/m2", "vib/m3"];
    let resumed = Resumed {
        alerted_through: streams.iter().map(|s| (s.to_string(), 2)).collect(),
        raised: ["vib/m1".to_owned(), "vib/m3".to_owned()].into(),
        ..Resumed::default()
    };
    let (mut a, _) = stage(&sink, (), resumed);
    for (s, energies) in streams.iter().zip([
        [0.5, 0.5, 0.5, 0.5, 0.5],
        [2.0, 2.0, 2.0, 2.0, 2.0],
        [0.5, 0.5, 2.0, 2.0, 2.0],
    ]) {
        a.batch(batch(&stream(s), 0, &energies)).await.unwrap();
    }
    assert_eq!(
        sink.alerts(),
        [
            Sent::Alert("vib/m1".into(), "cleared", 3),
            Sent::Alert("vib/m2".into(), "raised", 3),
        ]
    );
}

/// A stream restored from a checkpoint with its alert raised, and forgotten before it spoke
/// again, gets its clear too.
#[tokio::test]
async fn a_restored_raised_stream_forgotten_before_it_speaks_is_cleared() {
    let sink = Recording::default();
    let raised = DetectorState {
        state: AlertState::Raised,
        ..DetectorState::default()
    };
    let resumed = Resumed {
        detectors: HashMap::from([("vib/m1".to_owned(), raised)]),
        ..Resumed::default()
    };
    let (mut a, _) = stage(&sink, (), resumed);
    a.forget("vib/m1").await.unwrap();
    assert_eq!(
        sink.sent(),
        [
            Sent::Alert("vib/m1".into(), "cleared", u64::MAX),
            Sent::Forgotten("vib/m1".into()),
        ]
    );
}

/// A raise the last run left open for a stream this run does not carry on (forgotten just
/// before a crash; no journal) is cleared as forgotten when ingest says so, and the last run's
/// window numbers no longer silence the stream's new alerts.
#[tokio::test]
async fn a_raise_left_open_by_an_earlier_run_for_a_stream_not_carried_on_is_cleared() {
    let sink = Recording::default();
    let resumed = Resumed {
        alerted_through: [("vib/m1".to_owned(), 9)].into(),
        ..Resumed::default()
    };
    let (a, _) = stage(&sink, (), resumed);
    let (news, heard) = tokio::sync::mpsc::channel(1);
    let a = a.hearing(heard);
    news.send(StreamNews::Orphaned {
        stream: "vib/m1".into(),
        raised: true,
    })
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(a.run(rx));
    // News go before batches: sent after it, the batch is judged after it.
    tx.send(batch(&stream("vib/m1"), 0, &[2.0, 2.0]))
        .await
        .unwrap();
    drop((tx, news));
    run.await.unwrap();
    let sent = sink.sent();
    assert_eq!(
        sent[..2],
        [
            Sent::Alert("vib/m1".into(), "cleared", u64::MAX),
            Sent::Forgotten("vib/m1".into()),
        ]
    );
    assert_eq!(
        sink.alerts()[1..],
        [Sent::Alert("vib/m1".into(), "raised", 1)]
    );
}

/// A stream an earlier run alerted on, its alert cleared since, that this run does not carry
/// on: its window numbers start over, and only its retained state says it was forgotten (no
/// clear). News that came late, after the stream was judged in this run, leave it alone.
#[tokio::test]
async fn an_earlier_runs_window_numbers_do_not_silence_a_stream_not_carried_on() {
    let sink = Recording::default();
    let resumed = Resumed {
        alerted_through: [("vib/m1".to_owned(), 9), ("vib/m2".to_owned(), 9)].into(),
        ..Resumed::default()
    };
    let (mut a, _) = stage(&sink, (), resumed);
    a.batch(batch(&stream("vib/m2"), 0, &[0.5])).await.unwrap();
    a.orphaned("vib/m1", false).await.unwrap();
    a.orphaned("vib/m2", true).await.unwrap();
    a.batch(batch(&stream("vib/m1"), 0, &[2.0, 2.0]))
        .await
        .unwrap();
    a.batch(batch(&stream("vib/m2"), 1, &[2.0, 2.0]))
        .await
        .unwrap();
    assert_eq!(sink.alerts(), [Sent::Alert("vib/m1".into(), "raised", 1)]);
    let sent = sink.sent();
    let forgotten: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s, Sent::Forgotten(_)))
        .collect();
    assert_eq!(forgotten, [&Sent::Forgotten("vib/m1".into())]);
}

/// A raise an earlier run left open, of a stream checkpointed after it: the restored detector
/// carries it, and the clear this run publishes is the only one. Forgotten later, the stream
/// gets no second clear (the outbox's open raise at the start said nothing more).
#[tokio::test]
async fn a_raise_older_than_the_checkpoint_is_cleared_once() {
    let sink = Recording::default();
    let raised = DetectorState {
        state: AlertState::Raised,
        run: 1,
        ..DetectorState::default()
    };
    let resumed = Resumed {
        detectors: [("vib/m1".to_owned(), raised)].into(),
        raised: ["vib/m1".to_owned()].into(),
        ..Resumed::default()
    };
    let (mut a, _) = stage(&sink, (), resumed);
    a.batch(batch(&stream("vib/m1"), 40, &[0.5, 0.5]))
        .await
        .unwrap();
    a.forget("vib/m1").await.unwrap();
    assert_eq!(
        sink.alerts(),
        [Sent::Alert("vib/m1".into(), "cleared", 40)],
        "{:?}",
        sink.sent()
    );
}

/// A forgetting the last run did not finish (a crash came first; the checkpoint says so) is
/// finished before anything is judged: each raise left is cleared, and the earlier life's
/// window numbers go. A new life restored from the checkpoint (m1) keeps its retained state,
/// with no `forgotten` phase over it; a stream with no life in this run (m2) gets it.
#[tokio::test]
async fn a_forgetting_the_last_run_did_not_finish_is_finished_first() {
    let sink = Recording::default();
    let resumed = Resumed {
        detectors: [("vib/m1".to_owned(), DetectorState::default())].into(),
        alerted_through: [("vib/m1".to_owned(), 9)].into(),
        raised: ["vib/m1".to_owned()].into(),
    };
    let (mut a, _) = stage(&sink, (), resumed);
    a.forgotten_before("vib/m1", true).await.unwrap();
    a.forgotten_before("vib/m2", true).await.unwrap();
    assert_eq!(
        sink.sent(),
        [
            Sent::Alert("vib/m1".into(), "cleared", u64::MAX),
            Sent::Alert("vib/m2".into(), "cleared", u64::MAX),
            Sent::Forgotten("vib/m2".into()),
        ]
    );
    a.batch(batch(&stream("vib/m1"), 0, &[2.0, 2.0]))
        .await
        .unwrap();
    assert_eq!(
        sink.alerts().last(),
        Some(&Sent::Alert("vib/m1".into(), "raised", 1))
    );
}

//! Seasons end to end: a real mosquitto, the daemon in-process, real ONNX Runtime and the
//! vibration fixture, fed a taxi-like stream through the broker: half-hourly JSON objects
//! with their time, a daily hump half as high on weekends, five weeks, and a Thursday in the
//! fifth that looks like a Sunday (a holiday).
//!
//! The model learns its calibration over the first week and a half, weekends included, so a
//! day that looks like a Sunday is ordinary to it. With seasons (the default) the stream's
//! week is found after two weeks and the holiday is raised, its alert carrying the season's
//! probability; with `season_acf = 0`, or the stream's own `season = false`, the holiday is not
//! raised.
//!
//! The same hump kept by Berlin's wall clock, its times sent as seconds since the epoch
//! across the autumn's daylight-saving change: with `season_zone = "Europe/Berlin"` nothing
//! is raised; on UTC's clock the days after the change are an hour off, and raised.
//!
//! The same week climbing by its day's swing every four weeks is raised on its holiday only:
//! the climb is not the season.
//!
//! A clean restart in the fifth week keeps the season (saved apart from the checkpoint), and so
//! does a SIGKILL of the real binary: the seasons were saved when the week was chosen.
//!
//! `score --stream NAME` on the same five weeks: a stream with `season = false` is not read
//! against a season, and its holiday is not raised.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod common;

use std::time::Duration;

use common::*;

/// Samples half an hour apart: a day is 48 of them, a week 336.
const STEP_S: u64 = 1_800;
const WEEKS: u64 = 5;
/// The holiday: the Thursday of the fifth week (day 31, counted from a Monday).
const HOLIDAY: u64 = 4 * 7 + 3;
const WINDOW: u64 = 64;
const HOP: u64 = 4;

/// A deterministic noise in (-1, 1) (splitmix64).
fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Epoch seconds of 2014-07-07 00:00 UTC, a Monday.
const JULY: i64 = 1_404_691_200;
/// Epoch seconds of Monday 2014-09-29 00:00 in Berlin; its clocks go back on day 27.
const AUTUMN: i64 = 1_411_941_600;

/// The taxi-like demand of sample `i` (at `_t`): a daily hump, half as high on weekends and on
/// the holiday.
fn demand(i: u64, _t: i64) -> f64 {
    let day = i / 48;
    let hour = (i % 48) as f64 / 2.0;
    let sunday_like = day % 7 >= 5 || day == HOLIDAY;
    let hump = (std::f64::consts::PI * hour / 24.0).sin().powi(2);
    10.0 + 20.0 * hump * if sunday_like { 0.5 } else { 1.0 } + noise(i)
}

/// A daily hump, half as high on weekends, kept by Berlin's wall clock at `t` (no holiday).
fn berlin_demand(i: u64, t: i64) -> f64 {
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin")
        .expect("the time zone database (Debian: apt-get install tzdata)");
    let local = jiff::Timestamp::from_second(t).unwrap().to_zoned(berlin);
    let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
    let weekend = local.weekday().to_monday_zero_offset() >= 5;
    let hump = (std::f64::consts::PI * hour / 24.0).sin().powi(2);
    10.0 + 20.0 * hump * if weekend { 0.5 } else { 1.0 } + noise(i)
}

/// What a run published: the raised alerts, the energy telemetry and the state messages.
struct Run {
    alerts: Vec<serde_json::Value>,
    energy: Vec<serde_json::Value>,
    states: Vec<serde_json::Value>,
}

/// A restart in the middle of a run, once the samples before its sample are judged.
#[derive(Clone, Copy)]
enum Restart {
    /// A clean shutdown, then a new daemon on the same journal.
    Clean(u64),
    /// The real binary killed with SIGKILL, then started again on the same journal.
    Kill(u64),
}

/// The daemon under test: in-process, or the real binary (for a kill).
enum Daemon {
    InProcess(TestDaemon),
    Binary(DaemonProcess),
}

impl Daemon {
    /// Starts the daemon of `settings` (the binary on `config`, with its HTTP on `http`) and
    /// waits until it is subscribed.
    async fn start(
        settings: &ebgand::config::Settings,
        binary: Option<(&std::path::Path, u16)>,
    ) -> Self {
        let Some((config, http)) = binary else {
            return Self::InProcess(TestDaemon::start(settings.clone()).await);
        };
        let listen = format!("127.0.0.1:{http}");
        let p = run_binary(
            config,
            &[("EBGAND__HTTP__LISTEN", &listen)],
            std::process::Stdio::null(),
        );
        eventually(Duration::from_secs(20), "the binary subscribed", || {
            try_http_get(http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        })
        .await;
        Self::Binary(p)
    }

    /// Stops it: a clean shutdown, or, for the binary, `kill` chooses SIGKILL.
    async fn stop(self, kill: bool) {
        match self {
            Self::InProcess(d) => d.shutdown().await.unwrap(),
            Self::Binary(mut p) => {
                common::kill(&p, if kill { "-KILL" } else { "-TERM" });
                wait_exit(&mut p).await;
            }
        }
    }
}

/// The windows of the stream the checkpoint in `journal` has judged.
fn checkpointed(journal: &std::path::Path) -> u64 {
    std::fs::read(journal.join("checkpoint.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c["streams"]["taxi/nyc"]["next_seq"].as_u64())
        .unwrap_or(0)
}

/// Sends five weeks of `series` from `first` (seconds since the epoch) through a daemon with
/// `detect` in its `[detect]` and `own` in the stream's `[[streams]]`, restarting it as
/// `restart` says; returns what it published. A run with a kill is the real binary's.
async fn run(
    prefix: &str,
    (detect, own): (&str, &str),
    first: i64,
    series: fn(u64, i64) -> f64,
    restart: Option<Restart>,
) -> Run {
    let broker = Mosquitto::start().await;
    let obs = Observer::start(broker.port, &format!("{prefix}/#")).await;
    let toml = format!(
        "[detect]\nlearn_windows = 200\nstale_after = 0\n{detect}\n\
         [models.vibration]\npath = \"models/vibration/fixture-1\"\n\
         [[streams]]\nname = \"taxi\"\ntopic = \"rides/+\"\nmodel = \"vibration\"\n\
         format = \"object\"\nfields = [\"v\"]\ntimestamp_field = \"t\"\n\
         window = {WINDOW}\nhop = {HOP}\n{own}\n"
    );
    let settings = settings(broker.port, prefix, &toml);
    let journal = settings.journal.as_ref().unwrap().dir.clone();
    // The binary reads the same settings from a file: the test's config, and its state where
    // `settings` put the in-process daemon's.
    let binary = matches!(restart, Some(Restart::Kill(_))).then(|| {
        let config = journal.with_file_name("ebgand.toml");
        let state = |dir: &std::path::Path| dir.display().to_string();
        std::fs::write(
            &config,
            format!(
                "node = \"season-test\"\n\
                 [mqtt]\nport = {port}\nprefix = \"{prefix}\"\nclient_id = \"ebgand-{prefix}\"\n\
                 publish_energy = true\nenergy_qos = 1\noutbox_dir = \"{outbox}\"\n\
                 [registry]\ndir = \"{registry}\"\n[learning]\ndir = \"{capture}\"\n\
                 [journal]\ndir = \"{journal}\"\n{toml}",
                port = broker.port,
                outbox = state(&settings.mqtt.outbox_dir),
                registry = state(&settings.registry.dir),
                capture = state(&settings.learning.dir),
                journal = state(&journal),
            ),
        )
        .unwrap();
        (config, ebgand::demo::free_port().unwrap())
    });
    let binary = binary.as_ref().map(|(c, h)| (c.as_path(), *h));
    let mut daemon = Daemon::start(&settings, binary).await;
    let mut tx = Sender::start(broker.port).await;
    let samples = WEEKS * 7 * 48;
    let kill = matches!(restart, Some(Restart::Kill(_)));
    for i in 0..samples {
        let windows = i.saturating_sub(WINDOW) / HOP + 1;
        if kill && i == 2 * 336 {
            // A checkpoint in the watch: seasons saved (or found unchanged) then are not saved
            // again for ten minutes unless one outruns its saved copy.
            tx.flushed().await;
            eventually(Duration::from_secs(60), "a checkpoint in the watch", || {
                checkpointed(&journal) >= windows
            })
            .await;
        }
        if let Some(Restart::Clean(at) | Restart::Kill(at)) = restart
            && i == at
        {
            tx.flushed().await;
            eventually(Duration::from_secs(60), "the windows so far judged", || {
                obs.count(&format!("{prefix}/energy/")) >= windows as usize
                    && (!kill || checkpointed(&journal) >= windows)
            })
            .await;
            daemon.stop(kill).await;
            // The seasons are saved apart from the checkpoint, the week chosen in them.
            let seasons =
                std::fs::read_to_string(journal.join("seasons.json")).expect("seasons.json saved");
            assert!(seasons.contains("\"taxi/nyc\""), "{seasons}");
            assert!(seasons.contains("\"period\":336"), "{seasons}");
            let checkpoint = std::fs::read_to_string(journal.join("checkpoint.json")).unwrap();
            assert!(!checkpoint.contains("\"season\""), "{checkpoint}");
            daemon = Daemon::start(&settings, binary).await;
        }
        let t = first + (i * STEP_S) as i64;
        tx.publish(
            "rides/nyc",
            serde_json::json!({"t": t, "v": series(i, t)}).to_string(),
        )
        .await;
    }
    tx.flushed().await;
    let windows = ((samples - WINDOW) / HOP + 1) as usize;
    eventually(Duration::from_secs(60), "every window judged", || {
        obs.count(&format!("{prefix}/energy/")) >= windows
    })
    .await;
    let energy: Vec<_> = obs
        .on(&format!("{prefix}/energy/"))
        .into_iter()
        .map(|m| m.json)
        .collect();
    for e in &energy {
        schema::assert_valid("energy.json", e);
    }
    let alerts: Vec<_> = obs
        .on(&format!("{prefix}/alerts/"))
        .into_iter()
        .map(|m| m.json)
        .filter(|a| a["state"] == "raised")
        .collect();
    for a in &alerts {
        schema::assert_valid("alert.json", a);
    }
    let states: Vec<_> = obs
        .on(&format!("{prefix}/state/"))
        .into_iter()
        .map(|m| m.json)
        .collect();
    for s in &states {
        schema::assert_valid("state.json", s);
    }
    daemon.stop(false).await;
    Run {
        alerts,
        energy,
        states,
    }
}

/// The sample index of a window's last sample, from its `end` time, in a stream from `first`.
fn end_sample(v: &serde_json::Value, first: i64) -> u64 {
    (v["end"].as_i64().unwrap() - first) as u64 / STEP_S
}

/// Whether a window ending at `end` overlaps the holiday.
fn on_holiday(end: u64) -> bool {
    let (first, last) = (HOLIDAY * 48, HOLIDAY * 48 + 47);
    end >= first && end < last + WINDOW
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holiday_is_raised_by_the_season_and_not_without_it() {
    let Run {
        alerts,
        energy,
        states,
    } = run("season-on", ("", ""), JULY, demand, None).await;
    // The state says the stream is watched, then, published when the watch ends, its week.
    let seasons: Vec<_> = states.iter().map(|s| s["season"].as_str()).collect();
    assert_eq!(seasons.first(), Some(&Some("watching")), "{states:?}");
    let chosen = states
        .iter()
        .find(|s| s["season"] == "week")
        .expect("a state with the week");
    assert_eq!(
        chosen["seq"].as_u64(),
        Some((2 * 336 - WINDOW) / HOP),
        "{chosen}"
    );
    // The season is read once two weeks have passed, never before.
    let read: Vec<u64> = energy
        .iter()
        .filter(|e| e.get("season_probability").is_some())
        .map(|e| end_sample(e, JULY))
        .collect();
    assert!(!read.is_empty(), "no window read against its season");
    assert!(read.iter().all(|&end| end >= 2 * 336 - 1), "{read:?}");
    let holiday: Vec<_> = alerts
        .iter()
        .filter(|a| on_holiday(end_sample(&a["window"], JULY)))
        .collect();
    assert_eq!(holiday.len(), 1, "raised: {alerts:?}");
    let q = holiday[0]["season_probability"].as_f64().unwrap();
    assert!(
        q >= 0.9999 && holiday[0]["probability"] == q,
        "{}",
        holiday[0]
    );

    // Seasons off for every stream, or for this one alone (`season = false`).
    for (prefix, off) in [
        ("season-off", ("season_acf = 0", "")),
        ("season-own-off", ("", "season = false")),
    ] {
        let Run {
            alerts,
            energy,
            states,
        } = run(prefix, off, JULY, demand, None).await;
        assert!(energy.iter().all(|e| e.get("season_probability").is_none()));
        assert!(
            states.iter().all(|s| s.get("season").is_none()),
            "{prefix}: {states:?}"
        );
        assert!(
            !alerts
                .iter()
                .any(|a| on_holiday(end_sample(&a["window"], JULY))),
            "{prefix}: the model alone raised the holiday: {alerts:?}"
        );
    }
}

/// The same week climbing by its day's swing every four weeks (traffic that grows).
fn climbing_demand(i: u64, t: i64) -> f64 {
    demand(i, t) + 20.0 * i as f64 / (4.0 * 336.0)
}

/// A week whose level climbs is raised on its holiday only: each sample is read against the
/// season before, so the climb is not taken for the season.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_climbing_week_is_raised_on_its_holiday_only() {
    let Run { alerts, .. } = run("season-climb", ("", ""), JULY, climbing_demand, None).await;
    let days: Vec<u64> = alerts
        .iter()
        .map(|a| end_sample(&a["window"], JULY) / 48)
        .collect();
    assert!(
        !alerts.is_empty()
            && alerts
                .iter()
                .all(|a| on_holiday(end_sample(&a["window"], JULY))),
        "raised on days {days:?} (the holiday is day {HOLIDAY})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_season_follows_its_zones_clock_across_a_daylight_saving_change() {
    let Run { alerts, energy, .. } = run(
        "dst-berlin",
        ("season_zone = \"Europe/Berlin\"", ""),
        AUTUMN,
        berlin_demand,
        None,
    )
    .await;
    let read_after = energy
        .iter()
        .filter(|e| end_sample(e, AUTUMN) >= 28 * 48 && e.get("season_probability").is_some())
        .count();
    assert!(
        read_after > 0,
        "no window read against its season after the change"
    );
    assert!(alerts.is_empty(), "raised on Berlin's clock: {alerts:?}");

    // On UTC's clock the windows are an hour off from the change on: raised.
    let Run { alerts, .. } = run(
        "dst-utc",
        ("season_zone = \"UTC\"", ""),
        AUTUMN,
        berlin_demand,
        None,
    )
    .await;
    let days: Vec<u64> = alerts
        .iter()
        .map(|a| end_sample(&a["window"], AUTUMN) / 48)
        .collect();
    assert!(
        !days.is_empty() && days.iter().all(|&d| d >= 27),
        "on UTC's clock, raised on days {days:?}"
    );
}

/// A clean restart in the fifth week: the season comes back from its file, so the windows
/// after it are read against their season at once and the holiday is raised as without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_season_survives_a_restart() {
    survives("season-restart", Restart::Clean).await;
}

/// The same with the binary killed (SIGKILL): the season was saved when its week was chosen,
/// not ten minutes later (the test's five weeks pass in seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_season_survives_a_kill() {
    survives("season-kill", Restart::Kill).await;
}

async fn survives(prefix: &str, restart: fn(u64) -> Restart) {
    let at = 4 * 336;
    let Run { alerts, energy, .. } = run(prefix, ("", ""), JULY, demand, Some(restart(at))).await;
    let after: Vec<_> = energy
        .iter()
        .filter(|e| end_sample(e, JULY) >= at)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|e| e.get("season_probability").is_some()),
        "a window after the restart not read against its season"
    );
    let holiday: Vec<_> = alerts
        .iter()
        .filter(|a| on_holiday(end_sample(&a["window"], JULY)))
        .collect();
    assert_eq!(holiday.len(), 1, "raised: {alerts:?}");
}

/// `score --stream NAME` judges a recording with the stream's own `season = false`, as the
/// daemon would: the holiday its season raises for a stream without the setting is not
/// raised, and no window is read against a season.
#[test]
fn score_stream_judges_with_the_stream_s_own_season_off() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("taxi.csv");
    let rows: String = (0..WEEKS * 336)
        .map(|i| {
            let t = JULY + (i * STEP_S) as i64;
            format!("{t},{}\n", demand(i, t))
        })
        .collect();
    std::fs::write(&csv, format!("t,v\n{rows}")).unwrap();
    let stream = |name: &str, own: &str| {
        format!(
            "[[streams]]\nname = \"{name}\"\ntopic = \"{name}/+\"\nmodel = \"vibration\"\n\
             format = \"object\"\nfields = [\"v\"]\ntimestamp_field = \"t\"\n\
             window = {WINDOW}\nhop = {HOP}\n{own}\n"
        )
    };
    let config = dir.path().join("ebgand.toml");
    std::fs::write(
        &config,
        format!(
            "[detect]\nlearn_windows = 200\n[models.vibration]\npath = \"\"\n{}{}",
            stream("taxi", ""),
            stream("plant", "season = false")
        ),
    )
    .unwrap();
    // (windows read against a season, holiday raises)
    let judged = |name: &str| {
        let hop = HOP.to_string();
        let o = score_fixture(&config, &["--hop", &hop, "--stream", name], &csv);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines = window_lines(&o);
        let read = lines
            .iter()
            .filter(|l| l.get("season_probability").is_some())
            .count();
        let holiday = lines
            .iter()
            .filter(|l| {
                // `score` prints each time as its column has it: here, seconds as text.
                let end: i64 = l["end"].as_str().unwrap().parse().unwrap();
                l["transition"] == "raised" && on_holiday((end - JULY) as u64 / STEP_S)
            })
            .count();
        (read, holiday)
    };
    let (read, holiday) = judged("taxi");
    assert!(
        read > 0 && holiday == 1,
        "read {read}, holiday raised {holiday}"
    );
    assert_eq!(judged("plant"), (0, 0));
}

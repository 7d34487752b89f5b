//! `ebgand score --report`: the page for a SKAB recording, opened the way a person opens it, in
//! a real browser (Debian's `chromium-headless-shell`). A model is trained (`ebgand train`, the
//! real trainer) on the recording's first 400 rows, the protocol of the SKAB benchmark; the
//! whole recording is scored with its `anomaly` labels. The test checks the page is
//! self-contained, that the browser's DOM holds the plot (a series with a point per window,
//! the threshold, alert, learning and label shading) and one table row per alert the JSON
//! lines raised, naming every channel, and that the browser's screenshot shows the series and
//! the alert shading in their colours.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const RECORDING: &str = "skab/valve1/1.csv";

fn chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium-headless-shell",
        "/usr/bin/chromium",
        "/usr/lib/chromium/chromium-headless-shell",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "no headless Chromium: install it with `sudo apt-get install chromium-headless-shell` \
         (or `make setup`)"
    );
}

/// Runs the browser on `page` with `args` and returns its stdout.
fn browse(page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Occurrences of `needle` in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn the_report_for_a_skab_recording_opens_in_a_browser_with_its_plot() {
    let csv = shared_data().join(RECORDING);
    let dir = tempfile::tempdir().unwrap();
    let model = train_skab(dir.path(), &csv, ":400", &[]);
    let page = dir.path().join("report.html");
    let columns = SKAB_FIELDS.join(",");
    let o = ebgand(
        &[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--delimiter",
            ";",
            "--timestamp-column",
            "datetime",
            "--columns",
            &columns,
            "--hop",
            "1",
            "--labels",
            "anomaly",
            "--report",
            page.to_str().unwrap(),
            csv.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // What the JSON lines say, to hold the page to.
    let lines = json_lines(&o.stdout);
    let (windows, summary) = lines.split_at(lines.len() - 1);
    let raised = windows
        .iter()
        .filter(|l| l["transition"] == "raised")
        .count();
    assert!(raised >= 1, "the recording's fault raises no alert");
    assert_eq!(summary[0]["labels"]["anomalies"], 1);
    schema::assert_valid("score.json", &summary[0]);

    // Self-contained: nothing fetched, nothing run.
    let html = std::fs::read_to_string(&page).unwrap();
    for outside in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(outside), "the page refers out: {outside}");
    }

    // The DOM as the browser built it.
    let dom = browse(&page, &["--dump-dom"]);
    assert!(dom.contains("valve1/1.csv") && dom.contains("pump@v1"));
    assert_eq!(count(&dom, "<svg"), 2, "a probability and an energy plot");
    assert!(dom.contains("alert at 0.9999"));
    let path = dom
        .split("class=\"series\" d=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("no series in the plot");
    // One point per judged window (the learning windows have no probability to draw).
    let judged = windows
        .iter()
        .filter(|l| !l["probability"].is_null())
        .count();
    assert_eq!(count(path, "M") + count(path, "L"), judged);
    assert_eq!(count(&dom, "class=\"threshold\""), 2);
    assert_eq!(count(&dom, "<rect class=\"alert\""), 2 * raised);
    assert_eq!(count(&dom, "<rect class=\"learning\""), 2);
    assert_eq!(
        count(&dom, "<rect class=\"label\""),
        2,
        "one labelled anomaly"
    );
    // One row per alert, each naming every channel with its share, the top ones in bold.
    assert_eq!(count(&dom, "<tr class=\"alert-row\""), raised);
    for name in SKAB_FIELDS {
        assert!(
            count(&dom, &format!("<td class=\"name\">{name}</td>")) == raised,
            "{name} missing from an alert's shares"
        );
    }
    assert!(count(&dom, "<tr class=\"channel top\"") >= raised);

    // What a person sees: the screenshot has the series' blue and the alert shading's red.
    let shot = dir.path().join("report.png");
    browse(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,800",
            "--hide-scrollbars",
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let near = |p: &[u8], c: [u8; 3], tol: i32| {
        (0..3).all(|k| (i32::from(p[k]) - i32::from(c[k])).abs() <= tol)
    };
    let (mut blue, mut shaded) = (0usize, 0usize);
    for p in buf[..info.buffer_size()].chunks_exact(px) {
        // The series: #1f5fbf, antialiased.
        blue += usize::from(near(p, [0x1f, 0x5f, 0xbf], 40));
        // An alert: #e0302a at 22 % over white.
        shaded += usize::from(near(p, [248, 214, 213], 8));
    }
    assert!(blue > 2_000, "series hardly visible: {blue} pixels");
    assert!(
        shaded > 20_000,
        "alert shading hardly visible: {shaded} pixels"
    );
}

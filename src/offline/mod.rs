//! `ebgand score`: scores a recording (CSV, `.npy`, `.npz`) through the daemon's own windowing,
//! scoring and detection code, printing one JSON object per window.

mod retrain;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

use crate::config::RawConfig;
use crate::detect::labels::LabelScore;
use crate::detect::{
    Accept, AlertEvent, Carried, Explanation, Hysteresis, Judge, ModelRef, Names, Scored, Seed,
    StreamInfo, Transition, Verdict, energy_parts,
};
use crate::model::{ModelVersion, Scorer};
use crate::pipeline::WindowSpec;
use crate::recording::InputArgs;

/// Windows scored per inference call.
const OFFLINE_BATCH: usize = 16;

/// Arguments of `ebgand score`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Model version folder (model.onnx + manifest.toml).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Recording: .csv, .npy (samples x channels, or one channel), .npz (with --key) or .wav
    /// (16-bit PCM or 32-bit float).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// How to read it.
    #[command(flatten)]
    pub input: InputArgs,
    /// Hop between windows in samples (default: the `--stream`'s configured hop, else the
    /// model's window, no overlap; for a log-mel audio model, 1 frame).
    #[arg(long)]
    pub hop: Option<usize>,
    /// How windows are judged: `probability` (calibrated on the recording's own first windows,
    /// then adapted to its healthy ones, as the daemon does) or `threshold` (energy against the
    /// model's calibrated threshold). Default: the config's `[detect] judge`.
    #[arg(long, value_name = "RULE", value_parser = ["probability", "threshold"])]
    pub judge: Option<String>,
    /// Absolute energy threshold: judge by energy against it (implies `--judge threshold`).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Judge the recording as the daemon judges this configured stream (a `[[streams]]`
    /// name): its own alert probability or threshold, hysteresis, acceptance, window counts
    /// and `season = false` in place of `[detect]`'s; a CSV export of an object stream's messages is read
    /// by its `fields` and `timestamp_field` (unless --columns / --timestamp-column say
    /// otherwise). The flags still have the last word.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Probability at or over which a window is anomalous (default: the config's detect section).
    #[arg(long)]
    pub alert_probability: Option<f64>,
    /// Consecutive windows above threshold that raise an alert (default: the config's detect section).
    #[arg(long)]
    pub raise_after: Option<u32>,
    /// Consecutive windows below threshold that clear it (default: the config's detect section).
    #[arg(long)]
    pub clear_after: Option<u32>,
    /// Windows an alert may stay raised before its level is accepted as the new normal and
    /// learnt (its clear then says `accepted_after`); 0 keeps it raised (default: the config's
    /// detect section; either this or --accept-after-s replaces both its settings).
    #[arg(long, value_name = "WINDOWS", conflicts_with = "accept_after_s")]
    pub accept_after: Option<u32>,
    /// Seconds of the recording's own time (its --timestamp-column) an alert may stay raised
    /// before its level is accepted as the new normal, whatever its rate; 0 keeps it raised
    /// (default: the config's detect section).
    #[arg(long, value_name = "SECONDS")]
    pub accept_after_s: Option<f64>,
    /// CSV: a column of 0/1 labels (anomalous = 1). Each window takes the label of its newest
    /// row; the last line then reports F1, false and missed alarm rates (alert up against
    /// label, per window), labelled anomalies hit by an alert and how many windows into them,
    /// and alerts raised outside them.
    #[arg(long, value_name = "COLUMN")]
    pub labels: Option<String>,
    /// JSON lines even on a terminal (they are what a pipe or a file gets anyway): one verdict
    /// per window, then the recording's summary. A terminal gets a summary for people: each
    /// alert with the channels that carried it, then the totals. A benchmark that counts every
    /// flagged row as a detection (NAB) should count the windows whose `transition` is
    /// `raised`: windows overlap (hop under the window), so one anomaly lies in many of them,
    /// and a threshold on `probability` counts it once for each.
    #[arg(long)]
    pub json: bool,
    /// Also write one self-contained HTML page (no script, nothing fetched): what was judged
    /// against its threshold over time, the energy, alerts and learning shaded, labelled
    /// anomalies with --labels, and what carried the energy at each alert.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Replay the daemon's continual learning: every N windows, train a new version on the
    /// healthy windows captured so far, as the daemon captures them (all of the first
    /// `[learning] windows`, then one in `capture_every`; `[learning] steps`, the model's own
    /// kind and seed; needs the trainer's venv, as `ebgand train` does), score it in shadow
    /// while its calibration learns `[detect] warm_windows` windows the served version finds
    /// healthy, then serve it.
    /// The summary line lists the runs. With the daemon's weekly schedule, N is a week's
    /// windows (2016 at 5-minute steps).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub retrain_every: Option<u64>,
    /// Replay the daemon's cold start: the rows `A:B` of the same file are what the stream sent
    /// while the model learnt from it (`--rows` then selects what it judges, usually the rows
    /// after them). Their windows, scored by the model, calibrate the stream before its first
    /// judged window as its first windows would have (the first `[detect] learn_windows`
    /// learnt, the later ones read and learnt while healthy), as the daemon calibrates a first
    /// version trained from the stream. With --retrain-every they are captured too, as the
    /// daemon's learner captures them, so retraining trains on them.
    #[arg(long, value_name = "A:B", value_parser = crate::recording::parse_rows)]
    pub seed_rows: Option<(Option<usize>, Option<usize>)>,
}

/// The `[[streams]]` entry named `name` (`--stream`) of `settings`, read from `config`.
fn configured<'a>(
    settings: &'a crate::config::Settings,
    name: &str,
    config: Option<&Path>,
) -> anyhow::Result<&'a crate::config::StreamSettings> {
    settings
        .streams
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = settings.streams.iter().map(|s| s.name.as_str()).collect();
            anyhow::anyhow!(
                "--stream {name}: the config ({}) has no [[streams]] named so; it has: {}",
                config.map_or("none".into(), |p| p.display().to_string()),
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )
        })
}

/// How to read the recording: the flags, and for a configured object stream (`--stream`) a
/// CSV export of its messages read as the daemon reads them, its `fields` as the columns and
/// its `timestamp_field` as the time, where the flags leave them out.
fn stream_input(flags: &InputArgs, own: Option<&crate::config::StreamSettings>) -> InputArgs {
    let mut input = flags.clone();
    if let Some(crate::pipeline::PayloadFormat::Object {
        fields,
        timestamp_field,
    }) = own.map(|s| &s.format)
    {
        if input.columns.is_empty() {
            input.columns.clone_from(fields);
        }
        if input.timestamp_column.is_none() {
            input.timestamp_column.clone_from(timestamp_field);
        }
    }
    input
}

/// One output line: the window's verdict, with its alert event when it caused one.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    verdict: &'a Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<AlertEvent>,
}

/// Runs `ebgand score`: reads the recording and the model, then judges its windows in stream
/// order as the daemon would (seeded by the learning rows, retraining on schedule, when asked),
/// writing a line per window and the recording's summary.
///
/// # Errors
/// Unreadable files, a model that does not load, or channels that do not fit the model.
pub fn score(args: &ScoreArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let config = crate::config::config_path(config);
    let mut raw = RawConfig::load(config, None)?;
    // The command line overrides `[detect]`, and is checked with it.
    let d = &mut raw.detect;
    d.judge = args.judge.clone().unwrap_or_else(|| d.judge.clone());
    d.alert_probability = args.alert_probability.unwrap_or(d.alert_probability);
    d.raise_after = args.raise_after.unwrap_or(d.raise_after);
    d.clear_after = args.clear_after.unwrap_or(d.clear_after);
    if let Some(t) = args.threshold
        && !(t.is_finite() && t > 0.0)
    {
        bail!("--threshold {t} must be a positive energy");
    }
    let settings = raw.validate()?;
    let own = args
        .stream
        .as_deref()
        .map(|name| configured(&settings, name, config))
        .transpose()?;
    let input = &stream_input(&args.input, own);
    let version = ModelVersion::open(&args.model)?;
    let (w, c) = (
        version.manifest.input.window,
        version.manifest.input.channels,
    );
    let (rec, labels, names) = read_for(&version, args, input)?;
    let is_audio = version.manifest.features.is_some();
    let mut retrainer = match args.retrain_every {
        Some(_) if is_audio => {
            bail!("--retrain-every: replaying retraining of audio models is not supported")
        }
        Some(every) => Some(retrain::Retrainer::new(
            every,
            &settings.learning,
            &version,
        )?),
        None => None,
    };
    let mut scorer = Scorer::load(version, &settings.runtime)?;
    let m = &scorer.version().manifest;
    let mut model = ModelRef {
        name: m.name.clone(),
        version: m.version.clone(),
    };
    let mut model_threshold = m.threshold.value;
    let id = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flagged =
        args.judge.is_some() || args.threshold.is_some() || args.alert_probability.is_some();
    let judging = match own {
        Some(s) if !flagged => s.judging,
        _ => raw.detect.judging(args.threshold, None),
    };
    let hysteresis = hysteresis(args, own, &raw.detect, rec.stamps.is_some())?;
    let stream = StreamInfo::new(id, judging, hysteresis, c)
        .named(names)
        .tuned_by(own.map(|s| s.tuning).unwrap_or_default());
    let hop = args.hop.unwrap_or(match own {
        _ if is_audio => 1,
        Some(s) => s.hop.get(),
        None => w,
    });
    if hop == 0 || hop > w {
        bail!("--hop {hop} must be between 1 and the model's window ({w})");
    }
    let windows = rec.windows(WindowSpec {
        window: w,
        hop,
        channels: c,
    });
    let mut judge = Judge::new(settings.calibration.clone());
    if let Some(rows) = args.seed_rows {
        let seed = seed(args, input, rows, &mut scorer, &stream, hop)?;
        if let Some(r) = &mut retrainer {
            // The daemon's capture holds the learning windows too: retraining trains on them.
            r.learnt(seed.windows.iter().map(|w| w.data.as_slice()));
        }
        let cal = settings.calibration.tuned(&stream.tuning);
        judge.seed(&stream.id, seed.calibrated(stream.channels, &cal));
    }
    let mut output = Output::new(args);
    let mut total = 0.0f64;
    let (mut data, mut residual, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    // Batches as small as the daemon's usually are, so the drift the judge sets reaches the
    // windows after it as it would there.
    for chunk in windows.chunks(OFFLINE_BATCH) {
        data.clear();
        for w in chunk {
            // As the daemon's scorer: a drift set under the version before a promotion
            // (`--retrain-every`) is not taken off for the new one.
            stream.drift.apply(&w.data, &mut data, Some(&model.version));
        }
        residual.clear();
        let energies = scorer.score_explained(&data, chunk.len(), Some(&mut residual))?;
        let mut pass = match &mut retrainer {
            Some(r) => Some(r.begin(chunk, &mut data)?),
            None => None,
        };
        for (i, ((win, energy), r)) in chunk
            .iter()
            .zip(energies)
            .zip(residual.chunks_exact(w * c))
            .enumerate()
        {
            total += f64::from(energy);
            energy_parts(r, c, stream.names.group, &mut parts);
            let said = Scored {
                energy,
                parts: &parts,
            };
            let mut verdict = judge.judge(&stream, &model, model_threshold, win, said);
            if let (Some(r), Some(pass)) = (&mut retrainer, &mut pass) {
                r.judged(pass, i, &stream, &verdict, win);
            }
            let carried = Carried::of(r, c, stream.names.group);
            verdict.explanation = Explanation::new(&carried, &stream.names, w)
                .map(|e| e.with_unusual(verdict.unusual));
            // The window's newest row: windows start every `hop` rows.
            let label = match &labels {
                Some(labels) => {
                    let last = usize::try_from(win.seq)? * hop + w - 1;
                    Some(labels.get(last).copied().unwrap_or(false))
                }
                None => None,
            };
            output.window(&verdict, label)?;
        }
        if let (Some(r), Some(pass)) = (&mut retrainer, pass) {
            let next = chunk.last().map_or(0, |w| w.seq + 1);
            // Warm: it serves from the next window on, its calibration handed to the judge.
            if let Some(promoted) = r.end(pass, &mut judge, &settings, next)? {
                (scorer, model, model_threshold) = promoted;
            }
        }
    }
    // The clip's energy: the mean over its windows (the DCASE clip score).
    let mut clip = serde_json::json!({
        "clip": args.file.display().to_string(),
        "windows": windows.len(),
        "clip_energy": if windows.is_empty() { 0.0 } else { total / windows.len() as f64 },
        // The f32's own digits, as on every window's line.
        "threshold": crate::detect::short_f32(&model_threshold, serde_json::value::Serializer)?,
    });
    if let Some(r) = &retrainer {
        clip["retrained"] = serde_json::to_value(&r.runs)?;
    }
    output.finish(args, clip, &model)
}

/// The recording as the model reads it (log-mel frames for an audio model), its labels
/// (`--labels`), and the names its energy is explained by (groups of mel bands for audio, a
/// CSV's columns otherwise); checked against the model's channels.
fn read_for(
    version: &ModelVersion,
    args: &ScoreArgs,
    input: &InputArgs,
) -> anyhow::Result<(crate::recording::Recording, Option<Vec<bool>>, Names)> {
    let m = &version.manifest;
    let c = m.input.channels;
    let mut rec = crate::recording::read(&args.file, input)?;
    let labels = match &args.labels {
        None => None,
        Some(_) if m.features.is_some() => {
            bail!("--labels: audio models window log-mel frames, not rows; label a CSV recording")
        }
        Some(column) => Some(read_labels(&args.file, input, column)?),
    };
    let names = match &m.features {
        Some(features) => {
            rec = rec.logmel(features)?;
            Names::mel_groups(&features.band_edges_hz())
        }
        None => Names::channels(&rec.names, c),
    };
    if let Err(why) = m
        .input
        .check_names(&rec.names, &args.file.display().to_string())
    {
        bail!("{why}: choose and order the columns with --columns");
    }
    if rec.samples.ncols() != c {
        bail!(
            "{} gives {} channel(s) but model {} takes {c} (choose them with --columns)",
            args.file.display(),
            rec.samples.ncols(),
            m.name
        );
    }
    Ok((rec, labels, names))
}

/// Raise and clear counts and acceptance: the flags', else the configured stream's
/// (`--stream`), else `[detect]`'s. `stamped`: whether the recording's rows carry times, which
/// an acceptance in seconds counts.
fn hysteresis(
    args: &ScoreArgs,
    own: Option<&crate::config::StreamSettings>,
    d: &crate::config::RawDetect,
    stamped: bool,
) -> anyhow::Result<Hysteresis> {
    let hysteresis = Hysteresis {
        raise_after: args
            .raise_after
            .or(own.map(|s| s.raise_after))
            .unwrap_or(d.raise_after),
        clear_after: args
            .clear_after
            .or(own.map(|s| s.clear_after))
            .unwrap_or(d.clear_after),
        // Either on the command line replaces the stream's or the config's acceptance.
        accept: match (args.accept_after, args.accept_after_s, own) {
            (None, None, Some(s)) => s.accept,
            (None, None, None) => d.accept(),
            (w, s, _) => crate::config::acceptance(w.unwrap_or(0), s.unwrap_or(0.0), "score: ")
                .map_err(anyhow::Error::msg)?,
        },
    };
    if matches!(hysteresis.accept, Accept::Seconds(_)) && !stamped {
        bail!(
            "accept_after_s counts the recording's own time, and its rows carry none: name its timestamp column with --timestamp-column, or give --accept-after in windows"
        );
    }
    Ok(hysteresis)
}

/// Writes `bytes` to `path` whole or not at all (a page cut short by a crash would read as
/// the full one): beside it under a temporary name, made as any new file is (the umask's
/// mode), then renamed over it. What is not a plain file (`/dev/stdout`, a pipe) is written
/// as it is.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.metadata().is_ok_and(|m| !m.is_file()) {
        return std::fs::write(path, bytes);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    crate::durable::write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        std::fs::remove_file(&tmp).ok();
    })
}

/// Standard output, buffered. With a report to write, a reader that leaves early (`| head`)
/// does not end the scoring: what follows is dropped, and the report is written whole.
struct Stdout {
    inner: std::io::BufWriter<std::io::StdoutLock<'static>>,
    past_a_closed_pipe: bool,
    gone: bool,
}

impl Stdout {
    fn closed(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        match r {
            Err(e) if self.past_a_closed_pipe && e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(())
            }
            r => r,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.gone {
            return Ok(buf.len());
        }
        let r = self.inner.write_all(buf);
        self.closed(r).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.gone {
            return Ok(());
        }
        let r = self.inner.flush();
        self.closed(r)
    }
}

/// Where `score`'s verdicts go: JSON lines to a pipe or a file (or with --json), alerts for
/// people to a terminal; the label scores (--labels) and the HTML report (--report) beside.
struct Output {
    out: Stdout,
    human: bool,
    people: ForPeople,
    labels: LabelScore,
    report: Option<crate::report::Report>,
    node: String,
}

impl Output {
    fn new(args: &ScoreArgs) -> Self {
        let stdout = std::io::stdout();
        Self {
            human: !args.json && std::io::IsTerminal::is_terminal(&stdout),
            out: Stdout {
                inner: std::io::BufWriter::new(stdout.lock()),
                past_a_closed_pipe: args.report.is_some(),
                gone: false,
            },
            people: ForPeople::default(),
            labels: LabelScore::default(),
            report: args
                .report
                .as_ref()
                .map(|_| crate::report::Report::default()),
            node: RawConfig::default().node,
        }
    }

    /// One window's verdict, with its label when the recording has them.
    fn window(&mut self, verdict: &Verdict, label: Option<bool>) -> anyhow::Result<()> {
        if let Some(label) = label {
            self.labels.add(
                label,
                verdict.state,
                verdict.transition == Some(Transition::Raised),
                verdict.learning,
            );
        }
        if let Some(report) = &mut self.report {
            report.add(verdict, label);
        }
        let alert = AlertEvent::from_verdict(verdict, &self.node, std::time::SystemTime::now());
        self.people.add(verdict);
        if self.human {
            if let Some(a) = &alert {
                writeln!(self.out, "{}", people_line(a))?;
            }
        } else {
            serde_json::to_writer(&mut self.out, &Line { verdict, alert })?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The summary (`clip`, with the label scores added), and the report written.
    fn finish(
        mut self,
        args: &ScoreArgs,
        mut clip: serde_json::Value,
        model: &ModelRef,
    ) -> anyhow::Result<()> {
        let (windows, learning) = (self.people.windows, self.people.learning);
        clip["learning"] = learning.into();
        clip["raised"] = self.people.raised.into();
        if learning > 0 && 2 * learning >= windows {
            // Nothing, or little, was judged: say why, and what judges more of it.
            tracing::warn!(
                windows,
                learning,
                "{learning} of {windows} windows were the stream's learning ([detect] learn_windows), never alerted on: give a smaller --hop for more windows, --seed-rows A:B to calibrate on rows before the judged ones, or --judge threshold."
            );
        }
        if let Some(column) = &args.labels {
            clip["labels"] = self.labels.report(column);
        }
        if let (Some(path), Some(report)) = (&args.report, &self.report) {
            let heading = crate::report::Heading {
                file: args.file.display().to_string(),
                model: format!("{}@{}", model.name, model.version),
                labels: args.labels.clone(),
                summary: self.people.summary_lines(&clip),
            };
            write_whole(path, report.render(&heading).as_bytes())
                .map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
            tracing::info!(report = %path.display(), alerts = report.alerts(), "Report written.");
        }
        if self.human {
            writeln!(self.out, "{}", self.people.summary(&clip))?;
        } else {
            serde_json::to_writer(&mut self.out, &clip)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// The windows of `rows` (the stream's learning rows) scored by `scorer`, as the daemon seeds
/// a first version's calibration ([`Seed`]).
fn seed(
    args: &ScoreArgs,
    input: &InputArgs,
    rows: (Option<usize>, Option<usize>),
    scorer: &mut Scorer,
    stream: &StreamInfo,
    hop: usize,
) -> anyhow::Result<Seed> {
    let input = InputArgs {
        rows: Some(rows),
        ..input.clone()
    };
    let mut rec = crate::recording::read(&args.file, &input)?;
    let m = &scorer.version().manifest;
    let (w, c) = (m.input.window, m.input.channels);
    if let Some(features) = &m.features {
        rec = rec.logmel(features)?;
    }
    let windows = rec.windows(WindowSpec {
        window: w,
        hop,
        channels: c,
    });
    let windows = windows.into_iter().map(|w| w.data).collect();
    Ok(crate::train::recent::seed(
        scorer,
        windows,
        stream,
        OFFLINE_BATCH,
    )?)
}

/// The recording's totals: the counts of `score`'s summary line, and what a terminal is told
/// at the end.
#[derive(Default)]
struct ForPeople {
    windows: u64,
    learning: u64,
    raised: u64,
    max_probability: Option<f64>,
}

impl ForPeople {
    fn add(&mut self, v: &Verdict) {
        self.windows += 1;
        self.learning += u64::from(v.learning);
        self.raised += u64::from(v.transition == Some(Transition::Raised));
        if let Some(p) = v.probability {
            self.max_probability = Some(self.max_probability.map_or(p, |m| m.max(p)));
        }
    }

    fn summary(&self, clip: &serde_json::Value) -> String {
        let mut s = self.summary_lines(clip).join("\n");
        s.push_str("\n(JSON lines, one per window: pipe the output or pass --json)");
        s
    }

    /// The summary, a line for the totals and one for the label scores when labels were given.
    fn summary_lines(&self, clip: &serde_json::Value) -> Vec<String> {
        let mut lines = vec![format!(
            "{}: {} windows ({} learning), {} alert(s) raised, highest probability {}, mean energy {:.4} (threshold {:.4})",
            clip["clip"].as_str().unwrap_or_default(),
            self.windows,
            self.learning,
            self.raised,
            self.max_probability
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.5}")),
            clip["clip_energy"].as_f64().unwrap_or_default(),
            clip["threshold"].as_f64().unwrap_or_default(),
        )];
        let l = &clip["labels"];
        if l.is_object() {
            let f = |k: &str| l[k].as_f64().unwrap_or_default();
            lines.push(format!(
                "labels {}: F1 {:.3}, false alarm rate {:.1} %, missed {:.1} %, anomalies hit {} of {}, false alerts {}",
                l["labels"].as_str().unwrap_or_default(),
                f("f1"),
                100.0 * f("far"),
                100.0 * f("mar"),
                l["anomalies_hit"],
                l["anomalies"],
                l["false_alerts"],
            ));
        }
        lines
    }
}

/// One alert, for people: when, how sure, and which channels carried it.
fn people_line(a: &AlertEvent) -> String {
    let mark = |m: &crate::pipeline::Mark| match m {
        crate::pipeline::Mark::Index(i) => i.to_string(),
        crate::pipeline::Mark::Time(t) => t.as_str().map_or_else(|| t.to_string(), str::to_owned),
    };
    let top = a.explanation.as_ref().map_or_else(String::new, |e| {
        let shares: Vec<String> = e
            .top
            .iter()
            .filter_map(|name| {
                let (_, share) = e.channels.iter().find(|(n, _)| n == name)?;
                Some(format!("{name} {:.0} %", 100.0 * share))
            })
            .collect();
        let unusual = e.unusual.as_ref().map_or_else(String::new, |u| {
            format!(
                "; most unusual for itself: {} ({:.5})",
                u.channel, u.probability
            )
        });
        format!("  carried by {}{unusual}", shares.join(", "))
    });
    // A season that said more than the energy: the window is unusual for its time.
    let season = a
        .season_probability
        .filter(|&q| a.probability == Some(q))
        .map_or_else(String::new, |q| format!(" (its season: {q:.5})"));
    // A clear that is an acceptance: the machine did not come back.
    let accepted = a.accepted_after.map_or_else(String::new, |n| {
        format!("  (accepted as the new normal after {n} windows raised)")
    });
    format!(
        "{:<7} window {} ({} .. {})  probability {}{season}  energy {}{top}{accepted}",
        a.state.as_str(),
        a.seq,
        mark(&a.window.start),
        mark(&a.window.end),
        a.probability
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.5}")),
        a.energy,
    )
}

/// The 0/1 column `column` of a CSV recording, read with the same rows and delimiter.
fn read_labels(file: &Path, input: &InputArgs, column: &str) -> anyhow::Result<Vec<bool>> {
    let only = InputArgs {
        columns: vec![column.to_owned()],
        timestamp_column: None,
        ..input.clone()
    };
    let rec = crate::recording::read(file, &only)?;
    // Only a CSV's columns have names: an array or a clip would give its own samples.
    if rec.samples.ncols() != 1 || rec.names != [column] {
        bail!("--labels needs a CSV recording with a {column:?} column");
    }
    Ok(rec.samples.column(0).iter().map(|&v| v > 0.5).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{ModelRef, Transition, WindowRef};
    use crate::pipeline::Mark;

    fn alert(probability: f64, season: Option<f64>) -> AlertEvent {
        AlertEvent {
            stream: "taxi".into(),
            state: Transition::Raised,
            time: "2014-11-27T12:00:00.000Z".into(),
            energy: 1.5,
            probability: Some(probability),
            alert_probability: Some(0.9999),
            season_probability: season,
            threshold: 0.02,
            model: ModelRef {
                name: "m".into(),
                version: "v1".into(),
            },
            window: WindowRef {
                start: Mark::Index(0),
                end: Mark::Index(23),
            },
            seq: 7,
            node: "n".into(),
            explanation: None,
            restless: None,
            accepted_after: None,
        }
    }

    #[test]
    fn an_alert_its_season_carried_says_so() {
        let line = people_line(&alert(0.99999, Some(0.99999)));
        assert!(
            line.contains("probability 0.99999 (its season: 0.99999)"),
            "{line}"
        );
        // A season read but not what carried the window: the line is as before.
        let line = people_line(&alert(0.99999, Some(0.3)));
        assert!(!line.contains("season"), "{line}");
        assert!(!people_line(&alert(0.99999, None)).contains("season"));
    }

    #[test]
    fn a_clear_that_accepted_says_so() {
        let mut a = alert(0.5, None);
        a.state = Transition::Cleared;
        assert!(!people_line(&a).contains("accepted"));
        a.accepted_after = Some(200);
        let line = people_line(&a);
        assert!(
            line.starts_with("cleared")
                && line.ends_with("(accepted as the new normal after 200 windows raised)"),
            "{line}"
        );
    }
}

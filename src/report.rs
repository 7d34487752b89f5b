//! `ebgand score --report FILE.html`: one self-contained page that shows a recording the way the
//! daemon judged it. What was judged (the calibrated probability, or the energy where a stream is
//! judged by an absolute threshold) against its threshold over time, the energy itself, alerts
//! shaded from raise to clear, the windows still learning, labelled anomalies when `--labels` was
//! given, and, for each alert, the share of the energy each channel carried.
//!
//! The page is inline SVG and CSS: no script, no font, no file beside it, so it opens from a
//! mail attachment or a ticket the same as from disk. Long recordings are drawn at most
//! [`MAX_COLUMNS`] points wide, each point the highest value of the windows it stands for, so a
//! one-window spike is never averaged away.

use crate::detect::{Explanation, Transition, Verdict};
use crate::pipeline::Mark;

/// The most points drawn per series; longer recordings are bucketed (max per bucket).
pub const MAX_COLUMNS: usize = 1_500;
/// Plot size in SVG units.
const WIDTH: f64 = 1_000.0;
const HEIGHT: f64 = 240.0;
/// Margins: left for the y labels, bottom for the x labels.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 34.0;
/// Probabilities are drawn as their nines, `-log10(1 - p)`, up to this many.
const MAX_NINES: f64 = 8.0;
/// Height of the labelled-anomaly strip along a plot's top.
const LABEL_STRIP: f64 = 9.0;

/// What the page is about: set once, shown in its heading.
#[derive(Debug, Clone, Default)]
pub struct Heading {
    /// The recording.
    pub file: String,
    /// `name@version` of the model that scored it.
    pub model: String,
    /// The labels column, when `--labels` was given.
    pub labels: Option<String>,
    /// Lines of summary (totals, label scores) shown under the heading.
    pub summary: Vec<String>,
}

/// One window, as much of it as the page draws.
#[derive(Debug, Clone)]
struct Point {
    energy: f64,
    probability: Option<f64>,
    /// Its probability against the same moment of earlier seasons (a stream with a season).
    season: Option<f64>,
    learning: bool,
    raised: bool,
    label: Option<bool>,
    /// Text of its first sample, for the x axis.
    start: String,
}

/// One alert: from its raise to its clear (or the end of the recording).
#[derive(Debug, Clone)]
struct Incident {
    raised: usize,
    cleared: Option<usize>,
    at: String,
    cleared_at: Option<String>,
    probability: Option<f64>,
    energy: f64,
    explanation: Option<Explanation>,
    /// At the raise, the season's probability, when it is what carried the window.
    season: Option<f64>,
}

/// The page, filled window by window in stream order, then rendered once.
#[derive(Debug, Clone, Default)]
pub struct Report {
    points: Vec<Point>,
    incidents: Vec<Incident>,
    /// The probability judged against, when the recording is judged by probability.
    alert_probability: Option<f64>,
    /// The energy threshold (the model's, or the absolute one judged against).
    threshold: f64,
}

impl Report {
    /// Adds a window's verdict; `label` is its labelled state when labels were given.
    pub fn add(&mut self, v: &Verdict, label: Option<bool>) {
        let i = self.points.len();
        self.alert_probability = self.alert_probability.or(v.alert_probability);
        self.threshold = f64::from(v.threshold);
        self.points.push(Point {
            energy: f64::from(v.energy),
            probability: v.probability,
            season: v.season_probability,
            learning: v.learning,
            raised: v.state == crate::detect::AlertState::Raised,
            label,
            start: mark_text(&v.start),
        });
        match v.transition {
            Some(Transition::Raised) => self.incidents.push(Incident {
                raised: i,
                cleared: None,
                at: mark_text(&v.end),
                cleared_at: None,
                probability: v.probability,
                energy: f64::from(v.energy),
                explanation: v.explanation.clone(),
                season: v.season_probability.filter(|&q| v.probability == Some(q)),
            }),
            Some(Transition::Cleared) => {
                if let Some(open) = self.incidents.last_mut().filter(|o| o.cleared.is_none()) {
                    open.cleared = Some(i);
                    open.cleared_at = Some(mark_text(&v.end));
                }
            }
            None => {
                // The peak of an incident, for its row in the table.
                if let Some(open) = self.incidents.last_mut().filter(|o| o.cleared.is_none()) {
                    open.energy = open.energy.max(f64::from(v.energy));
                    if let Some(p) = v.probability {
                        open.probability = Some(open.probability.map_or(p, |q| q.max(p)));
                    }
                }
            }
        }
    }

    /// Alerts raised so far.
    #[must_use]
    pub fn alerts(&self) -> usize {
        self.incidents.len()
    }

    /// The whole page.
    #[must_use]
    pub fn render(&self, heading: &Heading) -> String {
        let mut page = String::with_capacity(64 * 1024);
        let title = format!("ebgand: {}", heading.file);
        page.push_str(&format!("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"generator\" content=\"ebgand {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
             </head>\n<body>\n<h1>{}</h1>\n<p class=\"meta\">model <b>{}</b> &middot; {} windows &middot; {} alert(s)",
            env!("CARGO_PKG_VERSION"),
            esc(&title),
            esc(&heading.file),
            esc(&heading.model),
            self.points.len(),
            self.incidents.len(),
        ));
        if let Some(l) = &heading.labels {
            page.push_str(&format!(" &middot; labels from column <b>{}</b>", esc(l)));
        }
        page.push_str("</p>\n");
        for line in &heading.summary {
            page.push_str(&format!("<p class=\"meta\">{}</p>", esc(line)));
            page.push('\n');
        }
        let seasonal = self.points.iter().any(|x| x.season.is_some());
        page.push_str(&self.legend(heading.labels.is_some(), seasonal));
        match self.alert_probability {
            Some(p) => {
                let nines =
                    |q: Option<f64>| q.map(|q| (-(1.0 - q).max(1e-300).log10()).min(MAX_NINES));
                let judged: Vec<Option<f64>> =
                    self.points.iter().map(|x| nines(x.probability)).collect();
                let season: Vec<Option<f64>> =
                    self.points.iter().map(|x| nines(x.season)).collect();
                let also = if seasonal {
                    "; dotted, against the same moment of earlier seasons (the larger is judged)"
                } else {
                    ""
                };
                page.push_str(&self.panel(
                    "probability",
                    &format!(
                        "Probability of an energy this high under the stream's recent healthy windows (alert at {p}){also}"
                    ),
                    &[("series", &judged), ("season", &season)],
                    nines(Some(p)),
                    Scale::Nines,
                ));
                let energy: Vec<Option<f64>> = self.points.iter().map(|x| Some(x.energy)).collect();
                page.push_str(&self.panel(
                    "energy",
                    &format!(
                        "Energy (reconstruction error); the model's calibrated threshold {}",
                        short(self.threshold)
                    ),
                    &[("series", &energy)],
                    Some(self.threshold),
                    Scale::for_energy(&energy, self.threshold),
                ));
            }
            None => {
                let energy: Vec<Option<f64>> = self.points.iter().map(|x| Some(x.energy)).collect();
                page.push_str(&self.panel(
                    "energy",
                    &format!(
                        "Energy (reconstruction error) against the threshold {}",
                        short(self.threshold)
                    ),
                    &[("series", &energy)],
                    Some(self.threshold),
                    Scale::for_energy(&energy, self.threshold),
                ));
            }
        }
        page.push_str(&self.table());
        page.push_str("</body>\n</html>\n");
        page
    }

    fn legend(&self, labels: bool, seasonal: bool) -> String {
        let mut s = String::from(
            "<p class=\"legend\"><span class=\"key series\"></span> judged value \
             <span class=\"key threshold\"></span> threshold \
             <span class=\"key alert\"></span> alert raised \
             <span class=\"key learning\"></span> learning (not judged)",
        );
        if seasonal {
            s.push_str(" <span class=\"key season\"></span> against its season");
        }
        if labels {
            s.push_str(" <span class=\"key label\"></span> labelled anomaly");
        }
        s.push_str("</p>\n");
        s
    }

    /// One plot: each of `lines` (its CSS class and one value per window; `None` where there
    /// is nothing to draw; the first sets the range) against `threshold`, with the alert,
    /// learning and label shading.
    fn panel(
        &self,
        id: &str,
        caption: &str,
        lines: &[(&str, &[Option<f64>])],
        threshold: Option<f64>,
        scale: Scale,
    ) -> String {
        let values = lines.first().map_or(&[][..], |(_, v)| *v);
        let n = values.len().max(1);
        let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let x = |i: usize| LEFT + w * i as f64 / n as f64;
        let (lo, hi) = scale.range(values, threshold);
        let y = |v: f64| {
            let t = ((scale.map(v) - lo) / (hi - lo)).clamp(0.0, 1.0);
            TOP + h * (1.0 - t)
        };
        let mut s = String::new();
        s.push_str(&format!("<figure id=\"{id}\">\n<figcaption>{}</figcaption>\n\
             <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">\n",
            esc(caption)
        ));
        // Shading first, so the series is drawn over it.
        for (class, flags) in [
            (
                "learning",
                self.points.iter().map(|p| p.learning).collect::<Vec<_>>(),
            ),
            ("alert", self.points.iter().map(|p| p.raised).collect()),
        ] {
            for (a, b) in runs(flags.into_iter()) {
                s.push_str(&format!(
                    "<rect class=\"{class}\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{h}\"><title>{class}: windows {a}..{}</title></rect>\n",
                    x(a),
                    (x(b) - x(a)).max(1.0),
                    b - 1
                ));
            }
        }
        // Labelled anomalies: a strip along the top, so an alert's shading under it still shows.
        for (a, b) in runs(self.points.iter().map(|p| p.label == Some(true))) {
            s.push_str(&format!(
                "<rect class=\"label\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{LABEL_STRIP}\"><title>labelled anomaly: windows {a}..{}</title></rect>\n",
                x(a),
                (x(b) - x(a)).max(1.0),
                b - 1
            ));
        }
        // Axes and ticks.
        s.push_str(&format!(
            "<rect class=\"frame\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{w}\" height=\"{h}\"/>"
        ));
        s.push('\n');
        for (v, text) in scale.ticks(lo, hi) {
            let yy = TOP + h * (1.0 - (v - lo) / (hi - lo));
            s.push_str(&format!(
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + w,
                LEFT - 6.0,
                yy + 4.0,
                esc(&text)
            ));
            s.push('\n');
        }
        for k in 0..=4 {
            let i = (n - 1) * k / 4;
            let text = self.points.get(i).map_or("", |p| p.start.as_str());
            let anchor = match k {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            s.push_str(&format!("<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>\
                 <text class=\"tick dim\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">window {i}</text>",
                x(i),
                TOP + h + 14.0,
                esc(text),
                x(i),
                TOP + h + 27.0,
            ));
            s.push('\n');
        }
        if let Some(t) = threshold {
            let yy = y(t);
            s.push_str(&format!("<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"><title>threshold {}</title></line>",
                LEFT + w,
                short(t)
            ));
            s.push('\n');
        }
        // Each line, bucketed to at most MAX_COLUMNS points (highest per bucket), broken where
        // there is no value (learning windows have no probability); the first drawn last, on
        // top.
        let bucket = n.div_ceil(MAX_COLUMNS);
        for (class, values) in lines.iter().rev() {
            let mut d = String::new();
            let mut pen_down = false;
            for (b, chunk) in values.chunks(bucket).enumerate() {
                match chunk.iter().flatten().copied().reduce(f64::max) {
                    Some(v) => {
                        let cmd = if pen_down { 'L' } else { 'M' };
                        d.push_str(&format!("{cmd}{:.1} {:.1} ", x(b * bucket), y(v)));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            if !d.is_empty() {
                s.push_str(&format!(
                    "<path class=\"{class}\" d=\"{}\"/>\n",
                    d.trim_end()
                ));
            }
        }
        s.push_str("</svg>\n</figure>\n");
        s
    }

    /// The alerts, one row each, with the share of the energy each channel carried at the raise.
    fn table(&self) -> String {
        let mut s = String::from("<h2>Alerts</h2>\n");
        if self.incidents.is_empty() {
            s.push_str("<p class=\"meta\">No alert was raised.</p>\n");
            return s;
        }
        s.push_str(
            "<table class=\"alerts\">\n<tr><th>#</th><th>raised</th><th>cleared</th><th>windows</th>\
             <th>peak probability</th><th>peak energy</th><th>what carried the energy at the raise</th></tr>\n",
        );
        let last = self.points.len();
        for (k, inc) in self.incidents.iter().enumerate() {
            let end = inc.cleared.unwrap_or(last);
            s.push_str(&format!("<tr class=\"alert-row\"><td>{}</td><td>{}<br><span class=\"dim\">window {}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>",
                k + 1,
                esc(&inc.at),
                inc.raised,
                inc.cleared_at.as_deref().map_or_else(
                    || "still raised at the end".to_owned(),
                    |c| format!("{}<br><span class=\"dim\">window {end}</span>", esc(c))
                ),
                end - inc.raised,
                inc.probability
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.6}")),
                short(inc.energy),
            ));
            if let Some(q) = inc.season {
                s.push_str(&format!(
                    "<b>unusual for its time</b> <span class=\"dim\">(against the same moment of \
                     earlier seasons: probability {q:.6})</span><br>"
                ));
            }
            match &inc.explanation {
                Some(e) => s.push_str(&bars(e)),
                None => s.push_str("<span class=\"dim\">no explanation</span>"),
            }
            s.push_str("</td></tr>\n");
        }
        s.push_str("</table>\n");
        s
    }
}

/// The channel shares as horizontal bars, largest contributors marked.
fn bars(e: &Explanation) -> String {
    let mut s = String::from("<table class=\"shares\">");
    for (name, share) in &e.channels {
        let top = if e.top.contains(name) { " top" } else { "" };
        s.push_str(&format!("<tr class=\"channel{top}\"><td class=\"name\">{}</td><td class=\"bar\"><div style=\"width:{:.1}%\"></div></td><td class=\"pct\">{:.1} %</td></tr>",
            esc(name),
            100.0 * share,
            100.0 * share
        ));
    }
    s.push_str(&format!(
        "</table><span class=\"dim\">rows {}..{} of the window carried {:.0} %</span>",
        e.rows[0],
        e.rows[1],
        100.0 * e.rows_share
    ));
    if let Some(u) = &e.unusual {
        s.push_str(&format!(
            "<br><span class=\"dim\">most unusual for itself: <b>{}</b> (probability {:.5})</span>",
            esc(&u.channel),
            u.probability
        ));
    }
    s
}

/// How a panel's values map to its height.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    /// log10, for energies that span decades.
    Log,
    /// Already in nines (`-log10(1 - p)`); ticks read as probabilities.
    Nines,
}

impl Scale {
    /// Log when the energy spans more than two decades above the threshold or below it.
    fn for_energy(values: &[Option<f64>], threshold: f64) -> Self {
        // An infinite energy (a reading too large for f32) is drawn at the top, not scaled to.
        let finite = || values.iter().flatten().copied().filter(|v| v.is_finite());
        let max = finite().fold(threshold, f64::max);
        let min = finite()
            .filter(|v| *v > 0.0)
            .fold(threshold.max(f64::MIN_POSITIVE), f64::min);
        if max / min > 100.0 {
            Self::Log
        } else {
            Self::Linear
        }
    }

    fn map(self, v: f64) -> f64 {
        match self {
            Self::Log => v.max(1e-12).log10(),
            Self::Linear | Self::Nines => v,
        }
    }

    /// The mapped range drawn: every value and the threshold, with a little air above.
    fn range(self, values: &[Option<f64>], threshold: Option<f64>) -> (f64, f64) {
        let mapped = values
            .iter()
            .flatten()
            .chain(threshold.iter())
            .map(|v| self.map(*v))
            .filter(|v| v.is_finite());
        let (lo, hi) = mapped.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = match self {
            _ if !lo.is_finite() => (0.0, 1.0),
            Self::Linear => (lo.min(0.0), hi),
            Self::Log => (lo.floor(), hi.ceil()),
            Self::Nines => (0.0, hi.ceil().max(1.0)),
        };
        if hi - lo < 1e-12 {
            (lo, lo + 1.0)
        } else {
            (lo, hi + (hi - lo) * 0.04)
        }
    }

    /// Tick positions (mapped) and their text.
    fn ticks(self, lo: f64, hi: f64) -> Vec<(f64, String)> {
        match self {
            Self::Nines => (0..)
                .map(f64::from)
                .take_while(|k| *k <= hi)
                .filter(|k| *k >= lo)
                .map(|k| (k, nines_text(k)))
                .collect(),
            Self::Log => {
                let mut t = Vec::new();
                let mut k = lo.ceil();
                while k <= hi {
                    t.push((k, short(10f64.powf(k))));
                    k += 1.0;
                }
                t
            }
            Self::Linear => {
                let step = nice_step((hi - lo) / 4.0);
                let mut t = Vec::new();
                let mut k = (lo / step).ceil() * step;
                while k <= hi {
                    t.push((k, short(k)));
                    k += step;
                }
                t
            }
        }
    }
}

/// The probability with `k` nines: `0.9`, `0.99`, ... and `1-1e-7` past six.
fn nines_text(k: f64) -> String {
    match k as usize {
        0 => "0".to_owned(),
        n @ 1..=6 => format!("0.{}", "9".repeat(n)),
        n => format!("1-1e-{n}"),
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Runs of `true` as half-open index ranges.
fn runs(flags: impl Iterator<Item = bool>) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut n = 0;
    for (i, f) in flags.enumerate() {
        n = i + 1;
        match (f, start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                out.push((a, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(a) = start {
        out.push((a, n));
    }
    out
}

/// A number in at most four significant digits, without exponent noise for ordinary values.
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 8) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    } else {
        format!("{v:.3e}")
    }
}

fn mark_text(m: &Mark) -> String {
    match m {
        Mark::Index(i) => format!("sample {i}"),
        Mark::Time(t) => t.as_str().map_or_else(|| t.to_string(), str::to_owned),
    }
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1040px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{margin:2px 0;color:#444}.dim{color:#888;font-size:12px}
figure{margin:12px 0}figcaption{font-weight:600;margin-bottom:4px}
svg{display:block;background:#fff}
.frame{fill:none;stroke:#999}.grid{stroke:#eee}
.tick{font-size:11px;fill:#555}.tick.dim{fill:#999}
.series{fill:none;stroke:#1f5fbf;stroke-width:1.2}
.threshold{stroke:#d07000;stroke-width:1.5;stroke-dasharray:6 4}
.season{fill:none;stroke:#2a8a4a;stroke-width:1.2;stroke-dasharray:2 2}
rect.alert{fill:#e0302a;fill-opacity:.22}
rect.learning{fill:#888;fill-opacity:.15}
rect.label{fill:#7b3fbf;fill-opacity:.85}
.legend .key{display:inline-block;width:18px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
.key.series{border-top:2px solid #1f5fbf;height:0}.key.season{border-top:2px dotted #2a8a4a;height:0}.key.threshold{border-top:2px dashed #d07000;height:0}
.key.alert{background:rgba(224,48,42,.3)}.key.learning{background:rgba(136,136,136,.25)}
.key.label{background:#7b3fbf;height:5px}
table.alerts{border-collapse:collapse;width:100%}
table.alerts th,table.alerts td{border-bottom:1px solid #ddd;padding:6px;text-align:left;vertical-align:top}
table.shares{border-collapse:collapse}table.shares td{padding:1px 4px;border:0}
td.bar{width:220px}td.bar div{background:#1f5fbf;height:10px}
tr.top td.name{font-weight:700}td.pct{text-align:right;color:#444;white-space:nowrap}td.name{white-space:nowrap}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_half_open() {
        let f = [false, true, true, false, true];
        assert_eq!(runs(f.into_iter()), vec![(1, 3), (4, 5)]);
        assert!(runs([false; 3].into_iter()).is_empty());
    }

    #[test]
    fn short_numbers_read_well() {
        assert_eq!(short(0.999), "0.999");
        assert_eq!(short(1.738_482), "1.738");
        assert_eq!(short(1304.19), "1304");
        assert_eq!(short(2.5e-6), "2.500e-6");
        assert_eq!(nice_step(0.23), 0.5);
        assert_eq!(nice_step(3.0), 5.0);
    }

    #[test]
    fn an_alert_its_season_carried_says_so() {
        use crate::detect::{AlertState, ModelRef};
        use crate::pipeline::Mark;
        let verdict = |seq, p: f64, season: Option<f64>, transition| Verdict {
            stream: "taxi".into(),
            seq,
            start: Mark::Index(seq),
            end: Mark::Index(seq + 23),
            energy: 1.0,
            probability: Some(p),
            alert_probability: Some(0.9999),
            season_probability: season,
            learning: false,
            threshold: 0.02,
            anomalous: p >= 0.9999,
            state: if transition == Some(Transition::Cleared) {
                AlertState::Normal
            } else {
                AlertState::Raised
            },
            transition,
            model: ModelRef {
                name: "m".into(),
                version: "v1".into(),
            },
            explanation: None,
            unusual: None,
            restless: None,
            accepted_after: None,
            first: false,
            season: None,
            season_chosen: false,
            alerted_before: false,
        };
        let mut r = Report::default();
        r.add(
            &verdict(0, 0.99999, Some(0.99999), Some(Transition::Raised)),
            None,
        );
        r.add(&verdict(1, 0.5, Some(0.5), Some(Transition::Cleared)), None);
        // A season read, but the energy carried this one.
        r.add(
            &verdict(2, 0.99999, Some(0.2), Some(Transition::Raised)),
            None,
        );
        let table = r.table();
        assert_eq!(table.matches("unusual for its time").count(), 1, "{table}");
        assert!(table.contains("probability 0.999990"), "{table}");

        // The plot draws the season's probability too, dotted, under the judged one.
        let heading = Heading {
            file: "taxi.csv".into(),
            model: "m@v1".into(),
            labels: None,
            summary: vec![],
        };
        let page = r.render(&heading);
        let at = |needle: &str| {
            page.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {page}"))
        };
        assert!(at("<path class=\"season\" d=\"M") < at("<path class=\"series\" d=\"M"));
        assert!(page.contains("<span class=\"key season\"></span> against its season"));
        let mut plain = Report::default();
        plain.add(&verdict(0, 0.5, None, None), None);
        let page = plain.render(&heading);
        assert!(page.contains("<path class=\"series\""), "{page}");
        assert!(!page.contains("class=\"season\""), "{page}");
        assert!(!page.contains("key season"), "{page}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn nines_ticks_read_as_probabilities() {
        let t = Scale::Nines.ticks(0.0, 3.0);
        let text: Vec<&str> = t.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(text, ["0", "0.9", "0.99", "0.999"]);
        assert_eq!(nines_text(7.0), "1-1e-7");
    }

    /// An infinite energy (a reading too large for f32) or a probability of exactly 1 is
    /// drawn at the top of a finite scale: before, the ticks counted up to infinity.
    #[test]
    fn infinite_values_leave_the_scale_finite() {
        let energies = [Some(0.5), Some(f64::INFINITY), Some(2.0)];
        let scale = Scale::for_energy(&energies, 1.0);
        assert_eq!(scale, Scale::Linear);
        let (lo, hi) = scale.range(&energies, Some(1.0));
        assert!(lo.is_finite() && hi.is_finite() && hi >= 2.0, "{lo} {hi}");
        assert!(scale.ticks(lo, hi).len() < 10);
        let nines = [Some(2.0), Some(f64::INFINITY)];
        let (lo, hi) = Scale::Nines.range(&nines, None);
        assert!(
            hi.is_finite() && Scale::Nines.ticks(lo, hi).len() < 10,
            "{lo} {hi}"
        );
    }
}

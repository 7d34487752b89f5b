//! [`RawConfig::validate`]: every value checked, every problem reported at once, into typed
//! [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::detect::{
    acceptance, check_alert_probability, check_own_season, check_window_counts,
    validate_calibration,
};
use super::*;

/// The longest duration a setting takes, in seconds: a hundred years.
pub const MAX_DURATION_S: u64 = 100 * 365 * 24 * 3600;

impl RawConfig {
    /// Checks every value and returns typed settings, or every problem found.
    ///
    /// Each section is checked and built by its own method (below; `[mqtt]`'s in `mqtt.rs`), in
    /// file order; each pushes its problems onto one list, so a config with several is refused
    /// with all of them.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing each bad value with its key.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut errs: Vec<String> = Vec::new();
        let node = if self.node.trim().is_empty() {
            default_node()
        } else {
            self.node.clone()
        };
        let mqtt = self.mqtt_settings(&node, &mut errs);
        let journal = self.journal_settings(&mut errs);
        let runtime = self.runtime_settings(&mut errs);
        let models = self
            .models
            .iter()
            .map(|(name, model)| {
                let path = model.path.trim();
                (
                    name.clone(),
                    (!path.is_empty()).then(|| PathBuf::from(path)),
                )
            })
            .collect();
        let scoring = self.scoring_settings(&mut errs);
        if self.detect.raise_after == 0 || self.detect.clear_after == 0 {
            errs.push("detect.raise_after / detect.clear_after: must be at least 1".into());
        }
        // Built once: `season_zone = "local"` reads the system's zone (and warns when it
        // cannot), and the streams' own window counts are checked against it.
        let calibration = self.detect.calibration();
        validate_calibration(&self.detect, &calibration, &mut errs);
        let streams = self.stream_settings(&calibration, &models, &mut errs);
        let http_listen = self.http_listen(&mut errs);
        let log_format = match self.log.format.as_str() {
            "auto" => LogFormat::Auto,
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                errs.push(format!("log.format: {other:?} must be auto, plain or json"));
                LogFormat::Auto
            }
        };
        let train = self.train_settings(&mut errs);
        let registry = self.registry_settings(&mut errs);
        let learning = self.learning_settings(&mut errs);
        if self.control.max_per_minute == 0 {
            errs.push("control.max_per_minute: must be at least 1 (disable control with control.enabled = false)".into());
        }
        self.check_partition(&mut errs);
        self.check_durations(&mut errs);
        if self.limits.max_streams == 0 {
            errs.push("limits.max_streams: must be at least 1".into());
        }

        match (errs.is_empty(), scoring) {
            (true, Some(scoring)) => Ok(Settings {
                node,
                mqtt,
                runtime,
                models,
                scoring,
                streams,
                calibration,
                max_streams: self.limits.max_streams,
                stream_idle: (self.limits.stream_idle_s > 0)
                    .then(|| Duration::from_secs(self.limits.stream_idle_s)),
                stale: (self.detect.stale_after > 0.0).then(|| Staleness {
                    multiple: self.detect.stale_after,
                    floor: Duration::from_secs_f64(self.detect.stale_min_s.max(0.0)),
                }),
                partition: (self.partition.count > 1)
                    .then_some((self.partition.index, self.partition.count)),
                partition_prefixes: self.partition.prefixes.clone(),
                http_listen,
                log_format,
                shutdown_grace: Duration::from_millis(self.shutdown.grace_ms),
                train,
                registry,
                control: self.control.enabled,
                control_per_minute: self.control.max_per_minute,
                journal,
                faults: crate::faults::Faults::default(),
                learning,
            }),
            _ => Err(ConfigError::Invalid(errs)),
        }
    }

    /// `[journal]`: `None` when it is off.
    fn journal_settings(&self, errs: &mut Vec<String>) -> Option<JournalSettings> {
        let j = &self.journal;
        if j.enabled
            && (j.dir.is_empty()
                || j.segment_mb == 0
                || j.max_mb < 2 * j.segment_mb
                || !(10..=60_000).contains(&j.checkpoint_ms))
        {
            errs.push(format!(
                "journal: need a dir, segment_mb >= 1, max_mb >= 2 x segment_mb and \
                 checkpoint_ms in 10-60000 (got dir {:?}, segment_mb {}, max_mb {}, checkpoint_ms {})",
                j.dir, j.segment_mb, j.max_mb, j.checkpoint_ms
            ));
        }
        j.enabled.then(|| JournalSettings {
            dir: PathBuf::from(&j.dir),
            segment_bytes: j.segment_mb << 20,
            max_bytes: j.max_mb << 20,
            checkpoint: Duration::from_millis(j.checkpoint_ms),
        })
    }

    /// `[runtime]`: the execution providers in order of preference, the CPU always last.
    fn runtime_settings(&self, errs: &mut Vec<String>) -> RuntimeSettings {
        let r = &self.runtime;
        let mut providers = Vec::new();
        for p in &r.providers {
            match p.as_str() {
                "tensorrt" => providers.push(Provider::TensorRt),
                "cuda" => providers.push(Provider::Cuda),
                "cpu" => providers.push(Provider::Cpu),
                other => errs.push(format!(
                    "runtime.providers: unknown provider {other:?} (known: tensorrt, cuda, cpu)"
                )),
            }
        }
        if !providers.contains(&Provider::Cpu) {
            providers.push(Provider::Cpu);
        }
        if r.intra_threads == 0 {
            errs.push("runtime.intra_threads: must be at least 1".into());
        }
        RuntimeSettings {
            library: (!r.library.is_empty()).then(|| PathBuf::from(&r.library)),
            providers,
            intra_threads: r.intra_threads,
            device_id: r.device_id,
            tensorrt_engine_cache: (!r.tensorrt_engine_cache.is_empty())
                .then(|| PathBuf::from(&r.tensorrt_engine_cache)),
            tensorrt_fp16: r.tensorrt_fp16,
            warm_batch: self.scoring.max_batch.max(1),
        }
    }

    /// `[scoring]`: `None` when a bound is zero (reported).
    fn scoring_settings(&self, errs: &mut Vec<String>) -> Option<ScoringSettings> {
        let s = &self.scoring;
        let max_batch = NonZeroUsize::new(s.max_batch);
        if max_batch.is_none() {
            errs.push("scoring.max_batch: must be at least 1".into());
        }
        let queue_windows = NonZeroUsize::new(s.queue_windows);
        if queue_windows.is_none() {
            errs.push("scoring.queue_windows: must be at least 1".into());
        }
        Some(ScoringSettings {
            max_batch: max_batch?,
            max_wait: Duration::from_micros(s.max_wait_us),
            queue_windows: queue_windows?,
        })
    }

    /// Every `[[streams]]` entry that checks out (the others are reported), with unique names
    /// and topics that do not take in ebgand's own.
    fn stream_settings(
        &self,
        calibration: &crate::detect::Calibration,
        models: &BTreeMap<String, Option<PathBuf>>,
        errs: &mut Vec<String>,
    ) -> Vec<StreamSettings> {
        let mut streams = Vec::new();
        let mut names = std::collections::HashSet::new();
        // ebgand's own topics: a stream filter overlapping one would feed its output back as
        // input (stream ids have any number of levels: `+/alerts/+/+` matches the alerts of
        // `vibration/m1`).
        let prefix = &self.mqtt.prefix;
        let own: Vec<TopicFilter> = ["events", "alerts/#", "state/#", "energy/#", "control/#"]
            .iter()
            .map(|t| format!("{prefix}/{t}"))
            .chain([super::mqtt::status_topic(&self.mqtt)])
            .chain(
                self.homeassistant
                    .enabled
                    .then(|| format!("{}/#", self.homeassistant.discovery_prefix)),
            )
            .filter_map(|t| TopicFilter::parse(&t).ok())
            .collect();
        for (i, st) in self.streams.iter().enumerate() {
            let at = format!("streams[{i}] ({})", st.name);
            if let Ok(f) = TopicFilter::parse(&st.topic)
                && let Some(t) = own.iter().find(|t| f.overlaps(t))
            {
                errs.push(format!(
                    "{at}.topic: {:?} also matches ebgand's own topics {t} (mqtt.prefix {:?})",
                    st.topic, self.mqtt.prefix
                ));
            }
            if let Some(s) = validate_stream(st, &at, &self.detect, calibration, models, errs) {
                if !names.insert(s.name.clone()) {
                    errs.push(format!("{at}.name: duplicate stream name"));
                }
                streams.push(s);
            }
        }
        // A message goes to the first stream whose filter matches it: a second stream that can
        // match the same topics would lose them without a word (and a broker may deliver one
        // copy per matching subscription).
        for (j, b) in streams.iter().enumerate() {
            if let Some(a) = streams[..j].iter().find(|a| a.topic.overlaps(&b.topic)) {
                errs.push(format!(
                    "streams {:?} and {:?}: topics {:?} and {:?} can match the same topic; \
                     make them disjoint (a message is one stream's)",
                    a.name,
                    b.name,
                    a.topic.as_str(),
                    b.topic.as_str()
                ));
            }
        }
        // Streams that learn one model from themselves feed one capture and are scored by the
        // version it trains: their windows must be alike (else the capture keeps the first
        // stream's and the trained version is refused on the others, for good).
        let mut first = BTreeMap::new();
        for s in streams
            .iter()
            .filter(|s| models.get(&s.model).is_some_and(Option::is_none))
        {
            let shape = (s.window, s.channels, s.logmel.as_ref());
            let (name, seen) = *first.entry(&s.model).or_insert((&s.name, shape));
            if seen != shape {
                errs.push(format!(
                    "streams {name:?} and {:?} both learn model {:?} from themselves, so their \
                     windows must be alike: {} x {} against {} x {}{}",
                    s.name,
                    s.model,
                    seen.0,
                    seen.1,
                    shape.0,
                    shape.1,
                    if seen.2 == shape.2 {
                        ""
                    } else {
                        " (or their logmel settings differ)"
                    },
                ));
            }
        }
        streams
    }

    /// `[http] listen`: `None` when empty (no HTTP endpoint) or unparsable (reported).
    fn http_listen(&self, errs: &mut Vec<String>) -> Option<SocketAddr> {
        if self.http.listen.trim().is_empty() {
            return None;
        }
        listen_addr(&self.http.listen)
            .map_err(|e| errs.push(format!("http.listen: {:?}: {e}", self.http.listen)))
            .ok()
    }

    /// `[train]`: how the Python worker is run.
    fn train_settings(&self, errs: &mut Vec<String>) -> TrainSettings {
        let t = &self.train;
        if !matches!(t.device.as_str(), "cpu" | "cuda") {
            errs.push(format!("train.device: {:?} must be cpu or cuda", t.device));
        }
        if t.timeout_s == 0 {
            errs.push("train.timeout_s: must be at least 1".into());
        }
        if t.nice > 19 {
            errs.push(format!("train.nice: {} must be 0-19", t.nice));
        }
        TrainSettings {
            python: PathBuf::from(&t.python),
            worker: PathBuf::from(&t.worker),
            device: t.device.clone(),
            nice: t.nice,
            timeout: Duration::from_secs(t.timeout_s),
            cache: (!t.cache.is_empty()).then(|| PathBuf::from(&t.cache)),
            models_dir: PathBuf::from(&t.models_dir),
        }
    }

    /// `[registry]`: where model versions live and the gate a new one must pass.
    fn registry_settings(&self, errs: &mut Vec<String>) -> RegistrySettings {
        let g = &self.registry;
        if g.dir.trim().is_empty() {
            errs.push("registry.dir: must not be empty".into());
        }
        if g.watch_ms == 0 {
            errs.push("registry.watch_ms: must be at least 1".into());
        }
        if g.gate_min_windows > g.gate_windows {
            errs.push(format!(
                "registry.gate_min_windows: {} is more than the gate_windows ({}) kept",
                g.gate_min_windows, g.gate_windows
            ));
        }
        if !(0.0..=1.0).contains(&g.max_false_alarm_rate) {
            errs.push(format!(
                "registry.max_false_alarm_rate: {} must be in 0..1",
                g.max_false_alarm_rate
            ));
        }
        RegistrySettings {
            dir: PathBuf::from(&g.dir),
            watch: Duration::from_millis(g.watch_ms),
            gate_windows: g.gate_windows,
            max_false_alarm_rate: g.max_false_alarm_rate,
            gate_min_windows: g.gate_min_windows,
        }
    }

    /// `[learning]`: capture and continual learning.
    fn learning_settings(&self, errs: &mut Vec<String>) -> LearningSettings {
        let l = &self.learning;
        if l.windows < 10 || l.shard_windows == 0 || l.max_shards == 0 || l.steps == 0 {
            errs.push("learning: windows must be at least 10; shard_windows, max_shards, steps at least 1".into());
        }
        LearningSettings {
            period: LearningPeriod {
                windows: l.windows,
                duration: (l.duration_s > 0).then(|| Duration::from_secs(l.duration_s)),
            },
            dir: PathBuf::from(&l.dir),
            shard_windows: l.shard_windows,
            max_shards: l.max_shards,
            min_free_mb: l.min_free_mb,
            capture_every: l.capture_every.max(1),
            steps: l.steps,
            retries: l.retries,
            retry_delay: Duration::from_secs(l.retry_delay_s),
            retrain_every: (l.retrain_every_s > 0).then(|| Duration::from_secs(l.retrain_every_s)),
            retrain_seeded: l.retrain_seeded,
            keep_versions: (l.keep_versions > 0).then_some(l.keep_versions),
        }
    }

    /// Durations (seconds and milliseconds settings) no longer than [`MAX_DURATION_S`]: a
    /// longer one passed here and then overflowed the clock's arithmetic at run time (a
    /// panic at start, which systemd restarts forever).
    fn check_durations(&self, errs: &mut Vec<String>) {
        let (m, l) = (&self.mqtt, &self.learning);
        let seconds = [
            ("mqtt.keep_alive_s", m.keep_alive_s),
            ("limits.stream_idle_s", self.limits.stream_idle_s),
            ("train.timeout_s", self.train.timeout_s),
            ("learning.duration_s", l.duration_s),
            ("learning.retry_delay_s", l.retry_delay_s),
            ("learning.retrain_every_s", l.retrain_every_s),
        ];
        let millis = [
            ("mqtt.reconnect_min_ms", m.reconnect_min_ms),
            ("mqtt.reconnect_max_ms", m.reconnect_max_ms),
            ("shutdown.grace_ms", self.shutdown.grace_ms),
            ("registry.watch_ms", self.registry.watch_ms),
            ("journal.checkpoint_ms", self.journal.checkpoint_ms),
        ];
        let too_long = seconds
            .into_iter()
            .filter(|(_, v)| *v > MAX_DURATION_S)
            .chain(
                millis
                    .into_iter()
                    .filter(|(_, v)| *v / 1000 > MAX_DURATION_S),
            );
        for (key, v) in too_long {
            errs.push(format!(
                "{key}: {v} is longer than a hundred years (at most {MAX_DURATION_S} s)"
            ));
        }
    }

    /// `[partition]`: one way of sharing streams between daemons, each part well formed.
    fn check_partition(&self, errs: &mut Vec<String>) {
        let p = &self.partition;
        if p.count == 0 || p.index >= p.count {
            errs.push(format!(
                "partition: index {} must be below count {} (count at least 1)",
                p.index, p.count
            ));
        }
        for (i, prefix) in p.prefixes.iter().enumerate() {
            if prefix.is_empty()
                || prefix.contains(['+', '#'])
                || prefix.starts_with('/')
                || prefix.ends_with('/')
            {
                errs.push(format!(
                    "partition.prefixes: {prefix:?} must be non-empty, without wildcards or a leading or trailing '/'"
                ));
            } else if p.prefixes[..i].contains(prefix) {
                errs.push(format!("partition.prefixes: {prefix:?} is listed twice"));
            }
        }
        if !p.prefixes.is_empty() && p.count > 1 {
            errs.push(
                "partition: prefixes (partitions the broker makes) and count > 1 (partitions \
                 ebgand makes on one broker) are two ways of sharing streams; use one"
                    .into(),
            );
        }
    }
}

/// A stream's acceptance: its own `accept_after` / `accept_after_s` when it sets either (the
/// pair replaces `[detect]`'s), else `[detect]`'s. One in seconds needs the stream's samples to
/// carry their times (`format`, [`PayloadFormat::timed`]). `None` (with the reason in `errs`) when it is not valid; `[detect]`'s
/// own errors are reported once, with `[detect]`.
fn stream_acceptance(
    st: &RawStream,
    format: Option<&PayloadFormat>,
    detect: &RawDetect,
    at: &str,
    errs: &mut Vec<String>,
) -> Option<crate::detect::Accept> {
    let own = st.accept_after.is_some() || st.accept_after_s.is_some();
    let accept = if own {
        let (w, s) = (
            st.accept_after.unwrap_or(0),
            st.accept_after_s.unwrap_or(0.0),
        );
        acceptance(w, s, &format!("{at}."))
            .map_err(|e| errs.push(e))
            .ok()?
    } else {
        acceptance(detect.accept_after, detect.accept_after_s, "detect.").ok()?
    };
    // An unknown format is reported on its own.
    let untimed = format.is_some_and(|f| !f.timed());
    if matches!(accept, crate::detect::Accept::Seconds(_)) && untimed {
        let setting = if own {
            format!("{at}.accept_after_s")
        } else {
            format!("{at}: [detect] accept_after_s")
        };
        errs.push(format!(
            "{setting} counts the stream's own time, and its samples carry none: give it a timestamp_field (format \"object\"), or accept_after in windows"
        ));
        return None;
    }
    Some(accept)
}

/// Most values (window x channels) in one stream's window.
pub const MAX_WINDOW_VALUES: usize = 1 << 20;

fn validate_stream(
    st: &RawStream,
    at: &str,
    detect: &RawDetect,
    shared: &crate::detect::Calibration,
    models: &BTreeMap<String, Option<PathBuf>>,
    errs: &mut Vec<String>,
) -> Option<StreamSettings> {
    let before = errs.len();
    if st.name.is_empty() || st.name.contains(['+', '#', '/']) {
        errs.push(format!(
            "{at}.name: must be non-empty, without '/', '+' or '#'"
        ));
    }
    let topic = match TopicFilter::parse(&st.topic) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.push(format!("{at}.topic: {e}"));
            None
        }
    };
    if !models.contains_key(&st.model) {
        errs.push(format!(
            "{at}.model: {:?} is not a key of [models] (known: {})",
            st.model,
            models.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    // An object stream has a channel per field unless it says otherwise (and then they must agree).
    let st_channels = st.channels.unwrap_or(if st.format == "object" {
        st.fields.len().max(1)
    } else {
        1
    });
    let channels = NonZeroUsize::new(st_channels);
    if channels.is_none() {
        errs.push(format!("{at}.channels: must be at least 1"));
    }
    let format = match st.format.as_str() {
        "number" => {
            if st_channels != 1 {
                errs.push(format!(
                    "{at}.channels: format \"number\" carries one channel"
                ));
            }
            Some(PayloadFormat::Number)
        }
        "array" => Some(PayloadFormat::Array),
        "f32le" => Some(PayloadFormat::F32Le),
        "i16le" => Some(PayloadFormat::I16Le),
        "object" => {
            if st.fields.is_empty() {
                errs.push(format!(
                    "{at}.fields: format \"object\" needs the list of fields"
                ));
            } else if st.fields.len() != st_channels {
                errs.push(format!(
                    "{at}.channels: {} but {} fields are listed (one channel per field)",
                    st_channels,
                    st.fields.len()
                ));
            }
            let ts = (!st.timestamp_field.is_empty()).then(|| st.timestamp_field.clone());
            Some(PayloadFormat::Object {
                fields: st.fields.clone(),
                timestamp_field: ts,
            })
        }
        other => {
            errs.push(format!(
                "{at}.format: unknown format {other:?} (known: number, array, object, f32le, i16le)"
            ));
            None
        }
    };
    if st.format != "object" && (!st.fields.is_empty() || !st.timestamp_field.is_empty()) {
        errs.push(format!(
            "{at}.fields / timestamp_field: only for format \"object\""
        ));
    }
    let window = NonZeroUsize::new(st.window);
    if window.is_none() {
        errs.push(format!("{at}.window: must be at least 1"));
    }
    // Each stream holds a window's values; a typo must be an error, not an allocation failure.
    // An audio stream's values are its frames' mel bands.
    let values = st.logmel.as_ref().map_or(st_channels, |p| p.n_mels);
    if st.window.saturating_mul(values.max(1)) > MAX_WINDOW_VALUES {
        errs.push(format!(
            "{at}.window x channels: {} x {} is over the limit of {MAX_WINDOW_VALUES} values",
            st.window, values
        ));
    }
    let hop = NonZeroUsize::new(st.hop.unwrap_or(st.window));
    match (hop, window) {
        (None, _) => errs.push(format!("{at}.hop: must be at least 1")),
        (Some(h), Some(w)) if h > w => errs.push(format!(
            "{at}.hop: {h} exceeds the window ({w}); samples between windows would never be scored"
        )),
        _ => {}
    }
    if let Some(t) = st.threshold
        && !(t.is_finite() && t > 0.0)
    {
        errs.push(format!(
            "{at}.threshold: {t} must be a positive finite number"
        ));
    }
    if let Some(p) = st.alert_probability {
        check_alert_probability(p, detect.tail_quantile, &format!("{at}."), errs);
        if st.threshold.is_some() {
            errs.push(format!(
                "{at}: give threshold (judge by energy) or alert_probability, not both"
            ));
        }
    }
    let judging = detect.judging(st.threshold, st.alert_probability);
    let raise_after = st.raise_after.unwrap_or(detect.raise_after);
    let clear_after = st.clear_after.unwrap_or(detect.clear_after);
    if raise_after == 0 || clear_after == 0 {
        errs.push(format!(
            "{at}.raise_after / clear_after: must be at least 1"
        ));
    }
    let accept = stream_acceptance(st, format.as_ref(), detect, at, errs);
    let tuning = st.tuning();
    if !tuning.is_empty() {
        // Checked with [detect]'s in place of the ones the stream leaves alone; what is
        // wrong with [detect]'s alone is said once, of [detect].
        let (mut theirs, mut own) = (Vec::new(), Vec::new());
        check_window_counts(shared, "", &mut theirs);
        check_window_counts(&shared.tuned(&tuning), "", &mut own);
        errs.extend(
            own.into_iter()
                .filter(|e| !theirs.contains(e))
                .map(|e| format!("{at}.{e}")),
        );
    }
    if st.season == Some(true) {
        check_own_season(shared, !st.timestamp_field.is_empty(), at, errs);
    }
    let mut channels = channels;
    if let Some(params) = &st.logmel {
        if st_channels != 1 || st.format == "object" {
            errs.push(format!(
                "{at}.logmel: audio streams are mono PCM (channels = 1, not \"object\")"
            ));
        }
        if let Err(e) = crate::pipeline::features::LogMel::new(params.clone()) {
            errs.push(format!("{at}.logmel: {e}"));
        } else if let Some(w) = window
            && w.get() != params.frames
        {
            // A model of log-mel windows takes `frames` of them (its manifest says so).
            errs.push(format!(
                "{at}.window: {w} must be logmel.frames ({}): an audio stream's windows are \
                 its frames",
                params.frames
            ));
        }
        channels = NonZeroUsize::new(params.n_mels);
    }
    if errs.len() != before {
        return None;
    }
    Some(StreamSettings {
        name: st.name.clone(),
        topic: topic?,
        model: st.model.clone(),
        format: format?,
        logmel: st.logmel.clone(),
        channels: channels?,
        window: window?,
        hop: hop?,
        judging,
        raise_after,
        clear_after,
        accept: accept?,
        tuning,
    })
}

/// A listen address as people write them: `127.0.0.1:9898`, `[::1]:9898`, `localhost:9898`
/// (resolved; the first address), or `:9898` (every IPv4 interface; `[::]:9898` takes IPv6 too,
/// where the system maps IPv4 onto it, as Linux does by default).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port (0-65535)"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, :PORT or IP:PORT")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port (0-65535)"))?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

fn default_node() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge".into())
}

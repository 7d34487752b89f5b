//! GPU check: the scorer on TensorRT (FP16 and FP32), CUDA and CPU, on the same windows.
//!
//! `cargo run --release --example gpu_check -- [--require-gpu]`, or `make gpu-check`, which runs
//! `scripts/gpu-check.sh` (installs `onnxruntime-gpu` and the NVIDIA libraries first).
//!
//! Generates a fixed set of windows (the demo machine's simulated vibration, seeded, every 16th
//! window with the bearing fault, scaled to the model's training mean and std), then for the CPU
//! reference and each requested GPU provider builds a [`Scorer`] forced to that provider alone:
//! no fallback, so a provider that cannot register is reported as `unavailable: <reason>`
//! (ONNX Runtime may still leave single nodes a provider does not take to the CPU; it says so in
//! a warning, which this program shows on stderr).
//! Each scorer is warmed up at each batch size (TensorRT builds an engine for a new shape), then
//! timed over all windows; the table shows windows/s (median of the passes) and how far its
//! energies are from the CPU provider's at the first batch size, against a relative tolerance
//! per provider (see BENCHMARKS.md, "GPU check", for why these values).
//!
//! Exit status: 0 when every provider that ran is within tolerance; 1 when one is not, fails
//! while scoring, or (with `--require-gpu`) a requested GPU provider is unavailable; 2 when the
//! library, the model or the CPU reference cannot be loaded.
#![allow(clippy::print_stdout, missing_docs)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use ebgand::config::{Provider, RawConfig, RuntimeSettings};
use ebgand::demo::sim::Machine;
use ebgand::model::{Manifest, ModelVersion, Scorer};

/// Every FAULT_EVERY-th window carries the simulated bearing fault.
const FAULT_EVERY: usize = 16;
/// Scoring calls at each batch size before timing (TensorRT builds an engine for a new shape).
const WARMUP_CALLS: usize = 20;

#[derive(Debug, Parser)]
#[command(
    name = "gpu_check",
    about = "Scores the same windows with TensorRT, CUDA and CPU; prints windows/s and energy differences"
)]
struct Args {
    /// Model version folder.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/vibration/ebgan-1"))]
    model: PathBuf,
    /// libonnxruntime.so to load (default: $ORT_DYLIB_PATH, then the `make setup` library).
    #[arg(long)]
    library: Option<PathBuf>,
    /// Windows scored per pass; a multiple of each batch size.
    #[arg(long, default_value_t = 65_536)]
    windows: usize,
    /// Batch sizes (repeat the flag for several).
    #[arg(long = "batch", default_values_t = [64, 512])]
    batches: Vec<usize>,
    /// Timed passes over all windows per provider and batch size; the median rate is shown.
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Seed of the simulated vibration.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// GPU providers to check, comma-separated; cpu always runs, as the reference.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Variant::TensorrtFp16, Variant::TensorrtFp32, Variant::Cuda])]
    providers: Vec<Variant>,
    /// GPU device id.
    #[arg(long, default_value_t = 0)]
    device_id: i32,
    /// Intra-op threads (default: the documented config's, as the daemon runs).
    #[arg(long)]
    intra_threads: Option<usize>,
    /// Fail (exit 1) when a requested GPU provider is unavailable.
    #[arg(long)]
    require_gpu: bool,
    /// Relative tolerance of the CPU provider at other batch sizes.
    #[arg(long, default_value_t = 1e-5)]
    rtol_cpu: f64,
    /// Relative tolerance of CUDA and TensorRT FP32 (both may use TF32 on Ampere and newer).
    #[arg(long, default_value_t = 1e-2)]
    rtol_fp32: f64,
    /// Relative tolerance of TensorRT FP16.
    #[arg(long, default_value_t = 3e-2)]
    rtol_fp16: f64,
}

/// A provider as checked: TensorRT twice, with and without FP16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    TensorrtFp16,
    TensorrtFp32,
    Cuda,
    Cpu,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::TensorrtFp16 => "tensorrt-fp16",
            Self::TensorrtFp32 => "tensorrt-fp32",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        }
    }

    fn provider(self) -> Provider {
        match self {
            Self::TensorrtFp16 | Self::TensorrtFp32 => Provider::TensorRt,
            Self::Cuda => Provider::Cuda,
            Self::Cpu => Provider::Cpu,
        }
    }

    fn rtol(self, args: &Args) -> f64 {
        match self {
            Self::TensorrtFp16 => args.rtol_fp16,
            Self::TensorrtFp32 | Self::Cuda => args.rtol_fp32,
            Self::Cpu => args.rtol_cpu,
        }
    }
}

/// How far one run's energies are from the reference.
#[derive(Debug, Clone, Copy)]
struct Diff {
    max_abs: f64,
    max_rel: f64,
    /// Windows judged differently against the manifest threshold.
    flips: usize,
    /// Window with the largest relative difference.
    worst: usize,
}

/// One table row.
enum Outcome {
    Reference {
        rate: f64,
    },
    Compared {
        rate: f64,
        diff: Diff,
        rtol: f64,
        ref_energy: f32,
        energy: f32,
    },
    Unavailable(String),
    Failed(String),
}

struct Row {
    variant: Variant,
    batch: Option<usize>,
    outcome: Outcome,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gpu_check: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Warnings to stderr: ONNX Runtime's own (nodes placed on another provider, for one) stay
/// visible; the scorer's "trying the next provider" is left out, as each row says it.
fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn,ebgand=error"));
    drop(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    );
}

/// Runs the check; `Ok(false)` when it failed.
fn run(args: &Args) -> Result<bool> {
    let lib = library(args.library.as_deref());
    if !lib.exists() {
        bail!(
            "ONNX Runtime library {} missing: run `make setup-ort` (CPU) or scripts/gpu-check.sh (GPU)",
            lib.display()
        );
    }
    if args.passes == 0 || args.windows == 0 || args.batches.is_empty() {
        bail!("--passes and --windows must be at least 1, with at least one --batch");
    }
    if let Some(b) = args
        .batches
        .iter()
        .find(|&&b| b == 0 || !args.windows.is_multiple_of(b))
    {
        bail!(
            "--windows {} is not a multiple of batch {b}: a short last batch would make TensorRT build another engine inside a timed pass",
            args.windows
        );
    }
    let env = ebgand::model::ort_environment(Some(&lib))?;
    env.set_log_level(ort::logging::LogLevel::Warning);
    let version = ModelVersion::open(&args.model)
        .with_context(|| format!("model {}", args.model.display()))?;
    let m = &version.manifest;
    let (w, c) = (m.input.window, m.input.channels);
    let threshold = m.threshold.value;
    let data = windows(m, args.windows, args.seed);

    let mut rt = RawConfig::from_toml(ebgand::config::DOCUMENTED_CONFIG)?
        .validate()?
        .runtime;
    rt.library = Some(lib.clone());
    rt.device_id = args.device_id;
    rt.tensorrt_engine_cache = None;
    if let Some(n) = args.intra_threads {
        rt.intra_threads = n;
    }

    println!(
        "GPU check: {}@{} ({w} x {c} windows), {} windows (simulated vibration, seed {}, every {FAULT_EVERY}th with the bearing fault), threshold {threshold}",
        m.name,
        m.version,
        thousands(args.windows as f64),
        args.seed
    );
    match std::fs::canonicalize(&lib) {
        Ok(real) if real != lib => {
            println!("ONNX Runtime: {} -> {}", lib.display(), real.display())
        }
        _ => println!("ONNX Runtime: {}", lib.display()),
    }
    println!("  {}", build_info());
    println!(
        "timing: {WARMUP_CALLS} warm-up calls per batch size, then median of {} passes over all windows; {} intra-op thread(s); device {}",
        args.passes, rt.intra_threads, args.device_id
    );
    println!(
        "differences: against cpu at batch {}; relative = |e - e_cpu| / |e_cpu|; flips = windows judged differently against the threshold",
        args.batches[0]
    );

    let mut rows = Vec::new();
    let cpu = scorer(&version, &rt, Variant::Cpu).context("the CPU reference")?;
    let (reference, cpu_rows) = time_reference(cpu, &data, threshold, args)?;
    rows.extend(cpu_rows);
    let mut sorted = reference.clone();
    sorted.sort_by(f32::total_cmp);
    println!(
        "cpu reference energies: min {:.4}, median {:.4}, max {:.4}; {} of {} windows over the threshold\n",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        thousands(
            reference
                .iter()
                .filter(|&&e| ebgand::detect::is_anomalous(e, threshold))
                .count() as f64
        ),
        thousands(reference.len() as f64)
    );
    let mut seen = vec![Variant::Cpu];
    for &variant in &args.providers {
        if seen.contains(&variant) {
            continue;
        }
        seen.push(variant);
        rows.extend(check(
            &version, &rt, variant, &data, &reference, threshold, args,
        ));
    }

    print_table(&rows);
    Ok(verdict(&rows, args.require_gpu))
}

/// The library path: `--library`, else `ORT_DYLIB_PATH`, else the one `make setup` installs.
fn library(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(ebgand::model::runtime::SETUP_LIBRARY)
        })
}

/// ONNX Runtime's build line, without the compiler flags.
fn build_info() -> String {
    let info = ort::info();
    info.split(", cmake")
        .next()
        .unwrap_or(info)
        .trim()
        .to_string()
}

/// The windows, laid end to end: channel `k` of window `i` is the demo machine seeded
/// `seed + k`, every [`FAULT_EVERY`]th window faulty. When the manifest lists the training data's
/// per-channel mean and std, each channel is scaled so its healthy windows have them, which puts
/// the energies where the model serves them.
fn windows(m: &Manifest, n: usize, seed: u64) -> Vec<f32> {
    let (w, c) = (m.input.window, m.input.channels);
    let mut machines: Vec<Machine> = (0..c).map(|k| Machine::new(seed + k as u64)).collect();
    let mut data = vec![0.0f32; n * w * c];
    for i in 0..n {
        let fault = i % FAULT_EVERY == FAULT_EVERY - 1;
        for (k, machine) in machines.iter_mut().enumerate() {
            for (t, x) in machine.samples(w, fault).into_iter().enumerate() {
                data[(i * w + t) * c + k] = x;
            }
        }
    }
    if let Some((mean, std)) = training_stats(m) {
        for k in 0..c {
            let healthy = (0..n)
                .filter(|i| i % FAULT_EVERY != FAULT_EVERY - 1)
                .flat_map(|i| (0..w).map(move |t| (i * w + t) * c + k));
            let (mut s, mut s2, mut count) = (0.0f64, 0.0f64, 0.0f64);
            for j in healthy {
                let x = f64::from(data[j]);
                s += x;
                s2 += x * x;
                count += 1.0;
            }
            let mu = s / count;
            let sd = (s2 / count - mu * mu).max(f64::MIN_POSITIVE).sqrt();
            for x in data.iter_mut().skip(k).step_by(c) {
                *x = (mean[k] + std[k] * (f64::from(*x) - mu) / sd) as f32;
            }
        }
    }
    data
}

/// `[data] mean` and `std` from the manifest, when both have one value per channel.
fn training_stats(m: &Manifest) -> Option<(Vec<f64>, Vec<f64>)> {
    let table = m.data.as_ref()?;
    let floats = |key: &str| -> Option<Vec<f64>> {
        table
            .get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .collect()
    };
    let (mean, std) = (floats("mean")?, floats("std")?);
    (mean.len() == m.input.channels && std.len() == m.input.channels).then_some((mean, std))
}

/// A scorer forced to one provider: the list holds that provider alone, so a failure to
/// register is an error rather than a fallback.
fn scorer(version: &ModelVersion, base: &RuntimeSettings, variant: Variant) -> Result<Scorer> {
    let mut rt = base.clone();
    rt.providers = vec![variant.provider()];
    rt.tensorrt_fp16 = variant == Variant::TensorrtFp16;
    let scorer = Scorer::load(version.clone(), &rt)?;
    if scorer.provider() != variant.provider() {
        bail!(
            "asked for {}, got {}",
            variant.provider().as_str(),
            scorer.provider().as_str()
        );
    }
    Ok(scorer)
}

/// Warms up at `batch`, then scores all windows `passes` times: the median rate and the
/// last pass's energies.
fn timed(
    scorer: &mut Scorer,
    data: &[f32],
    batch: usize,
    passes: usize,
) -> Result<(f64, Vec<f32>)> {
    let chunk = batch * scorer.window_len();
    let n = data.len() / scorer.window_len();
    for part in data.chunks_exact(chunk).take(WARMUP_CALLS) {
        scorer.score(part, batch)?;
    }
    let mut rates = Vec::with_capacity(passes);
    let mut energies = Vec::with_capacity(n);
    for _ in 0..passes {
        energies.clear();
        let start = Instant::now();
        for part in data.chunks_exact(chunk) {
            energies.extend(scorer.score(part, batch)?);
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates[rates.len() / 2], energies))
}

/// The CPU reference at the first batch size, and CPU's own rows.
fn time_reference(
    mut cpu: Scorer,
    data: &[f32],
    threshold: f32,
    args: &Args,
) -> Result<(Vec<f32>, Vec<Row>)> {
    let mut rows = Vec::new();
    let mut reference = Vec::new();
    for (i, &batch) in args.batches.iter().enumerate() {
        let (rate, energies) = timed(&mut cpu, data, batch, args.passes)
            .with_context(|| format!("the CPU reference at batch {batch}"))?;
        let outcome = if i == 0 {
            reference = energies;
            Outcome::Reference { rate }
        } else {
            compared(
                rate,
                &reference,
                &energies,
                threshold,
                Variant::Cpu.rtol(args),
            )
        };
        rows.push(Row {
            variant: Variant::Cpu,
            batch: Some(batch),
            outcome,
        });
    }
    Ok((reference, rows))
}

/// One GPU provider at every batch size.
fn check(
    version: &ModelVersion,
    rt: &RuntimeSettings,
    variant: Variant,
    data: &[f32],
    reference: &[f32],
    threshold: f32,
    args: &Args,
) -> Vec<Row> {
    let mut s = match scorer(version, rt, variant) {
        Ok(s) => s,
        Err(e) => {
            return vec![Row {
                variant,
                batch: None,
                outcome: Outcome::Unavailable(one_line(&format!("{e:#}"))),
            }];
        }
    };
    let mut rows = Vec::new();
    for &batch in &args.batches {
        let outcome = match timed(&mut s, data, batch, args.passes) {
            Ok((rate, energies)) => {
                compared(rate, reference, &energies, threshold, variant.rtol(args))
            }
            Err(e) => Outcome::Failed(one_line(&format!("{e:#}"))),
        };
        rows.push(Row {
            variant,
            batch: Some(batch),
            outcome,
        });
    }
    rows
}

fn compared(rate: f64, reference: &[f32], energies: &[f32], threshold: f32, rtol: f64) -> Outcome {
    let diff = diff(reference, energies, threshold);
    Outcome::Compared {
        rate,
        diff,
        rtol,
        ref_energy: reference[diff.worst],
        energy: energies[diff.worst],
    }
}

/// Largest absolute and relative differences, and threshold flips. A non-finite energy on
/// one side only counts as an infinite difference.
fn diff(reference: &[f32], other: &[f32], threshold: f32) -> Diff {
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        flips: 0,
        worst: 0,
    };
    for (i, (&a, &b)) in reference.iter().zip(other).enumerate() {
        let (a64, b64) = (f64::from(a), f64::from(b));
        let abs = if a64 == b64 {
            0.0
        } else if a.is_finite() && b.is_finite() {
            (a64 - b64).abs()
        } else {
            f64::INFINITY
        };
        let rel = abs / a64.abs().max(f64::MIN_POSITIVE);
        d.max_abs = d.max_abs.max(abs);
        if rel > d.max_rel {
            d.max_rel = rel;
            d.worst = i;
        }
        if ebgand::detect::is_anomalous(a, threshold) != ebgand::detect::is_anomalous(b, threshold)
        {
            d.flips += 1;
        }
    }
    d
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 1234567.8 -> "1,234,568".
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn passes(diff: &Diff, rtol: f64) -> bool {
    diff.max_rel <= rtol
}

fn print_table(rows: &[Row]) {
    println!(
        "| provider | batch | windows/s | max abs diff | max rel diff | flips | rel tolerance | result |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        let batch = row.batch.map_or_else(|| "-".to_string(), |b| b.to_string());
        let name = row.variant.name();
        match &row.outcome {
            Outcome::Reference { rate } => println!(
                "| {name} | {batch} | {} | reference | | | | |",
                thousands(*rate)
            ),
            Outcome::Compared {
                rate, diff, rtol, ..
            } => {
                println!(
                    "| {name} | {batch} | {} | {:.3e} | {:.3e} | {} | {rtol:.0e} | {} |",
                    thousands(*rate),
                    diff.max_abs,
                    diff.max_rel,
                    diff.flips,
                    if passes(diff, *rtol) { "PASS" } else { "FAIL" }
                );
            }
            Outcome::Unavailable(reason) => {
                println!("| {name} | {batch} | unavailable: {reason} | | | | | - |");
            }
            Outcome::Failed(reason) => {
                println!("| {name} | {batch} | failed while scoring: {reason} | | | | | FAIL |");
            }
        }
    }
    for row in rows {
        if let Outcome::Compared {
            diff,
            rtol,
            ref_energy,
            energy,
            ..
        } = &row.outcome
            && !passes(diff, *rtol)
        {
            println!(
                "{} batch {}: worst window {}: cpu energy {ref_energy}, {} energy {energy}",
                row.variant.name(),
                row.batch.unwrap_or(0),
                diff.worst,
                row.variant.name()
            );
        }
    }
}

/// Prints the summary; true when the check passed.
fn verdict(rows: &[Row], require_gpu: bool) -> bool {
    let mut failures = Vec::new();
    let mut unavailable = Vec::new();
    let mut checked = Vec::new();
    for row in rows {
        let name = row.variant.name();
        match &row.outcome {
            Outcome::Reference { .. } => {}
            Outcome::Compared { diff, rtol, .. } => {
                if passes(diff, *rtol) {
                    if !checked.contains(&name) {
                        checked.push(name);
                    }
                } else {
                    failures.push(format!(
                        "{name} batch {}: max rel diff {:.3e} > {rtol:.0e}",
                        row.batch.unwrap_or(0),
                        diff.max_rel
                    ));
                }
            }
            Outcome::Unavailable(_) => unavailable.push(name),
            Outcome::Failed(reason) => {
                failures.push(format!("{name} batch {}: {reason}", row.batch.unwrap_or(0)))
            }
        }
    }
    if require_gpu && !unavailable.is_empty() {
        failures.push(format!(
            "--require-gpu: unavailable: {}",
            unavailable.join(", ")
        ));
    }
    println!();
    if !unavailable.is_empty() {
        println!("unavailable: {}", unavailable.join(", "));
    }
    if failures.is_empty() {
        println!("result: PASS (within tolerance: {})", checked.join(", "));
        true
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        println!("result: FAIL");
        false
    }
}

//! # ebgand
//!
//! A streaming edge-inference daemon for predictive maintenance. It subscribes to sensor
//! streams over MQTT, cuts them into windows, scores each window by the energy of an
//! Energy-Based GAN's discriminator (an autoencoder's reconstruction error) through ONNX
//! Runtime, and publishes alerts, raised once and cleared once, when the energy stays above
//! a calibrated threshold.
//!
//! ## Layout
//!
//! - [`app`]: the wiring; every stage, channel and task is created and drained there.
//! - [`alerting`]: judges scored windows and hands alerts, state and energy to a sink.
//! - [`lifecycle`]: the control loop's model lifecycle (gate, swaps, registry watch, training
//!   runs, learners, shadow).
//! - [`control`]: commands from signals and MQTT control topics.
//! - [`config`]: defaults, file, `EBGAND__SECTION__KEY` environment, validation.
//! - [`ingest`]: the stream table (route, decode, window, resume) and the stage that journals
//!   messages, queues their windows and acknowledges them.
//! - [`mqtt`]: transport only: the ingest connection (poll, acks, redeliveries), the publish
//!   connection (alerts through the outbox), reconnect backoff.
//! - [`durable`]: the ingest journal and checkpoint, the alert outbox (on-disk formats).
//! - [`pipeline`]: payload decoding and windowing (sans-IO).
//! - [`model`]: manifests, ONNX Runtime environment and providers, scorer worker thread.
//! - [`detect`]: threshold, hysteresis, alert events (pure).
//! - [`offline`]: `ebgand score`, the same decode/window/score/detect path over a file.
//! - [`preflight`]: what `run` needs before it starts, for `check-config` and `run`.
//! - [`demo`]: embedded broker, simulated machine, console view.
//! - [`recording`]: CSV / `.npy` / `.npz` files as samples, for `score`, `train`, `replay`.
//! - [`replay`]: a recording published as an MQTT stream.
//! - [`train`]: the training worker's supervisor and `ebgand train`.
//! - [`telemetry`]: logs, Prometheus metrics, health endpoints, systemd notify.
//! - [`signal`]: SIGTERM/SIGINT/SIGHUP as daemon commands.
//! - [`faults`]: fault injection for this crate's own tests (empty outside them).
//! - [`sim`]: a simulated machine (healthy vibration, bearing fault) for the demo and tests.

pub mod alerting;
pub mod app;
pub mod config;
pub mod control;
pub mod demo;
pub mod detect;
pub mod durable;
pub mod faults;
pub mod ingest;
pub mod lifecycle;
pub mod model;
pub mod mqtt;
pub mod offline;
pub mod pipeline;
pub mod preflight;
pub mod recording;
pub mod replay;
pub mod report;
pub mod signal;
pub mod sim;
pub mod telemetry;
pub mod train;

pub use app::run;

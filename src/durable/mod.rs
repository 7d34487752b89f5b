//! What survives a crash: the ingest journal and its checkpoint, and the alert outbox.
//!
//! On-disk formats only: nothing here knows MQTT. The ingest stage appends stream messages to
//! the [`journal`] and records judging progress in the [`checkpoint`]; the alerting stage puts
//! every alert in the [`outbox`] before it is published.

pub mod checkpoint;
pub mod journal;
pub mod outbox;

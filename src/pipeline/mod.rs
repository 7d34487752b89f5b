//! The sans-IO signal path: topic routing, payload decoding, audio features and windowing. No
//! channels, clocks or logging.

pub mod decode;
pub mod features;
pub mod topic;
pub mod window;

pub use decode::{DecodeError, PayloadFormat, decode_into};
pub use window::{Mark, RawWindow, Seconds, WindowSpec, Windower, expected_windows};

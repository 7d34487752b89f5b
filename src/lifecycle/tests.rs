//! Unit tests of the model lifecycle's pure parts.

use super::*;

#[test]
fn a_model_with_no_version_keeps_retrying_and_others_stop() {
    let d = Duration::from_secs(30);
    assert_eq!(retry_delay(d, 1, 2, false), Some(d));
    assert_eq!(retry_delay(d, 2, 2, false), Some(d));
    assert_eq!(
        retry_delay(d, 3, 2, false),
        None,
        "a served model keeps serving"
    );
    assert_eq!(retry_delay(d, 3, 2, true), Some(d * 2));
    assert_eq!(retry_delay(d, 5, 2, true), Some(d * 8));
    assert_eq!(retry_delay(d, 40, 2, true), Some(LEARNING_RETRY_MAX));
    assert_eq!(retry_delay(d, u32::MAX, 0, true), Some(LEARNING_RETRY_MAX));
    let long = Duration::from_secs(7200);
    assert_eq!(retry_delay(long, 9, 2, true), Some(long), "never shorter");
}

//! The clock of the FHIR layer.

/// Milliseconds since the Unix epoch: the one clock of the FHIR layer.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! The current time as the RFC 3339 UTC strings records carry.

/// To the second: `2026-12-06T19:11:27Z`.
pub fn now_rfc3339() -> String {
    format_now(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
}

/// To the millisecond (audit records): `2026-12-06T19:11:27.042Z`.
pub fn now_rfc3339_millis() -> String {
    format_now(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
}

fn format_now(format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(format)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_formats_are_rfc_3339_utc() {
        let seconds = super::now_rfc3339();
        assert_eq!(seconds.len(), "2026-12-06T19:11:27Z".len(), "{seconds}");
        assert!(seconds.ends_with('Z') && seconds.as_bytes()[10] == b'T');
        let millis = super::now_rfc3339_millis();
        assert_eq!(millis.len(), "2026-12-06T19:11:27.042Z".len(), "{millis}");
    }
}

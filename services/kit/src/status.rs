//! Building `tonic::Status` values the same way in every service.
//!
//! Validation failures carry `google.rpc.BadRequest` field violations, which the
//! gateway turns into Conduit's `422 {"errors": {"<field>": ["<message>"]}}`.
//! Internal causes are logged with their whole chain and answered with a generic
//! message: a client never sees SQL, a path or a stack trace.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field as clients name it (JSON name), e.g. `email`.
    pub field: String,
    /// What is wrong with it, e.g. `can't be blank`.
    pub message: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// INVALID_ARGUMENT with one violation per bad field.
pub fn invalid(violations: Vec<FieldViolation>) -> Status {
    with_violations(Code::InvalidArgument, violations)
}

/// ALREADY_EXISTS for a unique field, e.g. `email` `has already been taken`.
pub fn taken(field: &str) -> Status {
    with_violations(
        Code::AlreadyExists,
        vec![FieldViolation::new(field, "has already been taken")],
    )
}

fn with_violations(code: Code, violations: Vec<FieldViolation>) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{} {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, v.message);
    }
    Status::with_error_details(code, message, details)
}

/// RESOURCE_EXHAUSTED that says when to try again (`google.rpc.RetryInfo`), which
/// the gateway answers as 429 with `Retry-After`.
pub fn exhausted(message: &str, retry_after: std::time::Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// The deepest page an offset may reach. Every skipped row is read and thrown
/// away, so an unbounded offset lets one request scan a whole table.
pub const MAX_OFFSET: i32 = 10_000;

/// Conduit-style paging: `limit` 1..=100 (20 when unset), `offset` 0..=10 000;
/// both problems reported at once as field violations.
pub fn page(limit: i32, offset: i32) -> Result<(i64, i64), Status> {
    let mut violations = Vec::new();
    let limit = match limit {
        0 => 20,
        1..=100 => limit,
        _ => {
            violations.push(FieldViolation::new("limit", "must be between 1 and 100"));
            20
        }
    };
    if offset < 0 {
        violations.push(FieldViolation::new("offset", "must not be negative"));
    } else if offset > MAX_OFFSET {
        violations.push(FieldViolation::new(
            "offset",
            format!("must be at most {MAX_OFFSET}"),
        ));
    }
    if !violations.is_empty() {
        return Err(invalid(violations));
    }
    Ok((i64::from(limit), i64::from(offset)))
}

/// UNAUTHENTICATED with a reason safe to show.
pub fn unauthenticated(reason: &str) -> Status {
    Status::unauthenticated(reason.to_owned())
}

/// Logs an unexpected failure with its cause chain and hides it from the caller.
#[track_caller]
pub fn internal(err: impl Into<anyhow::Error>) -> Status {
    let err = err.into();
    let location = std::panic::Location::caller();
    tracing::error!(error = format!("{err:#}"), %location, "internal error");
    Status::internal("internal error")
}

/// Maps a database error that no rule anticipated.
#[track_caller]
pub fn db(err: sqlx::Error) -> Status {
    if matches!(err, sqlx::Error::PoolTimedOut) {
        return Status::unavailable("database busy, try again");
    }
    internal(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_travel_as_bad_request_details() {
        let status = invalid(vec![
            FieldViolation::new("email", "can't be blank"),
            FieldViolation::new("password", "is too short"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status
            .get_details_bad_request()
            .expect("bad request details");
        let fields: Vec<_> = details
            .field_violations
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            fields,
            [("email", "can't be blank"), ("password", "is too short")]
        );
    }

    #[test]
    fn paging_has_defaults_and_reports_both_bounds() {
        assert_eq!(page(0, 0).unwrap(), (20, 0));
        assert_eq!(page(100, 5).unwrap(), (100, 5));
        let err = page(101, -1).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("limit") && err.message().contains("offset"));
        assert_eq!(page(20, MAX_OFFSET).unwrap(), (20, 10_000));
        assert!(page(20, MAX_OFFSET + 1).is_err());
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let status = internal(anyhow::anyhow!("relation \"account\" does not exist"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}

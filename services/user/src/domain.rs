//! Identity rules, free of I/O: what makes an email, a username, a password, a bio
//! or an image acceptable. Handlers parse protobuf strings into these types once;
//! past that point nothing sees an unchecked string.

use agora_kit::status::FieldViolation;

/// A syntactically plausible email address, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let value = raw.trim().to_lowercase();
        let bad = |msg: &str| Err(FieldViolation::new("email", msg));
        if value.is_empty() {
            return bad("can't be blank");
        }
        if value.chars().count() > 254 {
            return bad("is too long (maximum is 254 characters)");
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("is invalid");
        }
        match value.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.') => {}
            _ => return bad("is invalid"),
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A unique handle: 1 to 64 of letters, digits, `_`, `-`, `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let value = raw.trim();
        let bad = |msg: &str| Err(FieldViolation::new("username", msg));
        if value.is_empty() {
            return bad("can't be blank");
        }
        if value.chars().count() > 64 {
            return bad("is too long (maximum is 64 characters)");
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return bad("may contain only letters, digits, _, - and .");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password in clear, 8 to 256 characters. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let bad = |msg: &str| Err(FieldViolation::new("password", msg));
        let len = raw.chars().count();
        if len == 0 {
            return bad("can't be blank");
        }
        if len < 8 {
            return bad("is too short (minimum is 8 characters)");
        }
        // argon2 would hash anything, but a megabyte "password" is a DoS vector.
        if len > 256 {
            return bad("is too long (maximum is 256 characters)");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Free text about a user; empty clears it.
pub fn parse_bio(raw: &str) -> Result<Option<String>, FieldViolation> {
    let value = raw.trim();
    if value.chars().count() > 2000 {
        return Err(FieldViolation::new(
            "bio",
            "is too long (maximum is 2000 characters)",
        ));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// An http(s) URL of a picture; empty clears it.
pub fn parse_image(raw: &str) -> Result<Option<String>, FieldViolation> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let bad = |msg: &str| Err(FieldViolation::new("image", msg));
    if value.len() > 2048 {
        return bad("is too long (maximum is 2048 characters)");
    }
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(Some(value.to_owned()))
        }
        _ => bad("must be an http or https URL"),
    }
}

/// Collects every violation of a set of parses, so a client learns all its
/// mistakes in one answer.
#[derive(Debug, Default)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    pub fn check<T>(&mut self, parsed: Result<T, FieldViolation>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(v) => {
                self.0.push(v);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), tonic::Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(agora_kit::status::invalid(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Jake@Example.COM ").unwrap().as_str(),
            "jake@example.com"
        );
    }

    #[test]
    fn implausible_emails_are_rejected() {
        for bad in [
            "",
            "jake",
            "jake@",
            "@x.io",
            "a@b@c.io",
            "a b@c.io",
            "a@nodot",
            "a@x.",
            "a\u{0}@x.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usernames_allow_a_safe_alphabet_only() {
        assert!(Username::parse("celeb_rw123.x-y").is_ok());
        for bad in ["", "a b", "<script>", "ünï", "x/y", &"a".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_have_bounds_and_hide_in_debug() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        let p = Password::parse("password123").unwrap();
        assert_eq!(format!("{p:?}"), "Password(..)");
    }

    #[test]
    fn images_must_be_web_urls_and_empty_clears() {
        assert_eq!(parse_image("").unwrap(), None);
        assert!(parse_image("https://x.io/a.png").unwrap().is_some());
        assert!(parse_image("javascript:alert(1)").is_err());
        assert!(parse_image("http://").is_err());
    }
}

//! `google.api.http` path templates: parsing, matching a request path, and the
//! specificity order that lets literal routes win over variable ones.
//!
//! Grammar (from `google/api/http.proto`):
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//! Axum's router cannot express `{name=a/*}`, `**` or `:verb`, hence this module.
//! It knows nothing about messages: a match yields field paths and raw strings.

use std::cmp::Ordering;
use std::fmt;

/// One path segment of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the request segment exactly.
    Literal(String),
    /// `*`: any one non-empty segment.
    Single,
    /// `**`: zero or more segments; only allowed last.
    Multi,
}

/// A `{field.path=...}` capture over a run of segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Dotted field path into the request message, e.g. `["article", "slug"]`.
    pub field_path: Vec<String>,
    /// Index of the first segment the variable covers.
    start: usize,
    /// One past the last segment the variable covers.
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    source: String,
}

/// Why a template string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

/// A successful match: the captured variables, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captures(pub Vec<(Vec<String>, String)>);

impl Captures {
    /// The value captured for a dotted field path, if any (tests and diagnostics).
    pub fn get(&self, dotted: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(path, _)| path.join(".") == dotted)
            .map(|(_, value)| value.as_str())
    }
}

impl Template {
    /// Parses a template such as `/v1/{name=shelves/*/books/*}:publish`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let error = |reason| TemplateError {
            template: source.to_owned(),
            reason,
        };
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| error("must start with '/'"))?;

        // The verb is a ':' after the last '/' that is outside any braces.
        let (body, verb) = split_verb(rest).map_err(error)?;

        let mut parser = Parser {
            input: body.as_bytes(),
            pos: 0,
            segments: Vec::new(),
            variables: Vec::new(),
        };
        if !body.is_empty() {
            parser.segments_until(None).map_err(error)?;
        }
        if parser.pos != parser.input.len() {
            return Err(error("unexpected trailing characters"));
        }
        let Parser {
            segments,
            variables,
            ..
        } = parser;
        if let Some(i) = segments.iter().position(|s| *s == Segment::Multi)
            && i + 1 != segments.len()
        {
            return Err(error("'**' must be the last segment"));
        }
        Ok(Template {
            segments,
            variables,
            verb: verb.map(str::to_owned),
            source: source.to_owned(),
        })
    }

    /// The variables in template order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The template as written in the proto.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a request path (without query). Returns `None` when it does not fit,
    /// or when a captured value is not valid percent-encoded UTF-8.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };

        let has_multi = self.segments.last() == Some(&Segment::Multi);
        let fixed = self.segments.len() - usize::from(has_multi);
        if parts.len() < fixed || (!has_multi && parts.len() != fixed) {
            return None;
        }
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal != part => return None,
                Segment::Single if part.is_empty() => return None,
                _ => {}
            }
        }

        let mut captures = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let end = if has_multi && variable.end == self.segments.len() {
                parts.len()
            } else {
                variable.end
            };
            let single = end - variable.start == 1;
            let raw = &parts[variable.start..end];
            // A one-segment variable may carry an encoded '/', a multi-segment one
            // keeps its '/' separators as they came (the http.proto rule).
            let value = raw
                .iter()
                .map(|part| percent_decode(part, single))
                .collect::<Option<Vec<_>>>()?
                .join("/");
            captures.push((variable.field_path.clone(), value));
        }
        Some(Captures(captures))
    }

    /// Orders templates from most to least specific: literal before `*` before `**`,
    /// segment by segment, then a verb before none. Used to pick among matches.
    pub fn specificity_cmp(&self, other: &Self) -> Ordering {
        fn rank(segment: &Segment) -> u8 {
            match segment {
                Segment::Literal(_) => 0,
                Segment::Single => 1,
                Segment::Multi => 2,
            }
        }
        for (a, b) in self.segments.iter().zip(&other.segments) {
            match rank(a).cmp(&rank(b)) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        other
            .segments
            .len()
            .cmp(&self.segments.len())
            .then_with(|| other.verb.is_some().cmp(&self.verb.is_some()))
    }

    /// The template rendered for OpenAPI: `{var}` for each variable, wildcards outside
    /// variables kept as they are.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&variable.field_path.join("."));
                out.push('}');
                i = variable.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(literal) => out.push_str(literal),
                Segment::Single => out.push('*'),
                Segment::Multi => out.push_str("**"),
            }
            i += 1;
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn split_verb(rest: &str) -> Result<(&str, Option<&str>), &'static str> {
    let mut depth = 0usize;
    let mut last_slash = 0;
    let mut colon = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.checked_sub(1).ok_or("unbalanced '}'")?,
            '/' if depth == 0 => {
                last_slash = i;
                colon = None;
            }
            ':' if depth == 0 && i >= last_slash => colon = Some(i),
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '{'");
    }
    match colon {
        Some(i) => {
            let verb = &rest[i + 1..];
            if verb.is_empty() || verb.contains(['/', '{', '}', '*']) {
                return Err("invalid verb");
            }
            Ok((&rest[..i], Some(verb)))
        }
        None => Ok((rest, None)),
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

impl Parser<'_> {
    /// Parses `Segment { "/" Segment }`, stopping before `stop` (a `}` inside a variable).
    fn segments_until(&mut self, stop: Option<u8>) -> Result<(), &'static str> {
        loop {
            self.segment(stop.is_some())?;
            match self.input.get(self.pos) {
                Some(b'/') => self.pos += 1,
                Some(&c) if Some(c) == stop => return Ok(()),
                None if stop.is_none() => return Ok(()),
                None => return Err("unterminated variable"),
                Some(_) => return Err("unexpected character"),
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), &'static str> {
        let rest = &self.input[self.pos..];
        if rest.starts_with(b"**") {
            self.pos += 2;
            self.segments.push(Segment::Multi);
        } else if rest.starts_with(b"*") {
            self.pos += 1;
            self.segments.push(Segment::Single);
        } else if rest.starts_with(b"{") {
            if in_variable {
                return Err("nested variables are not allowed");
            }
            self.pos += 1;
            self.variable()?;
        } else {
            let len = rest
                .iter()
                .position(|c| matches!(c, b'/' | b'{' | b'}' | b'*' | b'='))
                .unwrap_or(rest.len());
            if len == 0 {
                return Err("empty segment");
            }
            let literal = std::str::from_utf8(&rest[..len]).map_err(|_| "not UTF-8")?;
            self.pos += len;
            self.segments.push(Segment::Literal(literal.to_owned()));
        }
        Ok(())
    }

    fn variable(&mut self) -> Result<(), &'static str> {
        let rest = &self.input[self.pos..];
        let len = rest
            .iter()
            .position(|c| matches!(c, b'=' | b'}'))
            .ok_or("unterminated variable")?;
        let path = std::str::from_utf8(&rest[..len]).map_err(|_| "not UTF-8")?;
        let field_path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if field_path.iter().any(|p| !is_ident(p)) {
            return Err("invalid field path");
        }
        self.pos += len;
        let start = self.segments.len();
        if self.input[self.pos] == b'=' {
            self.pos += 1;
            self.segments_until(Some(b'}'))?;
        } else {
            self.segments.push(Segment::Single);
        }
        // Both branches stop at the closing brace.
        self.pos += 1;
        self.variables.push(Variable {
            field_path,
            start,
            end: self.segments.len(),
        });
        Ok(())
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decodes `%XX` escapes. When `decode_slash` is false a `%2F` stays encoded, as
/// http.proto asks for multi-segment variables. `None` for bad escapes or bad UTF-8.
pub fn percent_decode(input: &str, decode_slash: bool) -> Option<String> {
    if !input.contains('%') {
        return Some(input.to_owned());
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if value == b'/' && !decode_slash {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(value);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    #[test]
    fn a_literal_template_matches_only_itself() {
        let template = t("/api/articles/feed");
        assert_eq!(
            template.matches("/api/articles/feed"),
            Some(Captures::default())
        );
        assert_eq!(template.matches("/api/articles"), None);
        assert_eq!(template.matches("/api/articles/feed/x"), None);
    }

    #[test]
    fn a_simple_variable_captures_one_segment() {
        let captures = t("/api/profiles/{username}")
            .matches("/api/profiles/jake")
            .unwrap();
        assert_eq!(captures.get("username"), Some("jake"));
        assert_eq!(
            t("/api/profiles/{username}").matches("/api/profiles/"),
            None
        );
        assert_eq!(
            t("/api/profiles/{username}").matches("/api/profiles/a/b"),
            None
        );
    }

    #[test]
    fn a_variable_value_is_percent_decoded_including_slashes() {
        let captures = t("/a/{name}").matches("/a/hello%20w%2Forld").unwrap();
        assert_eq!(captures.get("name"), Some("hello w/orld"));
        assert_eq!(t("/a/{name}").matches("/a/bad%zz"), None);
        assert_eq!(t("/a/{name}").matches("/a/%ff"), None);
    }

    #[test]
    fn nested_field_paths_are_split_on_dots() {
        let template = t("/api/articles/{article.slug}/x");
        let captures = template.matches("/api/articles/how-to/x").unwrap();
        assert_eq!(
            captures.0,
            vec![(
                vec!["article".to_owned(), "slug".to_owned()],
                "how-to".to_owned()
            )]
        );
    }

    #[test]
    fn a_variable_with_a_pattern_captures_several_segments() {
        let template = t("/v1/{name=shelves/*/books/*}");
        let captures = template.matches("/v1/shelves/1/books/2").unwrap();
        assert_eq!(captures.get("name"), Some("shelves/1/books/2"));
        assert_eq!(template.matches("/v1/shelves/1/cars/2"), None);
    }

    #[test]
    fn double_star_matches_zero_or_more_trailing_segments() {
        let template = t("/files/{path=**}");
        assert_eq!(
            template.matches("/files/a/b/c").unwrap().get("path"),
            Some("a/b/c")
        );
        assert_eq!(template.matches("/files").unwrap().get("path"), Some(""));
        let template = t("/static/**");
        assert!(template.matches("/static/x/y").is_some());
        assert!(template.matches("/other/x").is_none());
    }

    #[test]
    fn double_star_keeps_encoded_slashes_encoded() {
        let captures = t("/files/{path=**}").matches("/files/a%2Fb/c").unwrap();
        assert_eq!(captures.get("path"), Some("a%2Fb/c"));
    }

    #[test]
    fn a_verb_suffix_must_be_present_and_is_not_part_of_the_variable() {
        let template = t("/v1/{name=messages/*}:cancel");
        let captures = template.matches("/v1/messages/7:cancel").unwrap();
        assert_eq!(captures.get("name"), Some("messages/7"));
        assert_eq!(template.matches("/v1/messages/7"), None);
        assert_eq!(template.matches("/v1/messages/7:undo"), None);
        let plain = t("/v1/things:batchGet");
        assert!(plain.matches("/v1/things:batchGet").is_some());
    }

    #[test]
    fn literal_segments_are_more_specific_than_variables() {
        let feed = t("/api/articles/feed");
        let slug = t("/api/articles/{slug}");
        let rest = t("/api/{path=**}");
        assert_eq!(feed.specificity_cmp(&slug), Ordering::Less);
        assert_eq!(slug.specificity_cmp(&feed), Ordering::Greater);
        assert_eq!(slug.specificity_cmp(&rest), Ordering::Less);
        let mut all = [rest.clone(), slug.clone(), feed.clone()];
        all.sort_by(Template::specificity_cmp);
        assert_eq!(all, [feed, slug, rest]);
    }

    #[test]
    fn invalid_templates_are_rejected() {
        for bad in [
            "",
            "api",
            "/a/{b",
            "/a/b}",
            "/a/{b=**}/c",
            "/a/{b.}",
            "/a/{1b}",
            "/a//b",
            "/a/{b={c}}",
            "/a:",
            "/a/**/b",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn openapi_paths_name_the_variables() {
        assert_eq!(
            t("/api/articles/{slug}/comments/{id}").openapi_path(),
            "/api/articles/{slug}/comments/{id}"
        );
        assert_eq!(
            t("/v1/{name=shelves/*}:get").openapi_path(),
            "/v1/{name}:get"
        );
        assert_eq!(t("/").openapi_path(), "/");
    }
}

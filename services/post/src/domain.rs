//! Article rules, free of I/O: what a valid article, tag or comment is, how a slug
//! is made, and who may do what to whose content.

use agora_kit::status::FieldViolation;
use agora_kit::token::Principal;

/// Most tags one article may carry.
pub const MAX_TAGS: usize = 20;

/// A required, trimmed text of bounded length.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, FieldViolation> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldViolation::new(field, "can't be blank"));
    }
    if value.chars().count() > max {
        return Err(FieldViolation::new(
            field,
            format!("is too long (maximum is {max} characters)"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(FieldViolation::new(field, "contains control characters"));
    }
    Ok(value.to_owned())
}

pub fn title(raw: &str) -> Result<String, FieldViolation> {
    let title = text("title", raw, 300)?;
    if slug_base(&title).is_empty() {
        return Err(FieldViolation::new(
            "title",
            "needs at least one letter or digit",
        ));
    }
    Ok(title)
}

pub fn description(raw: &str) -> Result<String, FieldViolation> {
    text("description", raw, 1000)
}

pub fn body(raw: &str) -> Result<String, FieldViolation> {
    text("body", raw, 100_000)
}

pub fn comment_body(raw: &str) -> Result<String, FieldViolation> {
    text("body", raw, 10_000)
}

/// Tags trimmed, de-duplicated and sorted (Conduit lists them alphabetically).
pub fn tags(raw: &[String]) -> Result<Vec<String>, FieldViolation> {
    let mut tags: Vec<String> = raw
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(FieldViolation::new(
            "tagList",
            format!("has too many tags (maximum is {MAX_TAGS})"),
        ));
    }
    if tags
        .iter()
        .any(|t| t.chars().count() > 64 || t.chars().any(char::is_control))
    {
        return Err(FieldViolation::new(
            "tagList",
            "tags are at most 64 characters, without control characters",
        ));
    }
    Ok(tags)
}

/// The readable part of a slug: lower-case ASCII words joined by `-`.
pub fn slug_base(title: &str) -> String {
    let mut slug = String::with_capacity(title.len());
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 80 {
            break;
        }
    }
    slug.trim_end_matches('-').to_owned()
}

/// A slug made unique by a suffix, for when the plain one is taken.
pub fn slug_with_suffix(base: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}-{}", &id[..8])
}

/// What the rules need to know about an article.
#[derive(Debug, Clone, Copy)]
pub struct Ownership<'a> {
    pub author_id: &'a str,
}

/// Only the author edits an article.
pub fn may_edit_article(who: &Principal, article: Ownership<'_>) -> bool {
    who.user_id == article.author_id
}

/// The author, a moderator or an admin may delete an article.
pub fn may_delete_article(who: &Principal, article: Ownership<'_>) -> bool {
    who.user_id == article.author_id || who.can_moderate()
}

/// The comment's author, the article's author, a moderator or an admin may delete
/// a comment.
pub fn may_delete_comment(who: &Principal, comment_author: &str, article: Ownership<'_>) -> bool {
    who.user_id == comment_author || who.user_id == article.author_id || who.can_moderate()
}

/// Drafts are visible to their author only.
pub fn may_see(who: Option<&Principal>, published: bool, article: Ownership<'_>) -> bool {
    published || who.is_some_and(|w| w.user_id == article.author_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_kit::token::Role;

    fn who(id: &str, role: Role) -> Principal {
        Principal {
            user_id: id.into(),
            session_id: "s".into(),
            role,
            token: String::new(),
        }
    }

    #[test]
    fn slugs_are_readable_and_ascii() {
        assert_eq!(
            slug_base("How to train your dragon"),
            "how-to-train-your-dragon"
        );
        assert_eq!(
            slug_base("  Ünïcode & «quotes»! 2024 "),
            "n-code-quotes-2024"
        );
        assert_eq!(slug_base("!!!"), "");
        assert!(slug_with_suffix("a").starts_with("a-"));
        assert_eq!(slug_with_suffix("a").len(), 10);
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_sorted() {
        let raw = vec![
            "training".into(),
            " dragons ".into(),
            "training".into(),
            "".into(),
        ];
        assert_eq!(tags(&raw).unwrap(), ["dragons", "training"]);
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(tags(&many).is_err());
    }

    #[test]
    fn the_role_matrix_holds() {
        let article = Ownership {
            author_id: "author",
        };
        let author = who("author", Role::User);
        let other = who("other", Role::User);
        let moderator = who("mod", Role::Moderator);
        let admin = who("admin", Role::Admin);

        assert!(may_edit_article(&author, article));
        for w in [&other, &moderator, &admin] {
            assert!(!may_edit_article(w, article), "{w:?}");
        }
        for w in [&author, &moderator, &admin] {
            assert!(may_delete_article(w, article), "{w:?}");
        }
        assert!(!may_delete_article(&other, article));
        assert!(may_delete_comment(&other, "other", article));
        assert!(!may_delete_comment(&other, "someone", article));
        assert!(may_delete_comment(&author, "someone", article));
        assert!(may_delete_comment(&moderator, "someone", article));
        assert!(!may_see(None, false, article));
        assert!(!may_see(Some(&admin), false, article));
        assert!(may_see(Some(&author), false, article));
        assert!(may_see(None, true, article));
    }
}

//! Notification rules that need no database: the kinds and how they are stored,
//! the text a notification shows, delivery preferences parsed from the API, and
//! when quiet hours let an email go out.

use agora_kit::status::FieldViolation;
use agora_proto::notification::v1 as pb;
use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::{Offset, TimeZone};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Followed,
    ArticlePublished,
    Commented,
    Favorited,
}

impl Kind {
    /// Every kind, in the order preferences list them.
    pub const ALL: [Kind; 4] = [
        Kind::Followed,
        Kind::ArticlePublished,
        Kind::Commented,
        Kind::Favorited,
    ];

    /// The stored name (`notification.kind`, `preference.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Followed => "followed",
            Kind::ArticlePublished => "article_published",
            Kind::Commented => "commented",
            Kind::Favorited => "favorited",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == stored)
    }

    pub fn to_proto(self) -> pb::NotificationKind {
        match self {
            Kind::Followed => pb::NotificationKind::Followed,
            Kind::ArticlePublished => pb::NotificationKind::ArticlePublished,
            Kind::Commented => pb::NotificationKind::Commented,
            Kind::Favorited => pb::NotificationKind::Favorited,
        }
    }

    /// The kind of a protobuf enum value; `None` for UNSPECIFIED and unknown numbers.
    pub fn from_proto(raw: i32) -> Option<Self> {
        match pb::NotificationKind::try_from(raw).ok()? {
            pb::NotificationKind::Unspecified => None,
            pb::NotificationKind::Followed => Some(Kind::Followed),
            pb::NotificationKind::ArticlePublished => Some(Kind::ArticlePublished),
            pb::NotificationKind::Commented => Some(Kind::Commented),
            pb::NotificationKind::Favorited => Some(Kind::Favorited),
        }
    }

    /// The line a user reads, e.g. `alice commented on "Rust in 2026"`.
    pub fn text(self, actor: &str, title: &str) -> String {
        match self {
            Kind::Followed => format!("{actor} started following you"),
            Kind::ArticlePublished => format!("{actor} published \"{title}\""),
            Kind::Commented => format!("{actor} commented on \"{title}\""),
            Kind::Favorited => format!("{actor} favorited \"{title}\""),
        }
    }
}

/// Why an email is sent; stored in `email_job.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    Welcome,
    Notification,
    Digest,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::Welcome => "welcome",
            EmailKind::Notification => "notification",
            EmailKind::Digest => "digest",
        }
    }
}

/// Which channels one kind goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    pub in_app: bool,
    pub email: bool,
}

impl Default for Channels {
    /// Everything shows in the app; nothing is emailed until the user asks.
    fn default() -> Self {
        Self {
            in_app: true,
            email: false,
        }
    }
}

/// A time zone as the user wrote it and as jiff understands it.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub tz: TimeZone,
}

impl Zone {
    pub fn utc() -> Self {
        Self {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// `UTC`, an IANA name (`Europe/Paris`) or a fixed offset (`+02:00`).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("utc") || raw == "Z" {
            return Some(Self::utc());
        }
        let tz = match fixed_offset(raw) {
            Some(offset) => TimeZone::fixed(offset),
            None => TimeZone::get(raw).ok()?,
        };
        Some(Self {
            name: raw.to_owned(),
            tz,
        })
    }
}

/// `+HH:MM` / `-HH:MM`, up to ±14:00 as real offsets are.
fn fixed_offset(raw: &str) -> Option<Offset> {
    let (sign, rest) = match raw.as_bytes().first()? {
        b'+' => (1, &raw[1..]),
        b'-' => (-1, &raw[1..]),
        _ => return None,
    };
    let time = parse_hh_mm(rest)?;
    let seconds = i32::from(time.hour()) * 3600 + i32::from(time.minute()) * 60;
    if seconds > 14 * 3600 {
        return None;
    }
    Offset::from_seconds(sign * seconds).ok()
}

/// `HH:MM` on a 24-hour clock.
pub fn parse_hh_mm(raw: &str) -> Option<Time> {
    let (h, m) = raw.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    Time::new(h, m, 0, 0).ok()
}

fn format_hh_mm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// A daily window, in the user's zone, when no email goes out. It may wrap past
/// midnight (22:00–07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: Time,
    pub end: Time,
}

impl QuietHours {
    fn contains(&self, t: Time) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// When and how a user wants to hear of things.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub zone: Zone,
    pub quiet: Option<QuietHours>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            zone: Zone::utc(),
            quiet: None,
        }
    }
}

impl Schedule {
    /// Reads a stored row; anything unreadable counts as "no quiet hours", so a
    /// bad row can delay no email forever.
    pub fn from_stored(time_zone: &str, start: Option<&str>, end: Option<&str>) -> Self {
        let zone = Zone::parse(time_zone).unwrap_or_else(Zone::utc);
        let quiet = match (start.and_then(parse_hh_mm), end.and_then(parse_hh_mm)) {
            (Some(start), Some(end)) if start != end => Some(QuietHours { start, end }),
            _ => None,
        };
        Self { zone, quiet }
    }

    /// The earliest moment at or after `now` outside quiet hours.
    pub fn deliverable_at(&self, now: Timestamp) -> Timestamp {
        let Some(quiet) = self.quiet else {
            return now;
        };
        let local = now.to_zoned(self.zone.tz.clone());
        if !quiet.contains(local.time()) {
            return now;
        }
        // Inside the window: it ends today at `end`, or tomorrow when the window
        // wrapped past midnight and we are in its evening part.
        let mut day = local.date();
        if local.time() >= quiet.end {
            day = day.tomorrow().unwrap_or(day);
        }
        day.to_datetime(quiet.end)
            .to_zoned(self.zone.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(now)
    }
}

/// A user's preferences, validated.
#[derive(Debug, Clone)]
pub struct Preferences {
    /// One entry per kind, in `Kind::ALL` order.
    pub kinds: Vec<(Kind, Channels)>,
    pub schedule: Schedule,
}

impl Preferences {
    pub fn to_proto(&self) -> pb::Preferences {
        let quiet = self.schedule.quiet;
        pb::Preferences {
            kinds: self
                .kinds
                .iter()
                .map(|(kind, ch)| pb::KindPreference {
                    kind: kind.to_proto().into(),
                    in_app: ch.in_app,
                    email: ch.email,
                })
                .collect(),
            time_zone: self.schedule.zone.name.clone(),
            quiet_hours_start: quiet.map(|q| format_hh_mm(q.start)).unwrap_or_default(),
            quiet_hours_end: quiet.map(|q| format_hh_mm(q.end)).unwrap_or_default(),
        }
    }
}

impl TryFrom<Option<pb::Preferences>> for Preferences {
    type Error = Vec<FieldViolation>;

    /// Kinds left out take the defaults; an empty time zone means UTC.
    fn try_from(raw: Option<pb::Preferences>) -> Result<Self, Self::Error> {
        let Some(raw) = raw else {
            return Err(vec![FieldViolation::new("preferences", "can't be blank")]);
        };
        let mut violations = Vec::new();
        let mut kinds: Vec<(Kind, Channels)> = Kind::ALL
            .iter()
            .map(|k| (*k, Channels::default()))
            .collect();
        let mut seen = Vec::new();
        for entry in &raw.kinds {
            match Kind::from_proto(entry.kind) {
                None => violations.push(FieldViolation::new("kinds", "has an unknown kind")),
                Some(kind) if seen.contains(&kind) => violations.push(FieldViolation::new(
                    "kinds",
                    format!("lists {} twice", kind.as_str()),
                )),
                Some(kind) => {
                    seen.push(kind);
                    if let Some(slot) = kinds.iter_mut().find(|(k, _)| *k == kind) {
                        slot.1 = Channels {
                            in_app: entry.in_app,
                            email: entry.email,
                        };
                    }
                }
            }
        }

        let zone = if raw.time_zone.trim().is_empty() {
            Some(Zone::utc())
        } else {
            let zone = Zone::parse(&raw.time_zone);
            if zone.is_none() {
                violations.push(FieldViolation::new(
                    "timeZone",
                    "must be an IANA time zone like Europe/Paris, UTC or an offset like +02:00",
                ));
            }
            zone
        };

        let start = raw.quiet_hours_start.trim();
        let end = raw.quiet_hours_end.trim();
        let mut quiet = None;
        match (start.is_empty(), end.is_empty()) {
            (true, true) => {}
            (false, true) => violations.push(FieldViolation::new(
                "quietHoursEnd",
                "can't be blank when quietHoursStart is set",
            )),
            (true, false) => violations.push(FieldViolation::new(
                "quietHoursStart",
                "can't be blank when quietHoursEnd is set",
            )),
            (false, false) => {
                let s = parse_hh_mm(start);
                let e = parse_hh_mm(end);
                if s.is_none() {
                    violations.push(FieldViolation::new("quietHoursStart", "must be HH:MM"));
                }
                if e.is_none() {
                    violations.push(FieldViolation::new("quietHoursEnd", "must be HH:MM"));
                }
                if let (Some(start), Some(end)) = (s, e) {
                    if start == end {
                        violations.push(FieldViolation::new(
                            "quietHoursEnd",
                            "must differ from quietHoursStart",
                        ));
                    } else {
                        quiet = Some(QuietHours { start, end });
                    }
                }
            }
        }

        match zone {
            Some(zone) if violations.is_empty() => Ok(Self {
                kinds,
                schedule: Schedule { zone, quiet },
            }),
            _ => Err(violations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().unwrap()
    }

    fn quiet(zone: &str, start: &str, end: &str) -> Schedule {
        Schedule::from_stored(zone, Some(start), Some(end))
    }

    #[test]
    fn kinds_round_trip_through_storage_and_protobuf() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(Kind::from_proto(kind.to_proto().into()), Some(kind));
        }
        assert_eq!(Kind::from_proto(0), None);
        assert_eq!(Kind::from_proto(99), None);
    }

    #[test]
    fn zones_accept_utc_iana_names_and_fixed_offsets() {
        assert!(Zone::parse("UTC").is_some());
        assert!(Zone::parse("Europe/Paris").is_some());
        assert!(Zone::parse("+02:00").is_some());
        assert!(Zone::parse("-09:30").is_some());
        for bad in ["Mars/Olympus", "+25:00", "+2:00", "2", ""] {
            assert!(Zone::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn clock_times_must_be_hh_mm() {
        assert!(parse_hh_mm("00:00").is_some());
        assert!(parse_hh_mm("23:59").is_some());
        for bad in ["24:00", "7:00", "07:60", "0700", "ab:cd"] {
            assert!(parse_hh_mm(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn outside_quiet_hours_email_goes_now() {
        let s = quiet("UTC", "22:00", "07:00");
        let now = at("2026-11-24T12:00:00Z");
        assert_eq!(s.deliverable_at(now), now);
    }

    #[test]
    fn in_the_evening_part_of_a_wrapping_window_email_waits_for_the_morning() {
        let s = quiet("UTC", "22:00", "07:00");
        assert_eq!(
            s.deliverable_at(at("2026-11-24T23:30:00Z")),
            at("2026-11-25T07:00:00Z")
        );
    }

    #[test]
    fn after_midnight_in_a_wrapping_window_email_waits_for_the_same_morning() {
        let s = quiet("UTC", "22:00", "07:00");
        assert_eq!(
            s.deliverable_at(at("2026-11-25T03:00:00Z")),
            at("2026-11-25T07:00:00Z")
        );
    }

    #[test]
    fn quiet_hours_are_read_in_the_users_zone() {
        // 12:30 UTC is 13:30 in Paris in winter, inside 13:00-14:00 local.
        let s = quiet("Europe/Paris", "13:00", "14:00");
        assert_eq!(
            s.deliverable_at(at("2026-11-24T12:30:00Z")),
            at("2026-11-24T13:00:00Z")
        );
        let fixed = quiet("+02:00", "13:00", "14:00");
        assert_eq!(
            fixed.deliverable_at(at("2026-11-24T11:30:00Z")),
            at("2026-11-24T12:00:00Z")
        );
    }

    #[test]
    fn preferences_fill_missing_kinds_with_defaults() {
        let prefs = Preferences::try_from(Some(pb::Preferences {
            kinds: vec![pb::KindPreference {
                kind: pb::NotificationKind::Commented.into(),
                in_app: false,
                email: true,
            }],
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(prefs.kinds.len(), 4);
        assert_eq!(
            prefs.kinds[2],
            (
                Kind::Commented,
                Channels {
                    in_app: false,
                    email: true
                }
            )
        );
        assert_eq!(prefs.kinds[0].1, Channels::default());
        assert_eq!(prefs.schedule.zone.name, "UTC");
    }

    #[test]
    fn every_bad_preference_field_is_reported() {
        let errors = Preferences::try_from(Some(pb::Preferences {
            kinds: vec![pb::KindPreference::default()],
            time_zone: "Nowhere/Land".into(),
            quiet_hours_start: "25:00".into(),
            quiet_hours_end: "".into(),
        }))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["kinds", "timeZone", "quietHoursEnd"]);
    }
}

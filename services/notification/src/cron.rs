//! A five-field cron schedule (`minute hour day-of-month month day-of-week`), as
//! the digest uses it: `*`, numbers, lists (`1,15`), ranges (`1-5`) and steps
//! (`*/15`, `8-18/2`), evaluated in UTC. Names (`MON`, `JAN`) and the `@daily`
//! shorthands are not supported; nothing here needs them.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time};
use jiff::{Timestamp, ToSpan, tz::TimeZone};

/// A parsed schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day-of-month / day-of-week were `*`: when both are restricted a day
    /// matches if either does, as in every cron since Vixie's.
    days_any: bool,
    weekdays_any: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.source)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why a schedule did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let fields: Vec<&str> = raw.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(CronError(format!(
                "`{raw}` has {} fields; expected 5 (minute hour day month weekday)",
                fields.len()
            )));
        };
        let mut weekdays = field(weekday, "weekday", 0, 7)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let cron = Self {
            source: fields.join(" "),
            minutes: field(minute, "minute", 0, 59)?,
            hours: field(hour, "hour", 0, 23)?,
            days: field(day, "day", 1, 31)?,
            months: field(month, "month", 1, 12)?,
            weekdays,
            // Vixie cron treats `*/2` as unrestricted here too.
            days_any: day.starts_with('*'),
            weekdays_any: weekday.starts_with('*'),
        };
        // `0 0 30 2 *` parses but never fires: refuse it at start, not at 09:00.
        let probe = DateTime::constant(2024, 1, 1, 0, 0, 0, 0);
        if cron.next_after(probe).is_none() {
            return Err(CronError(format!("`{raw}` never fires")));
        }
        Ok(cron)
    }
}

/// One field as a bit set of the values it allows.
fn field(raw: &str, name: &str, min: u32, max: u32) -> Result<u64, CronError> {
    let bad = |why: &str| CronError(format!("{name} field `{raw}`: {why}"));
    let mut set = 0u64;
    for part in raw.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| bad("step is not a number"))?;
                if step == 0 {
                    return Err(bad("step must be at least 1"));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let number = |s: &str| -> Result<u32, CronError> {
            let n: u32 = s.parse().map_err(|_| bad("not a number"))?;
            if n < min || n > max {
                return Err(bad(&format!("{n} is outside {min}-{max}")));
            }
            Ok(n)
        };
        let (from, to) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(bad("range runs backwards"));
            }
            (a, b)
        } else {
            let n = number(range)?;
            // `5/15` means "from 5, every 15", as in Vixie cron.
            if part.contains('/') { (n, max) } else { (n, n) }
        };
        for v in (from..=to).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

fn has(set: u64, value: i8) -> bool {
    value >= 0 && set & (1u64 << value) != 0
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.days, date.day());
        let dow = has(self.weekdays, date.weekday().to_sunday_zero_offset());
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first firing strictly after `after` (UTC wall time), or `None` when
    /// there is none within a few years.
    pub fn next_after(&self, after: DateTime) -> Option<DateTime> {
        let start = after
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let mut at = start;
        // Each step skips a whole month, day, hour or minute that cannot match, so
        // a few years of searching stay well under this bound.
        for _ in 0..100_000 {
            if !has(self.months, at.month()) {
                let first = at.date().first_of_month().checked_add(1.month()).ok()?;
                at = first.to_datetime(Time::midnight());
                continue;
            }
            if !self.day_matches(at.date()) {
                at = at.date().tomorrow().ok()?.to_datetime(Time::midnight());
                continue;
            }
            if !has(self.hours, at.hour()) {
                at = at
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(self.minutes, at.minute()) {
                at = at.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(at);
        }
        None
    }

    /// The first firing strictly after the instant `after`.
    pub fn next_after_instant(&self, after: Timestamp) -> Option<Timestamp> {
        let local = after.to_zoned(TimeZone::UTC).datetime();
        let next = self.next_after(local)?;
        next.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
    }
}

/// The digest period a firing stands for, e.g. `2026-11-24T09:00`.
pub fn period(fired_at: Timestamp) -> String {
    fired_at.strftime("%Y-%m-%dT%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(raw: &str) -> Cron {
        raw.parse().unwrap()
    }

    fn dt(raw: &str) -> DateTime {
        raw.parse().unwrap()
    }

    #[test]
    fn daily_at_nine_fires_today_before_nine_and_tomorrow_after() {
        let c = cron("0 9 * * *");
        assert_eq!(
            c.next_after(dt("2026-11-24T08:59:30")),
            Some(dt("2026-11-24T09:00"))
        );
        assert_eq!(
            c.next_after(dt("2026-11-24T09:00")),
            Some(dt("2026-11-25T09:00"))
        );
    }

    #[test]
    fn steps_lists_and_ranges_combine() {
        let c = cron("*/15 8-10,14 * * *");
        assert_eq!(
            c.next_after(dt("2026-11-24T08:01")),
            Some(dt("2026-11-24T08:15"))
        );
        assert_eq!(
            c.next_after(dt("2026-11-24T10:45")),
            Some(dt("2026-11-24T14:00"))
        );
        assert_eq!(
            c.next_after(dt("2026-11-24T14:45")),
            Some(dt("2026-11-25T08:00"))
        );
    }

    #[test]
    fn a_ranged_step_counts_from_the_range_start() {
        let c = cron("5-59/20 * * * *");
        assert_eq!(
            c.next_after(dt("2026-11-24T10:06")),
            Some(dt("2026-11-24T10:25"))
        );
        assert_eq!(
            c.next_after(dt("2026-11-24T10:45")),
            Some(dt("2026-11-24T11:05"))
        );
    }

    #[test]
    fn weekdays_count_sunday_as_zero_and_seven() {
        // 2026-11-24 is a Tuesday.
        let sunday = cron("0 9 * * 7");
        assert_eq!(
            sunday.next_after(dt("2026-11-24T00:00")),
            Some(dt("2026-11-29T09:00"))
        );
        assert_eq!(
            cron("0 9 * * 0").next_after(dt("2026-11-24T00:00")),
            Some(dt("2026-11-29T09:00"))
        );
        let weekdays = cron("30 7 * * 1-5");
        assert_eq!(
            weekdays.next_after(dt("2026-11-27T08:00")),
            Some(dt("2026-11-30T07:30"))
        );
    }

    #[test]
    fn a_restricted_day_of_month_and_weekday_match_either() {
        // The 1st of the month or any Monday.
        let c = cron("0 0 1 * 1");
        assert_eq!(
            c.next_after(dt("2026-11-24T00:00")),
            Some(dt("2026-11-30T00:00"))
        );
        assert_eq!(
            c.next_after(dt("2026-11-30T00:00")),
            Some(dt("2026-12-01T00:00"))
        );
    }

    #[test]
    fn months_skip_to_the_next_allowed_one() {
        let c = cron("0 0 29 2 *");
        assert_eq!(
            c.next_after(dt("2026-03-01T00:00")),
            Some(dt("2028-02-29T00:00"))
        );
    }

    #[test]
    fn malformed_schedules_are_refused_with_the_reason() {
        for (bad, why) in [
            ("0 9 * *", "expected 5"),
            ("60 9 * * *", "outside 0-59"),
            ("0 9 * * */0", "at least 1"),
            ("0 9-7 * * *", "backwards"),
            ("0 9 * * x", "not a number"),
            ("0 0 30 2 *", "never fires"),
        ] {
            let err = bad.parse::<Cron>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn periods_name_the_firing_minute() {
        let at: Timestamp = "2026-11-24T09:00:00Z".parse().unwrap();
        assert_eq!(period(at), "2026-11-24T09:00");
        let c = cron("0 9 * * *");
        let next = c
            .next_after_instant("2026-11-24T09:00:00.5Z".parse().unwrap())
            .unwrap();
        assert_eq!(period(next), "2026-11-25T09:00");
    }
}

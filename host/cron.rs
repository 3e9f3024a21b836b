//! Cron expressions and their next fire times in a time zone.
//!
//! Five fields (minute hour day-of-month month day-of-week), with lists,
//! ranges, steps, month and weekday names, and the @hourly/@daily/... macros.
//! Day-of-month and day-of-week combine with OR when both are restricted,
//! as in classic cron.
//!
//! Daylight-saving rule (classic cron's, written down once):
//! - a fixed-time job whose local time falls in a spring-forward gap runs
//!   once, at the end of the gap (02:30 → 03:00);
//! - a fixed-time job in a fall-back overlap runs once, at the first
//!   occurrence;
//! - a job with a wildcard or stepped hour runs at every real hour (skipped
//!   hours do not exist; a repeated hour runs twice).
//!
//! "Fixed-time" means the hour field has no `*` and no `/` and does not
//! cover all 24 hours (`0-23` counts as `*`). Weekday 7 is Sunday, alone or
//! ending a range (`5-7`).

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// Why a cron expression is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CronError {
    /// Not five fields.
    #[error("`{0}`: a cron expression has 5 fields (minute hour day month weekday), e.g. `0 8 * * mon-fri`")]
    Fields(String),
    #[error("`{field}` is not valid in the {name} field ({min}-{max}, lists, ranges and steps)")]
    /// A field's value is out of range or malformed.
    Field {
        /// The field as written.
        field: String,
        /// Which field.
        name: &'static str,
        /// Its smallest value.
        min: u32,
        /// Its largest value.
        max: u32,
    },
}

/// A parsed cron expression: the set of values of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
    fixed_hour: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parse one field into a bit set over `min..=max`.
fn field(text: &str, name: &'static str, min: u32, max: u32, names: &[&str]) -> Result<u64, CronError> {
    let bad = || CronError::Field { field: text.into(), name, min, max };
    let value = |s: &str| -> Result<u32, CronError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + if name == "month" { 1 } else { 0 });
        }
        let v: u32 = s.parse().map_err(|_| bad())?;
        // 7 is Sunday too, also at the end of a range (`5-7`).
        let top = if name == "weekday" { 7 } else { max };
        if v < min || v > top { Err(bad()) } else { Ok(v) }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(bad)?),
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` means from 5 to the end in steps of 15.
                None if part.contains('/') => (value(r)?, max),
                None => (value(r)?, value(r)?),
            },
        };
        if lo > hi {
            return Err(bad());
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << if name == "weekday" && v == 7 { 0 } else { v };
        }
    }
    Ok(bits)
}

impl std::str::FromStr for Cron {
    type Err = CronError;

    fn from_str(expr: &str) -> Result<Self, CronError> {
        let expanded = match expr.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(CronError::Fields(expr.into()));
        }
        Ok(Cron {
            minutes: field(f[0], "minute", 0, 59, &[])?,
            hours: field(f[1], "hour", 0, 23, &[])? as u32,
            days: field(f[2], "day-of-month", 1, 31, &[])? as u32,
            months: field(f[3], "month", 1, 12, &MONTHS)? as u16,
            weekdays: field(f[4], "weekday", 0, 6, &WEEKDAYS)? as u8,
            days_star: matches!(f[2], "*" | "?"),
            weekdays_star: matches!(f[4], "*" | "?"),
            // A range covering every hour is `*` for daylight saving too.
            fixed_hour: !f[1].contains(['*', '/']) && field(f[1], "hour", 0, 23, &[])? != (1 << 24) - 1,
        })
    }
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The instants a local time stands for under the DST rule.
    fn instants(&self, tz: &TimeZone, local: DateTime) -> Vec<Timestamp> {
        let at = |offset: jiff::tz::Offset| offset.to_timestamp(local).ok();
        match tz.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => at(offset).into_iter().collect(),
            // The transition is the first instant after this local time read
            // with the later offset.
            AmbiguousOffset::Gap { after, .. } if self.fixed_hour => at(after)
                .and_then(|t| tz.following(t).next())
                .map(|transition| transition.timestamp())
                .into_iter()
                .collect(),
            AmbiguousOffset::Gap { .. } => vec![],
            AmbiguousOffset::Fold { before, .. } if self.fixed_hour => at(before).into_iter().collect(),
            AmbiguousOffset::Fold { before, after } => at(before).into_iter().chain(at(after)).collect(),
        }
    }

    /// The first fire time strictly after `after`, within eight years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut date = after.to_zoned(tz.clone()).date();
        let last = date.checked_add(8.years()).ok()?;
        while date <= last {
            if self.months & (1 << date.month()) != 0 && self.day_matches(date) {
                for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for minute in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                        let local = date.at(hour as i8, minute as i8, 0, 0);
                        if let Some(t) = self.instants(tz, local).into_iter().find(|t| *t > after) {
                            return Some(t);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let cron: Cron = expr.parse().unwrap();
        let tz = TimeZone::get(tz).unwrap();
        let mut t: Timestamp = from.parse().unwrap();
        (0..n)
            .map(|_| {
                t = cron.next_after(t, &tz).unwrap();
                t.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M%:z").to_string()
            })
            .collect()
    }

    #[test]
    fn spring_forward_fixed_time_runs_at_the_end_of_the_gap() {
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
            ["2026-03-28T02:30+01:00", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"]
        );
    }

    #[test]
    fn fall_back_fixed_time_runs_once_at_the_first_occurrence() {
        // croniter 7 fires twice here (02:30+02:00 and 02:30+01:00); we do not.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"]
        );
    }

    #[test]
    fn wildcard_hours_run_at_every_real_hour() {
        assert_eq!(
            next("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 4),
            ["2026-10-25T01:30+02:00", "2026-10-25T02:30+02:00", "2026-10-25T02:30+01:00", "2026-10-25T03:30+01:00"]
        );
        assert_eq!(
            next("30 */1 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2),
            ["2026-03-29T01:30+01:00", "2026-03-29T03:30+02:00"]
        );
    }

    #[test]
    fn fields_and_errors() {
        assert_eq!(
            next("0 9 * * mon-fri", "UTC", "2026-11-27T10:00:00Z", 2),
            ["2026-11-30T09:00+00:00", "2026-12-01T09:00+00:00"]
        );
        assert_eq!(next("@monthly", "UTC", "2026-01-31T00:00:00Z", 1), ["2026-02-01T00:00+00:00"]);
        assert!(matches!("0 9 * *".parse::<Cron>(), Err(CronError::Fields(_))));
        assert!(matches!("61 * * * *".parse::<Cron>(), Err(CronError::Field { name: "minute", .. })));
        assert!(matches!("0 0 * * 8".parse::<Cron>(), Err(CronError::Field { name: "weekday", .. })));
        assert!("*/0 * * * *".parse::<Cron>().is_err());
    }
}

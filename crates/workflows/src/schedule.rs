//! When a scheduled workflow runs: a cron pattern (five fields, or six with seconds first) in a time
//! zone (an IANA name, else the machine's own), parsed by the `croner` crate.

use chrono::{DateTime, Local, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use mahavishnu_core::{Error, Result};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    zone: Option<chrono_tz::Tz>,
}

impl Schedule {
    /// Parses `pattern` in `timezone` (the machine's own when `None`); `what` names the setting in
    /// errors.
    pub fn parse(pattern: &str, timezone: Option<&str>, what: &str) -> Result<Schedule> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(pattern).map_err(|e| {
            Error::Config(format!(
                "{what}: the schedule `{pattern}` is not a cron pattern ({e}); write five fields \
                 (minute hour day-of-month month day-of-week, e.g. `0 6 * * 1-5`), or six with \
                 seconds first"
            ))
        })?;
        let zone = match timezone {
            None => None,
            Some(name) => Some(name.parse::<chrono_tz::Tz>().map_err(|_| {
                Error::Config(format!(
                    "{what}: unknown time zone `{name}`; use an IANA name such as `Europe/Berlin` \
                     or `UTC`, or leave it out for this machine's own"
                ))
            })?),
        };
        Ok(Schedule { cron, zone })
    }

    /// The first time after `now` that the schedule names; `None` when it names none (a 30th of
    /// February).
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        fn next<Z: TimeZone>(cron: &Cron, now: DateTime<Z>) -> Option<DateTime<Utc>> {
            cron.find_next_occurrence(&now, false)
                .ok()
                .map(|at| at.with_timezone(&Utc))
        }
        match self.zone {
            Some(zone) => next(&self.cron, now.with_timezone(&zone)),
            None => next(&self.cron, now.with_timezone(&Local)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_mornings_in_a_zone_and_every_second() {
        let schedule =
            Schedule::parse("0 6 * * 1-5", Some("Europe/Berlin"), "workflows.x").unwrap();
        // Friday 2026-11-27 12:00 UTC: the next weekday 06:00 in Berlin is Monday 05:00 UTC.
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let next = schedule.next_after(now).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 30, 5, 0, 0).unwrap());
        let every_second = Schedule::parse("* * * * * *", Some("UTC"), "workflows.x").unwrap();
        assert_eq!(
            every_second.next_after(now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 1).unwrap()
        );
    }

    #[test]
    fn bad_patterns_and_zones_say_how_to_write_them() {
        let error = Schedule::parse("every morning", None, "workflows.x")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("workflows.x") && error.contains("0 6 * * 1-5"),
            "{error}"
        );
        let error = Schedule::parse("0 6 * * *", Some("Mars/Olympus"), "workflows.x")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown time zone `Mars/Olympus`"),
            "{error}"
        );
    }
}

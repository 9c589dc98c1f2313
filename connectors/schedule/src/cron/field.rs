//! The plain cron fields: values, `,` lists, `-` ranges, `/` increments, `*`.

use std::collections::BTreeSet;

use crate::ScheduleError;

/// One field's name, bounds and the names it accepts for its values.
pub(crate) struct Field {
    pub name: &'static str,
    pub min: u32,
    pub max: u32,
    /// `names[i]` stands for `min + i` (JAN = 1, SUN = 1).
    pub names: &'static [&'static str],
}

pub(crate) const MINUTES: Field = Field { name: "minutes", min: 0, max: 59, names: &[] };

pub(crate) const HOURS: Field = Field { name: "hours", min: 0, max: 23, names: &[] };

pub(crate) const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[] };

pub(crate) const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
};

/// EventBridge numbers the days of the week from 1 = Sunday (not cron's 0).
pub(crate) const DAY_OF_WEEK: Field =
    Field { name: "day-of-week", min: 1, max: 7, names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] };

pub(crate) const YEAR: Field = Field { name: "year", min: 1970, max: 2199, names: &[] };

impl Field {
    pub fn error(&self, text: &str, expected: impl Into<String>) -> ScheduleError {
        ScheduleError::CronField { field: self.name, text: text.to_string(), expected: expected.into() }
    }

    fn bounds(&self) -> String {
        match (self.names.first(), self.names.last()) {
            (Some(first), Some(last)) => {
                format!("{}-{} or {first}-{last}", self.min, self.max)
            }
            _ => format!("{}-{}", self.min, self.max),
        }
    }

    /// One value: a number within bounds or one of the field's names
    /// (case-insensitive, as EventBridge accepts `mon` like `MON`).
    pub fn value(&self, field_text: &str, token: &str) -> Result<u32, ScheduleError> {
        let found = if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            token.parse::<u32>().ok()
        } else {
            self.names
                .iter()
                .position(|name| name.eq_ignore_ascii_case(token))
                .and_then(|i| u32::try_from(i).ok())
                .map(|i| self.min + i)
        };
        match found {
            Some(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(self.error(field_text, format!("values {}, got {token:?}", self.bounds()))),
        }
    }

    /// Every value the field's text allows.
    pub fn parse(&self, text: &str) -> Result<BTreeSet<u32>, ScheduleError> {
        let mut values = BTreeSet::new();
        for item in text.split(',') {
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => (base, Some(self.step(text, step)?)),
                None => (item, None),
            };
            let (first, last) = if base == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = base.split_once('-') {
                let (a, b) = (self.value(text, a)?, self.value(text, b)?);
                // Quartz wraps a backwards range around the end of the
                // field; EventBridge does not document it, so refuse it
                // rather than guess.
                if a > b {
                    return Err(self.error(text, format!("a range from low to high, got {base:?}")));
                }
                (a, b)
            } else {
                let a = self.value(text, base)?;
                // `5/15` starts at 5 and runs to the end of the field.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = Some(first);
            while let Some(n) = v.filter(|n| *n <= last) {
                values.insert(n);
                v = n.checked_add(step);
            }
        }
        Ok(values)
    }

    fn step(&self, text: &str, step: &str) -> Result<u32, ScheduleError> {
        match step.parse::<u32>() {
            Ok(n) if n >= 1 && step.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(self.error(text, format!("a positive increment after /, got {step:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(field: &Field, text: &str) -> Vec<u32> {
        field.parse(text).unwrap().into_iter().collect()
    }

    #[test]
    fn values_lists_ranges_and_increments() {
        assert_eq!(set(&MINUTES, "5"), [5]);
        assert_eq!(set(&MINUTES, "0/15"), [0, 15, 30, 45]);
        assert_eq!(set(&MINUTES, "1/10"), [1, 11, 21, 31, 41, 51]);
        assert_eq!(set(&MINUTES, "*/20"), [0, 20, 40]);
        assert_eq!(set(&HOURS, "8-17"), (8..=17).collect::<Vec<_>>());
        assert_eq!(set(&HOURS, "0-10/5,23"), [0, 5, 10, 23]);
        assert_eq!(set(&HOURS, "*").len(), 24);
        assert_eq!(set(&YEAR, "2026-2030/2"), [2026, 2028, 2030]);
        // An increment past the end of the field leaves only the start.
        assert_eq!(set(&YEAR, "2199/4294967295"), [2199]);
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(set(&MONTH, "JAN,mar,Dec"), [1, 3, 12]);
        assert_eq!(set(&MONTH, "JUN-AUG"), [6, 7, 8]);
        assert_eq!(set(&DAY_OF_WEEK, "MON-FRI"), [2, 3, 4, 5, 6]);
        assert_eq!(set(&DAY_OF_WEEK, "sun,7"), [1, 7]);
    }

    #[test]
    fn refuses_what_is_out_of_bounds_or_malformed() {
        for (field, text) in [
            (&MINUTES, "60"),
            (&MINUTES, "0/0"),
            (&MINUTES, "0/x"),
            (&MINUTES, "1,,2"),
            (&MINUTES, "-1"),
            (&HOURS, "24"),
            (&HOURS, "17-8"),
            (&DAY_OF_MONTH, "0"),
            (&MONTH, "JANUARY"),
            (&MONTH, "13"),
            (&DAY_OF_WEEK, "0"),
            (&DAY_OF_WEEK, "8"),
            (&YEAR, "1969"),
            (&YEAR, "2200"),
            (&MINUTES, "MON"),
        ] {
            assert!(field.parse(text).is_err(), "{} {text:?} was accepted", field.name);
        }
    }

    #[test]
    fn error_names_the_field_and_the_bounds() {
        let err = MONTH.parse("FOO").unwrap_err().to_string();
        assert_eq!(err, r#"invalid month field "FOO": expected values 1-12 or JAN-DEC, got "FOO""#);
    }
}

//! Settings read from the environment the same way by every crate: trimmed,
//! blank as unset, refused with their name, value and what to set instead.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{name} is not set: {why}")]
    Required {
        name: &'static str,
        why: &'static str,
    },
    #[error("{name}={value:?} is not valid: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: String,
    },
}

/// Where settings come from: the process environment, or a map in tests.
pub struct Env<F> {
    lookup: F,
}

pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env::new(|name: &str| std::env::var(name).ok())
}

/// Settings read one way, from the process environment or, in tests, a map.
pub trait FromEnv: Sized {
    type Error;

    fn read(env: &Env<impl Fn(&str) -> Option<String>>) -> Result<Self, Self::Error>;

    fn from_env() -> Result<Self, Self::Error> {
        Self::read(&process_env())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Self::Error> {
        Self::read(&Env::new(lookup))
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The value, trimmed; `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    pub fn required(&self, name: &'static str, why: &'static str) -> Result<String, EnvError> {
        self.optional(name).ok_or(EnvError::Required { name, why })
    }

    /// The value parsed, `None` when unset; `expected` says what a valid one is.
    pub fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        expected: &str,
    ) -> Result<Option<T>, EnvError> {
        self.optional(name)
            .map(|value| {
                value.parse().map_err(|_| EnvError::Invalid {
                    name,
                    value,
                    expected: expected.to_owned(),
                })
            })
            .transpose()
    }

    /// A number within `bounds`, or `default` when unset; `what` names its unit.
    pub fn bounded<T>(
        &self,
        name: &'static str,
        default: T,
        bounds: RangeInclusive<T>,
        what: &str,
    ) -> Result<T, EnvError>
    where
        T: FromStr + PartialOrd + Display,
    {
        let value = self.optional(name);
        value.map_or(Ok(default), |value| within(name, value, &bounds, what))
    }

    pub fn required_bounded<T>(
        &self,
        name: &'static str,
        bounds: RangeInclusive<T>,
        what: &str,
        why: &'static str,
    ) -> Result<T, EnvError>
    where
        T: FromStr + PartialOrd + Display,
    {
        within(name, self.required(name, why)?, &bounds, what)
    }
}

fn within<T>(
    name: &'static str,
    value: String,
    bounds: &RangeInclusive<T>,
    what: &str,
) -> Result<T, EnvError>
where
    T: FromStr + PartialOrd + Display,
{
    match value.parse::<T>() {
        Ok(number) if bounds.contains(&number) => Ok(number),
        _ => Err(EnvError::Invalid {
            name,
            value,
            expected: format!("{what}, {} to {}", bounds.start(), bounds.end()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::new(move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn a_blank_value_counts_as_unset_and_a_value_is_trimmed() {
        let env = env(&[("BLANK", "  "), ("PADDED", " 42 ")]);
        assert_eq!(env.optional("BLANK"), None);
        assert_eq!(env.optional("UNSET"), None);
        assert_eq!(env.optional("PADDED").as_deref(), Some("42"));
        assert_eq!(
            env.bounded("PADDED", 0_u32, 1..=100, "a whole number"),
            Ok(42)
        );
    }

    #[test]
    fn a_missing_required_value_says_what_to_set() {
        let err = env(&[("QUEUE_URL", "")])
            .required("QUEUE_URL", "set it to the orders queue")
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "QUEUE_URL is not set: set it to the orders queue"
        );
    }

    #[test]
    fn a_number_outside_its_bounds_is_refused_with_the_bounds_it_promised() {
        let env = env(&[("ZERO", "0"), ("WORD", "ten"), ("BIG", "901")]);
        for name in ["ZERO", "WORD", "BIG"] {
            let err = env
                .bounded(name, 60_u64, 1..=900, "whole seconds")
                .expect_err("out of bounds");
            assert!(
                err.to_string()
                    .ends_with("is not valid: whole seconds, 1 to 900"),
                "{err}"
            );
        }
        assert_eq!(
            env.bounded("UNSET", 60_u64, 1..=900, "whole seconds"),
            Ok(60)
        );
    }

    #[test]
    fn a_required_number_must_be_set_and_within_its_bounds() {
        let env = env(&[("COUNT", "6"), ("ONE", "1")]);
        let read = |name| env.required_bounded(name, 2_u32..=1000, "a count", "set it");
        assert_eq!(read("COUNT"), Ok(6));
        assert!(matches!(read("UNSET"), Err(EnvError::Required { .. })));
        assert!(
            read("ONE")
                .expect_err("below")
                .to_string()
                .ends_with("a count, 2 to 1000")
        );
    }

    #[test]
    fn a_value_that_does_not_parse_is_refused_by_name() {
        let err = env(&[("BIND_ADDR", "localhost")])
            .parsed::<std::net::SocketAddr>(
                "BIND_ADDR",
                "an IP address and port such as 0.0.0.0:8080",
            )
            .expect_err("not an address");
        assert_eq!(
            err,
            EnvError::Invalid {
                name: "BIND_ADDR",
                value: "localhost".into(),
                expected: "an IP address and port such as 0.0.0.0:8080".into()
            }
        );
    }
}

//! `Secret`: a string that is never printed. Config values such as provider
//! keys and the master key travel in structs that derive `Debug`; wrapping
//! them here keeps them out of any `{:?}` and out of the log, and wipes the
//! bytes when the value is dropped.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The value itself, for the one place that must send or decode it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The trimmed value, or `None` when it is blank: an environment
    /// variable set to "" means "no key", not an empty key.
    pub fn non_blank(&self) -> Option<&str> {
        Some(self.0.trim()).filter(|s| !s.is_empty())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

/// For clap, which parses flags and environment variables through `FromStr`.
impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Secret, Infallible> {
        Ok(Secret::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from("gsk_live_value_1234");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret([redacted]))");
        assert_eq!(s.expose(), "gsk_live_value_1234");
    }

    #[test]
    fn blank_values_count_as_absent() {
        assert_eq!(Secret::from("  ").non_blank(), None);
        assert_eq!(Secret::from(" k ").non_blank(), Some("k"));
    }
}

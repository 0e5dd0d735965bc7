//! Names of VPs and templates: `[a-z0-9-]`, 1 to 32 characters.
//!
//! The same rule covers both because both become directory names, cgroup
//! names and D-Bus strings; keeping it strict means no quoting anywhere.

use std::fmt;

pub const MAX_NAME_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{kind} name is empty: give a name of 1 to {MAX_NAME_LEN} characters from a-z, 0-9 and '-'"
    )]
    Empty { kind: &'static str },
    #[error("{kind} name '{name}' is {len} characters long: use at most {MAX_NAME_LEN} characters from a-z, 0-9 and '-'")]
    TooLong {
        kind: &'static str,
        name: String,
        len: usize,
    },
    #[error("{kind} name '{name}' contains {bad:?}: use only a-z, 0-9 and '-' (lower case), for example 'work' or 'phone-2'")]
    BadChar {
        kind: &'static str,
        name: String,
        bad: char,
    },
}

/// Check a VP or template name; `kind` ("VP" or "template") goes into the message.
pub fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            kind,
            name: name.to_string(),
            len,
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadChar {
            kind,
            name: name.to_string(),
            bad,
        });
    }
    Ok(())
}

/// A validated VP name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VpName(String);

impl VpName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate("VP", name)?;
        Ok(Self(name.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["a", "work", "phone-2", "0", "-", &"a".repeat(32)] {
            assert!(validate("VP", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_with_a_message_naming_the_problem() {
        let e = validate("VP", "").unwrap_err();
        assert!(e.to_string().contains("empty"));
        let e = validate("VP", &"a".repeat(33)).unwrap_err();
        assert!(e.to_string().contains("33 characters"), "{e}");
        let e = validate("VP", "Work").unwrap_err();
        assert!(e.to_string().contains("'W'"), "{e}");
        for bad in ["a b", "a/b", "a.b", "é", "a_b", "../x"] {
            assert!(validate("template", bad).is_err(), "{bad}");
        }
        // Multibyte characters count as characters, not bytes.
        assert!(matches!(
            validate("VP", "ééé"),
            Err(NameError::BadChar { .. })
        ));
    }
}

//! logcat's filter specs: `TAG:PRIO` (show TAG at PRIO and above), `*:PRIO`
//! (every other tag), `-s` (= `*:S` first); a tag without `:PRIO` means
//! `TAG:V`. Without a spec, everything is shown (`*:V`), or what
//! `ANDROID_LOG_TAGS` says.

use crate::{parse_prio, VERBOSE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: u8,
    tags: Vec<(String, u8)>,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            default: VERBOSE,
            tags: Vec::new(),
        }
    }
}

impl Filter {
    /// Add specs (`TAG:PRIO ...`); an error names the bad one.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        for s in spec.split_whitespace() {
            let (tag, prio) = match s.rsplit_once(':') {
                Some((t, p)) => (
                    t,
                    parse_prio(p).ok_or_else(|| {
                        format!("bad priority in filter spec '{s}': use V, D, I, W, E, F or S")
                    })?,
                ),
                None => (s, VERBOSE),
            };
            if tag.is_empty() {
                return Err(format!(
                    "bad filter spec '{s}': write TAG:PRIO, e.g. MyApp:D *:S"
                ));
            }
            if tag == "*" {
                self.default = prio;
            } else {
                self.tags.retain(|(t, _)| t != tag);
                self.tags.push((tag.to_string(), prio));
            }
        }
        Ok(())
    }

    /// `-s`: silence every tag not named.
    pub fn silence_others(&mut self) {
        self.default = crate::SILENT;
    }

    pub fn shows(&self, tag: &str, prio: u8) -> bool {
        let min = self
            .tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, p)| *p)
            .unwrap_or(self.default);
        prio >= min && min < crate::SILENT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEBUG, ERROR, INFO, WARN};

    #[test]
    fn specs_filter_as_logcat_does() {
        let mut f = Filter::default();
        assert!(f.shows("any", VERBOSE));
        f.add("*:W").unwrap();
        assert!(!f.shows("any", INFO));
        assert!(f.shows("any", ERROR));
        f.add("MyApp:D").unwrap();
        assert!(f.shows("MyApp", DEBUG));
        assert!(!f.shows("MyApp", VERBOSE));
        let mut s = Filter::default();
        s.silence_others();
        s.add("Only").unwrap();
        assert!(s.shows("Only", VERBOSE));
        assert!(!s.shows("Other", ERROR));
        assert!(s.add("x:Q").unwrap_err().contains("bad priority"));
        let mut w = Filter::default();
        w.add("Tag:W").unwrap();
        assert!(w.shows("Tag", WARN) && !w.shows("Tag", INFO));
    }
}

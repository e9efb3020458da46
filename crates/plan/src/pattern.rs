//! Regular expressions inside the Plan: compared and serialized by their text.

use serde::{Serialize, Serializer};

/// A compiled regular expression (ingress-nginx regex paths, canary header patterns).
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `text`; the size limit keeps a hostile pattern from eating memory.
    pub fn new(text: &str) -> Result<Self, regex::Error> {
        regex::RegexBuilder::new(text).size_limit(1 << 20).build().map(Pattern)
    }

    /// Whether `text` matches anywhere (anchor the pattern to match it whole).
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

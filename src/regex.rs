//! Detection-ID patterns in Python `re` syntax (what Panther users write), look-around included.
//!
//! fancy-regex runs plain patterns on the `regex` crate and falls back to backtracking only for
//! look-around and backreferences; the backtracking is bounded so a pathological pattern returns an
//! error (the caller keeps the alert) instead of hanging the daemon.

use std::fmt;

/// Backtracking steps allowed per match attempt.
const BACKTRACK_LIMIT: usize = 1_000_000;

#[derive(Clone)]
pub struct DetectionRegex {
    source: String,
    re: fancy_regex::Regex,
}

impl DetectionRegex {
    pub fn new(pattern: &str) -> Result<DetectionRegex, String> {
        let re = fancy_regex::RegexBuilder::new(&python_to_rust(pattern))
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(DetectionRegex { source: pattern.to_owned(), re })
    }

    /// Searches (not anchored, like Python's `re.search`).
    pub fn is_match(&self, text: &str) -> Result<bool, String> {
        self.re.is_match(text).map_err(|e| e.to_string())
    }

    /// The pattern as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for DetectionRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

/// The one spelling Python has that Rust's engines read differently: `\Z` (end of text) is `\z`.
fn python_to_rust(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('Z') => out.push_str("\\z"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        DetectionRegex::new(p).unwrap().is_match(t).unwrap()
    }

    #[test]
    fn python_syntax_with_look_around_is_searched_not_anchored() {
        assert!(!m("^(?!AWS).*", "AWS.CloudTrail.RootLogin"));
        assert!(m("^(?!AWS).*", "Okta.BruteForce"));
        assert!(m("Root", "AWS.CloudTrail.RootLogin"), "search, not match");
        assert!(m(r"(?<=AWS\.)Cloud", "AWS.CloudTrail"));
        assert!(m(r"(?P<src>AWS)\.(?P=src)?", "AWS.X"));
        assert!(m(r"Login\Z", "AWS.RootLogin"));
        assert!(!m(r"Login\Z", "AWS.RootLogin.x"));
    }

    #[test]
    fn a_bad_pattern_is_an_error_and_a_runaway_one_errors_at_match_time() {
        assert!(DetectionRegex::new("(unclosed").is_err());
        let re = DetectionRegex::new(r"^(?=.)(a+)+$").unwrap();
        let text = format!("{}b", "a".repeat(40));
        assert!(re.is_match(&text).is_err(), "the backtracking limit must end the search");
    }
}

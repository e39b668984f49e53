//! Subjects and patterns: the NATS subject grammar of SPEC section 2.
//!
//! A subject is 1..=32 tokens; a token is a non-empty string of at most 255
//! bytes without `.`, `*`, `>` or whitespace. Subjects are stored in their
//! dotted form (`user.A.added`), which keeps every subject starting with the
//! tokens `user.A` inside the string range `["user.A.", "user.A/")`: the
//! subject indexes rely on that.

use std::fmt;

use crate::error::{Error, Result};

/// Most tokens a subject or pattern may have.
pub const MAX_TOKENS: usize = 32;
/// Most bytes a token may have.
pub const MAX_TOKEN_BYTES: usize = 255;

/// A validated subject, kept in dotted form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// Parses the dotted form, e.g. `"user.A.added"`.
    pub fn parse(dotted: &str) -> Result<Self> {
        check_tokens(dotted, dotted.split('.'), false)?;
        Ok(Subject(dotted.to_owned()))
    }

    /// Builds a subject from its tokens, e.g. `["user", "A", "added"]`.
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Result<Self> {
        let dotted = join(tokens);
        check_tokens(&dotted, tokens.iter().map(AsRef::as_ref), false)?;
        Ok(Subject(dotted))
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tokens, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One token of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternToken {
    /// Matches this token only.
    Literal(String),
    /// `*`: matches exactly one token.
    One,
    /// `>`: matches one or more trailing tokens; only ever last.
    Rest,
}

/// A validated pattern: a subject whose tokens may be `*` or (last) `>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    tokens: Vec<PatternToken>,
    dotted: String,
}

/// Where a pattern's matches lie in the order of dotted subjects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Only this dotted subject can match (a pattern without wildcards).
    Exact(String),
    /// Only subjects starting with this dotted prefix, which ends in `.`, can match.
    Prefix(String),
}

impl KeyRange {
    /// Lower bound (inclusive) and upper bound (exclusive, except for `Exact`,
    /// where both bounds are the subject itself).
    pub fn bounds(&self) -> (String, String) {
        match self {
            KeyRange::Exact(s) => (s.clone(), s.clone()),
            KeyRange::Prefix(p) => {
                // `/` is the character right after `.`: every string starting with
                // "p." sorts in ["p.", "p/") and nothing else does.
                let mut upper = p[..p.len() - 1].to_owned();
                upper.push('/');
                (p.clone(), upper)
            }
        }
    }

    /// Whether a dotted subject lies in this range.
    pub fn contains(&self, dotted: &str) -> bool {
        match self {
            KeyRange::Exact(s) => s == dotted,
            KeyRange::Prefix(p) => dotted.starts_with(p.as_str()),
        }
    }

    /// The aggregates whose own actions (see [`owns`]) can lie in this
    /// range of actions: every leading part of the range's literal tokens,
    /// and for a prefix also every aggregate below it. For `user.u7.>`:
    /// `user`, `user.u7` and `user.u7.…`.
    pub fn owners(&self) -> Vec<KeyRange> {
        let literal = match self {
            KeyRange::Exact(s) => s.as_str(),
            KeyRange::Prefix(p) => &p[..p.len() - 1],
        };
        let mut owners: Vec<KeyRange> = literal
            .match_indices('.')
            .map(|(i, _)| KeyRange::Exact(literal[..i].to_owned()))
            .collect();
        owners.push(KeyRange::Exact(literal.to_owned()));
        if let KeyRange::Prefix(_) = self {
            owners.push(self.clone());
        }
        owners
    }
}

/// Whether `action` starts with the tokens of `aggregate` (SPEC section 2's
/// convention): such an action is found through its aggregate, and only
/// the others need the `actions` index.
pub fn owns(aggregate: &str, action: &str) -> bool {
    action
        .strip_prefix(aggregate)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Pattern {
    /// Parses the dotted form, e.g. `"user.*.added"` or `"user.>"`.
    pub fn parse(dotted: &str) -> Result<Self> {
        let parts: Vec<&str> = dotted.split('.').collect();
        Self::build(dotted, &parts)
    }

    /// Builds a pattern from tokens, e.g. `["user", "*", "added"]`.
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Result<Self> {
        let dotted = join(tokens);
        let parts: Vec<&str> = tokens.iter().map(AsRef::as_ref).collect();
        Self::build(&dotted, &parts)
    }

    fn build(dotted: &str, parts: &[&str]) -> Result<Self> {
        check_tokens(dotted, parts.iter().copied(), true)?;
        let tokens = parts
            .iter()
            .map(|t| match *t {
                "*" => PatternToken::One,
                ">" => PatternToken::Rest,
                t => PatternToken::Literal(t.to_owned()),
            })
            .collect();
        Ok(Pattern {
            tokens,
            dotted: dotted.to_owned(),
        })
    }

    /// The pattern's tokens.
    pub fn tokens(&self) -> &[PatternToken] {
        &self.tokens
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.dotted
    }

    /// Whether the subject (dotted form) matches: `*` one token, `>` one or
    /// more trailing tokens, no implicit prefix match.
    pub fn matches(&self, dotted: &str) -> bool {
        let mut subject = dotted.split('.');
        for token in &self.tokens {
            match (token, subject.next()) {
                (PatternToken::Rest, Some(_)) => return true,
                (PatternToken::One, Some(_)) => {}
                (PatternToken::Literal(l), Some(s)) if l == s => {}
                _ => return false,
            }
        }
        subject.next().is_none()
    }

    /// Number of literal tokens before the first wildcard.
    pub fn literal_prefix_len(&self) -> usize {
        self.tokens
            .iter()
            .take_while(|t| matches!(t, PatternToken::Literal(_)))
            .count()
    }

    /// The range of dotted subjects that can match, or `None` when the
    /// pattern starts with a wildcard (every subject can).
    pub fn key_range(&self) -> Option<KeyRange> {
        let literal = self.literal_prefix_len();
        if literal == self.tokens.len() {
            return Some(KeyRange::Exact(self.dotted.clone()));
        }
        if literal == 0 {
            return None;
        }
        let prefix: Vec<&str> = self.dotted.split('.').take(literal).collect();
        let mut p = prefix.join(".");
        p.push('.');
        Some(KeyRange::Prefix(p))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dotted)
    }
}

fn join<S: AsRef<str>>(tokens: &[S]) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(t.as_ref());
    }
    out
}

fn check_tokens<'a>(
    shown: &str,
    tokens: impl Iterator<Item = &'a str>,
    wildcards: bool,
) -> Result<()> {
    let mut count = 0;
    let mut after_rest = false;
    for token in tokens {
        count += 1;
        if after_rest {
            return Err(Error::subject(shown, "`>` may only be the last token"));
        }
        if token.is_empty() {
            return Err(Error::subject(shown, "empty token"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::subject(
                shown,
                format!("token longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        if wildcards && (token == "*" || token == ">") {
            after_rest = token == ">";
            continue;
        }
        if let Some(c) = token
            .chars()
            .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace())
        {
            let reason = match c {
                '*' | '>' if wildcards => format!("`{c}` must be a whole token"),
                '*' | '>' => format!("wildcard `{c}` is not allowed here"),
                '.' => "token contains `.`".to_owned(),
                _ => format!("token contains whitespace {c:?}"),
            };
            return Err(Error::subject(shown, reason));
        }
    }
    if count == 0 {
        return Err(Error::subject(shown, "a subject needs at least one token"));
    }
    if count > MAX_TOKENS {
        return Err(Error::subject(
            shown,
            format!("{count} tokens, at most {MAX_TOKENS} allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subjects() {
        assert_eq!(
            Subject::parse("user.A.added").unwrap().as_str(),
            "user.A.added"
        );
        assert_eq!(
            Subject::from_tokens(&["user", "A"]).unwrap().as_str(),
            "user.A"
        );
        for bad in [
            "", "user..A", ".user", "user.", "us er", "user.*", "user.>", "a\tb", "a*b",
        ] {
            let err = Subject::parse(bad).unwrap_err();
            assert_eq!(err.code(), "INVALID_SUBJECT", "{bad:?}");
        }
        assert!(Subject::from_tokens(&["user", "A.B"]).is_err());
        assert!(Subject::from_tokens::<&str>(&[]).is_err());
        let long = "x".repeat(256);
        assert!(Subject::parse(&long).is_err());
        assert!(Subject::parse(&"x".repeat(255)).is_ok());
        let many = vec!["t"; 33];
        assert!(Subject::from_tokens(&many).is_err());
        assert!(Subject::from_tokens(&many[..32]).is_ok());
    }

    #[test]
    fn parses_patterns() {
        assert!(Pattern::parse("user.*.added").is_ok());
        assert!(Pattern::parse(">").is_ok());
        assert!(Pattern::parse("user.>.x").is_err());
        assert!(Pattern::parse("user.a*").is_err());
        assert!(Pattern::parse("user.").is_err());
    }

    #[test]
    fn matches_like_nats() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("user.A.>").matches("user.A.added"));
        assert!(p("user.A.>").matches("user.A.email.changed"));
        assert!(!p("user.A.>").matches("user.A"));
        assert!(p("user.*.added").matches("user.B.added"));
        assert!(!p("user.*.added").matches("user.B.C.added"));
        assert!(
            !p("user.A").matches("user.A.added"),
            "no implicit prefix match"
        );
        assert!(p(">").matches("x"));
        assert!(p("*").matches("x"));
        assert!(!p("*").matches("x.y"));
    }

    #[test]
    fn key_ranges() {
        let p = |s: &str| Pattern::parse(s).unwrap().key_range();
        assert_eq!(p("user.A"), Some(KeyRange::Exact("user.A".into())));
        assert_eq!(p("user.*.added"), Some(KeyRange::Prefix("user.".into())));
        assert_eq!(p("user.u7.>"), Some(KeyRange::Prefix("user.u7.".into())));
        assert_eq!(p("*.A"), None);
        assert_eq!(
            KeyRange::Prefix("user.u7.".into()).bounds(),
            ("user.u7.".into(), "user.u7/".into())
        );
    }

    #[test]
    fn owners_of_action_ranges() {
        let exact = |s: &str| KeyRange::Exact(s.into());
        assert_eq!(
            KeyRange::Prefix("user.u7.".into()).owners(),
            [
                exact("user"),
                exact("user.u7"),
                KeyRange::Prefix("user.u7.".into())
            ]
        );
        assert_eq!(
            exact("user.u7.added").owners(),
            [exact("user"), exact("user.u7"), exact("user.u7.added")]
        );
        assert!(owns("user.u7", "user.u7.added"));
        assert!(owns("user.u7", "user.u7"));
        assert!(!owns("user.u7", "user.u70.added"));
        assert!(!owns("user.u7", "team.t1.joined"));
    }
}

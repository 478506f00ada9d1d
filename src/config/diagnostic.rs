//! What check-config says about a file: one [`Diagnostic`] per problem, with
//! its line and column and a fix-it hint. Loading and validation both report
//! through a [`Collector`]; this file is shared by them so that neither has
//! to import the other.

use std::collections::BTreeSet;
use std::fmt;

use super::yaml::{Mark, Node};

/// One problem in a config file, printed as `FILE:LINE:COL: what is wrong — how to fix it`.
///
/// It exists so that every problem names its place in the file and says what
/// to do about it: the person reading it is at a line, not at a debugger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)?;
        if !self.hint.is_empty() {
            write!(f, " — {}", self.hint)?;
        }
        Ok(())
    }
}

/// Everything wrong with one file. Non-empty by construction.
///
/// A config is rejected with all of its problems at once, so an engineer fixes
/// a file in one pass instead of one error per restart.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects diagnostics with locations taken from the parsed tree.
///
/// Checks name the place of a problem by its path of keys (`["mqtt", "port"]`);
/// the collector turns that into a line and column, so that no check has to
/// carry marks around.
pub(crate) struct Collector<'a> {
    file: String,
    root: &'a Node,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub fn new(file: String, root: &'a Node) -> Self {
        Collector { file, root, diags: Vec::new() }
    }

    pub fn at_mark(&mut self, mark: Mark, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: mark.line,
            col: mark.col,
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Report at the deepest node of `path` that exists, so a missing key is
    /// reported at the map that should hold it.
    pub fn at(&mut self, path: &[&str], message: impl Into<String>, hint: impl Into<String>) {
        let mark = self.mark_of(path);
        self.at_mark(mark, message, hint);
    }

    pub fn mark_of(&self, path: &[&str]) -> Mark {
        let mut node = self.root;
        for seg in path {
            match node.path(&[seg]) {
                Some(next) => node = next,
                None => break,
            }
        }
        node.mark
    }
}

/// Names of entries that failed to deserialize: references to them are not
/// reported again as "unknown", which would only be noise.
///
/// Loading fills it, validation reads it; it lives here so that neither of
/// them depends on the other.
#[derive(Default)]
pub(crate) struct Broken {
    pub cameras: BTreeSet<String>,
    pub models: BTreeSet<String>,
    pub devices: BTreeSet<String>,
    pub outputs: BTreeSet<String>,
    pub points: BTreeSet<String>,
    pub result_blocks: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
}

/// A fix-it hint for serde's own messages, which say what is wrong but not what to do.
pub(crate) fn hint_for(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        if let Some(near) = misspelt(message) {
            return format!("did you mean `{near}`?");
        }
        // serde: "..., expected one of `a`, `b`, `c`" / "..., expected `a` or `b`" / "there are no fields".
        if let Some(start) = message.find("expected one of ") {
            return format!("use one of: {}", &message[start + 16..]);
        }
        if let Some(start) = message.find("expected ") {
            return format!("use {}", &message[start + 9..]);
        }
        return "remove it: this entry takes no further keys".into();
    }
    if message.starts_with("missing field") {
        return "add it: it has no default".into();
    }
    if message.contains("size `") {
        return "sizes look like `500 MB`, `2 GB` or `1.5 GiB`".into();
    }
    if message.contains("no unit") || message.contains("unknown unit") || message.contains("duration") {
        return "durations look like `80ms`, `1.5s` or `2m`".into();
    }
    if message.contains("out of range") {
        return "use a value inside the range given".into();
    }
    if message.starts_with("invalid length") {
        return "give as many values as expected, e.g. `[0.3, 0.7]` for a pair".into();
    }
    if message.starts_with("expected") || message.starts_with("invalid type") {
        return "see firmware-config/linesight.schema.json for the expected form".into();
    }
    String::new()
}

/// The known key or variant nearest to the unknown one in serde's
/// "unknown field `x`, expected one of `a`, `b`" (or "unknown variant ..."),
/// if one is near enough to be what was meant.
fn misspelt(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, expected) = rest.split_once("`, expected ")?;
    // "one of `a`, `b`, `c`" / "`a` or `b`" / "`a`": the names are every other piece between backticks.
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    nearest(word, &known)
}

/// "did you mean" for a misspelt key.
pub(crate) fn suggest(word: &str, known: &[&str]) -> String {
    match nearest(word, known) {
        Some(k) => format!("did you mean `{k}`?"),
        None => format!("known keys here: {}", known.join(", ")),
    }
}

/// The entry of `known` closest to `word`, if it is close enough to be a misspelling of it.
fn nearest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let best = known.iter().map(|k| (levenshtein(word, k), *k)).min();
    best.filter(|(d, k)| *d <= 2.max(k.len() / 3)).map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TOP_LEVEL_KEYS;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("camras", TOP_LEVEL_KEYS), "did you mean `cameras`?");
        assert!(suggest("zzzzzzzz", TOP_LEVEL_KEYS).starts_with("known keys"));
    }

    #[test]
    fn nested_keys_and_variants_get_the_nearest_name() {
        let fields = "unknown field `timout`, expected one of `tcp`, `rtu`, `unit`, `timeout`";
        assert_eq!(hint_for(fields), "did you mean `timeout`?");
        let far = "unknown field `zzzzzzzz`, expected one of `tcp`, `rtu`, `unit`, `timeout`";
        assert_eq!(hint_for(far), "use one of: `tcp`, `rtu`, `unit`, `timeout`");
        assert_eq!(hint_for("unknown variant `coils`, expected `coil` or `holding-register`"), "did you mean `coil`?");
        assert_eq!(
            hint_for("unknown variant `qqqqqqqqq`, expected `coil` or `holding-register`"),
            "use `coil` or `holding-register`"
        );
        assert_eq!(hint_for("unknown variant `flg`, expected `flag`"), "did you mean `flag`?");
        assert_eq!(hint_for("unknown field `x`, there are no fields"), "remove it: this entry takes no further keys");
    }
}

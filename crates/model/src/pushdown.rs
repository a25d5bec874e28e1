//! Predicate pushdown into the source: the lines the first stage's leading filters would drop
//! are dropped by the source before they are routed, so they are never hashed, encoded, sent,
//! decoded or fed (a job whose first stage keeps three lines in ten sends three in ten).
//!
//! Only built-in `filter` and `filter-regex` steps at the very start of the first stage (a lone
//! filter, or the first steps of a chain) are pushed: they are pure functions of the line, so
//! which task runs them changes nothing, and the first stage still runs them on what reaches
//! it (a line that passed passes again). An executable is never looked into.
//!
//! The source's output stream is then "the lines that pass", numbered in that order: the
//! source's router counts them as its outputs (switch points, reach), and every first-stage
//! replay reads the file through the same filter (`SourceReader`), so both agree on what the
//! n-th output was. The keys stay `NAME:LINE` with the line's number in the file.

use crate::builtin::{BuiltinError, BuiltinSpec};
use crate::spec::{ChainStep, JobSpec, OperatorSpec};
use memchr::memmem::Finder;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The filters pushed into a job's source, as the job names them (sent to the source and to
/// first-stage replays in their assignments, compiled there with [`SourceFilter::compile`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFilter {
    /// The leading `filter`/`filter-regex` steps of the first stage, in order; a line is kept
    /// when it passes every one.
    pub steps: Vec<ChainStep>,
}

impl SourceFilter {
    /// What `spec`'s source may drop: the first stage's leading filters, `None` if it starts
    /// with anything else (then the source sends every line).
    pub fn of(spec: &JobSpec) -> Option<SourceFilter> {
        let first = spec.stages.first()?;
        let steps: Vec<ChainStep> = match &first.operator {
            OperatorSpec::Builtin { name, args } => vec![ChainStep {
                name: name.clone(),
                args: args.clone(),
            }],
            OperatorSpec::Chain { steps } => steps.clone(),
            OperatorSpec::Exec { .. } => return None,
        };
        let steps: Vec<ChainStep> = steps
            .into_iter()
            .take_while(|s| s.name == "filter" || s.name == "filter-regex")
            .collect();
        (!steps.is_empty()).then_some(SourceFilter { steps })
    }

    /// The filter ready to test lines; an error for a step that is not a valid filter (the
    /// leader checked the job, so only a spec that skipped it gets one).
    pub fn compile(&self) -> Result<LineFilter, BuiltinError> {
        let tests = self
            .steps
            .iter()
            .map(|s| match BuiltinSpec::parse(&s.name, &s.args)? {
                BuiltinSpec::Filter(sub) => Ok(Test::Contains {
                    // A needle holding U+FFFD may match where a line's invalid bytes were
                    // replaced: only the line's text can say.
                    bytes_decide: !sub.contains(char::REPLACEMENT_CHARACTER),
                    finder: Box::new(Finder::new(sub.as_bytes()).into_owned()),
                }),
                BuiltinSpec::FilterRegex(re) => Ok(Test::Matches(re)),
                _ => Err(BuiltinError::Unknown(format!("{} (not a filter)", s.name))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let decided_by_bytes = tests.iter().all(|t| {
            matches!(
                t,
                Test::Contains {
                    bytes_decide: true,
                    ..
                }
            )
        });
        Ok(LineFilter {
            tests,
            decided_by_bytes,
        })
    }
}

/// One pushed filter, compiled.
#[derive(Clone, Debug)]
enum Test {
    /// `filter`: the line's text contains the substring.
    Contains {
        finder: Box<Finder<'static>>,
        /// Whether the raw bytes missing the substring proves the text misses it too.
        bytes_decide: bool,
    },
    /// `filter-regex`: the line's text matches.
    Matches(Regex),
}

/// A compiled [`SourceFilter`]: tests a line as the first stage's filters would test it.
#[derive(Clone, Debug)]
pub struct LineFilter {
    tests: Vec<Test>,
    /// See [`LineFilter::decided_by_bytes`].
    decided_by_bytes: bool,
}

impl LineFilter {
    /// `false` when the raw line certainly fails, before its text is made: a substring whose
    /// bytes are not in the line is not in its text either (decoding keeps every valid
    /// sequence's bytes, and puts U+FFFD, which the needle lacks, between them), so most lines
    /// of a selective filter are dropped without a UTF-8 check. `true` says nothing.
    pub fn may_keep(&self, raw: &[u8]) -> bool {
        self.tests.iter().all(|t| match t {
            Test::Contains {
                finder,
                bytes_decide: true,
            } => finder.find(raw).is_some(),
            _ => true,
        })
    }

    /// A substring every kept line holds, whose bytes missing from a line prove the line is
    /// dropped: a reader may search a whole buffer for it and drop the lines before its next
    /// occurrence unseen (a line that holds it is still tested whole).
    pub fn anchor(&self) -> Option<&Finder<'static>> {
        self.tests.iter().find_map(|t| match t {
            Test::Contains {
                finder,
                bytes_decide: true,
            } => Some(&**finder),
            _ => None,
        })
    }

    /// Whether [`LineFilter::may_keep`] decides alone: every test is a substring whose bytes
    /// decide (a needle's bytes in the raw line are its text in the line's text too, since a
    /// needle starts on no continuation byte, which is all an invalid sequence swallows), so
    /// the line's text need not be made to test it.
    pub fn decided_by_bytes(&self) -> bool {
        self.decided_by_bytes
    }

    /// Whether the line, as text (invalid UTF-8 replaced, as the source sends it), passes
    /// every filter: what `filter` and `filter-regex` decide for it.
    pub fn keeps(&self, text: &str) -> bool {
        self.tests.iter().all(|t| match t {
            Test::Contains { finder, .. } => finder.find(text.as_bytes()).is_some(),
            Test::Matches(re) => re.is_match(text),
        })
    }
}

#[cfg(test)]
mod tests;

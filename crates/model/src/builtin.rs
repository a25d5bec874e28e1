//! What a built-in operator is, as a job spec names it: the list of built-ins, their arguments
//! parsed and checked once. Validation and routing read this; the runtime instantiates it.

use regex::Regex;

/// Names of the built-in operators.
pub const NAMES: [&str; 5] = ["filter", "filter-regex", "select", "count-by", "identity"];

/// Built-ins that pass each value through unchanged or not at all: what a chain may put
/// before a keyed step, whose column must mean the same at the chain's start and end.
pub const VALUE_PRESERVING: [&str; 3] = ["filter", "filter-regex", "identity"];

/// A built-in operator with its arguments parsed.
#[derive(Clone, Debug)]
pub enum BuiltinSpec {
    /// Passes tuples whose value contains the substring.
    Filter(String),
    /// Passes tuples whose value matches the regular expression.
    FilterRegex(Regex),
    /// Emits the chosen CSV columns (0-based indices) joined by commas.
    Select(Vec<usize>),
    /// Running count per value of a CSV column (0-based).
    CountBy(usize),
    /// Passes everything.
    Identity,
}

/// What is wrong with a built-in's name or arguments; the message says the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuiltinError {
    /// Not a built-in.
    #[error("unknown built-in {0:?}; built-ins are {list}", list = NAMES.join(", "))]
    Unknown(String),
    /// The wrong number of arguments.
    #[error("{name} takes exactly one argument ({what}), got {got}")]
    Arity {
        /// The built-in.
        name: String,
        /// What its argument is.
        what: &'static str,
        /// How many it got.
        got: usize,
    },
    /// `identity` got arguments.
    #[error("identity takes no arguments")]
    NoArgsExpected,
    /// `select` got no columns.
    #[error("select takes the columns to keep, e.g. \"3,4,5\" or \"3-5\"")]
    NoColumns,
    /// Not a 1-based column number.
    #[error("column {0:?} is not a 1-based column number")]
    BadColumn(String),
    /// A column range whose end comes before its start.
    #[error("column range {0:?} is backwards")]
    BackwardsRange(String),
    /// A regular expression that does not compile.
    #[error("bad regular expression: {0}")]
    BadRegex(String),
}

fn parse_col(s: &str) -> Result<usize, BuiltinError> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n - 1),
        _ => Err(BuiltinError::BadColumn(s.to_string())),
    }
}

/// Parses `3,4,5`, `3-5` or mixes like `1,3-5` into 0-based indices.
pub fn parse_cols(spec: &str) -> Result<Vec<usize>, BuiltinError> {
    let mut cols = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_col(a)?, parse_col(b)?);
                if b < a {
                    return Err(BuiltinError::BackwardsRange(part.to_string()));
                }
                cols.extend(a..=b);
            }
            None => cols.push(parse_col(part)?),
        }
    }
    Ok(cols)
}

impl BuiltinSpec {
    /// Whether `name` is a built-in.
    pub fn is_known(name: &str) -> bool {
        NAMES.contains(&name)
    }

    /// Parses a built-in's name and arguments, or says what is wrong with them.
    pub fn parse(name: &str, args: &[String]) -> Result<BuiltinSpec, BuiltinError> {
        let one = |what: &'static str| -> Result<&String, BuiltinError> {
            match args {
                [a] => Ok(a),
                _ => Err(BuiltinError::Arity {
                    name: name.to_string(),
                    what,
                    got: args.len(),
                }),
            }
        };
        match name {
            "filter" => Ok(BuiltinSpec::Filter(one("a substring")?.clone())),
            "filter-regex" => {
                let re = one("a regular expression")?;
                Regex::new(re)
                    .map(BuiltinSpec::FilterRegex)
                    .map_err(|e| BuiltinError::BadRegex(e.to_string()))
            }
            "select" => {
                if args.is_empty() {
                    return Err(BuiltinError::NoColumns);
                }
                Ok(BuiltinSpec::Select(parse_cols(&args.join(","))?))
            }
            "count-by" => Ok(BuiltinSpec::CountBy(parse_col(one(
                "a 1-based CSV column",
            )?)?)),
            "identity" => {
                if args.is_empty() {
                    Ok(BuiltinSpec::Identity)
                } else {
                    Err(BuiltinError::NoArgsExpected)
                }
            }
            other => Err(BuiltinError::Unknown(other.to_string())),
        }
    }

    /// The CSV column (0-based) a keyed built-in partitions its input by, so that upstream
    /// routing agrees with the operator's own key whatever key the upstream emitted.
    pub fn routing_column(name: &str, args: &[String]) -> Option<usize> {
        if name != "count-by" {
            // Not keyed: no need to parse (a `filter-regex` would compile its expression).
            return None;
        }
        match Self::parse(name, args) {
            Ok(BuiltinSpec::CountBy(c)) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_errors() {
        assert!(BuiltinSpec::parse("count-by", &["0".into()]).is_err());
        assert!(BuiltinSpec::parse("filter-regex", &["(".into()]).is_err());
        assert!(BuiltinSpec::parse("select", &["5-3".into()]).is_err());
        assert!(BuiltinSpec::parse("nope", &[]).is_err());
        assert_eq!(
            BuiltinSpec::routing_column("count-by", &["9".into()]),
            Some(8)
        );
        assert_eq!(parse_cols("1,3-4").unwrap(), vec![0, 2, 3]);
    }
}

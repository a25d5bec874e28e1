//! What a built-in operator is, as a job spec names it: the list of built-ins, their arguments
//! parsed and checked once. Validation and routing read this; the runtime instantiates it.

use regex::Regex;

/// Names of the built-in operators.
pub const NAMES: [&str; 5] = ["filter", "filter-regex", "select", "count-by", "identity"];

/// Built-ins that pass each value through unchanged or not at all: what a chain may put
/// before a keyed step, whose column must mean the same at the chain's start and end.
pub const VALUE_PRESERVING: [&str; 3] = ["filter", "filter-regex", "identity"];

/// The highest column a built-in may name, and the most columns one `select` may keep (more
/// than a spreadsheet has: 16,384). A column is an index into every line, and a `select` or a
/// `count-by` projection makes room for every column up to it, so an unbounded one would let
/// one job spec (`select 1-4000000000`) exhaust the memory of the CLI, the leader and every
/// worker.
pub const MAX_COLUMN: usize = 65_536;

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
    /// A column past [`MAX_COLUMN`], or more columns than that in one `select`.
    #[error("{0:?} goes past the most columns a built-in may name ({MAX_COLUMN})")]
    TooManyColumns(String),
    /// A regular expression that does not compile.
    #[error("bad regular expression: {0}")]
    BadRegex(String),
}

fn parse_col(s: &str) -> Result<usize, BuiltinError> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > MAX_COLUMN => Err(BuiltinError::TooManyColumns(s.to_string())),
        Ok(n) if n >= 1 => Ok(n - 1),
        _ => Err(BuiltinError::BadColumn(s.to_string())),
    }
}

/// Parses `3,4,5`, `3-5` or mixes like `1,3-5` into 0-based indices: at most [`MAX_COLUMN`]
/// of them, each at most that, counted before anything is allocated for them.
pub fn parse_cols(spec: &str) -> Result<Vec<usize>, BuiltinError> {
    let mut cols = Vec::new();
    for part in spec.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (parse_col(a)?, parse_col(b)?),
            None => {
                let c = parse_col(part)?;
                (c, c)
            }
        };
        if b < a {
            return Err(BuiltinError::BackwardsRange(part.to_string()));
        }
        if cols.len() + (b - a + 1) > MAX_COLUMN {
            return Err(BuiltinError::TooManyColumns(spec.to_string()));
        }
        cols.extend(a..=b);
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

    #[test]
    fn columns_are_bounded_before_anything_is_allocated_for_them() {
        let too_many = |r: Result<BuiltinSpec, BuiltinError>| {
            matches!(r, Err(BuiltinError::TooManyColumns(_)))
        };
        let sel = |a: &str| BuiltinSpec::parse("select", &[a.to_string()]);
        assert!(too_many(sel("1-4000000000")));
        assert!(sel("1-99999999999999999999").is_err(), "past any integer");
        assert!(too_many(sel("65537")));
        assert!(too_many(sel("1-65536,1")), "the count is bounded too");
        assert!(too_many(BuiltinSpec::parse("count-by", &["65537".into()])));
        assert_eq!(parse_cols("1-65536").unwrap().len(), MAX_COLUMN);
        assert!(BuiltinSpec::parse("count-by", &["65536".into()]).is_ok());
    }
}

//! What a built-in operator is, as a job spec names it: the list of built-ins, their arguments
//! parsed and checked once. Validation and routing read this; the runtime instantiates it.

use regex::Regex;

/// Names of the built-in operators.
pub const NAMES: [&str; 5] = ["filter", "filter-regex", "select", "count-by", "identity"];

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

fn parse_col(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n - 1),
        _ => Err(format!("column {s:?} is not a 1-based column number")),
    }
}

/// Parses `3,4,5`, `3-5` or mixes like `1,3-5` into 0-based indices.
pub fn parse_cols(spec: &str) -> Result<Vec<usize>, String> {
    let mut cols = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_col(a)?, parse_col(b)?);
                if b < a {
                    return Err(format!("column range {part:?} is backwards"));
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
    pub fn parse(name: &str, args: &[String]) -> Result<BuiltinSpec, String> {
        let one = |what: &str| -> Result<&String, String> {
            match args {
                [a] => Ok(a),
                _ => Err(format!(
                    "{name} takes exactly one argument ({what}), got {}",
                    args.len()
                )),
            }
        };
        match name {
            "filter" => Ok(BuiltinSpec::Filter(one("a substring")?.clone())),
            "filter-regex" => {
                let re = one("a regular expression")?;
                Regex::new(re)
                    .map(BuiltinSpec::FilterRegex)
                    .map_err(|e| format!("bad regular expression: {e}"))
            }
            "select" => {
                if args.is_empty() {
                    return Err(
                        "select takes the columns to keep, e.g. \"3,4,5\" or \"3-5\"".into(),
                    );
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
                    Err("identity takes no arguments".into())
                }
            }
            other => Err(format!(
                "unknown built-in {other:?}; built-ins are {}",
                NAMES.join(", ")
            )),
        }
    }

    /// The CSV column (0-based) a keyed built-in partitions its input by, so that upstream
    /// routing agrees with the operator's own key whatever key the upstream emitted.
    pub fn routing_column(name: &str, args: &[String]) -> Option<usize> {
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

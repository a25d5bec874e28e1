//! Built-in operators. They run inside the worker process on the task's own tokio task, so they
//! are plain synchronous state machines: one input tuple in, zero or more tuples out.

use super::csvline::{push_field, CsvSplitter};
use crate::tuple::Tuple;
use regex::Regex;
use std::collections::HashMap;

const NAMES: [&str; 5] = ["filter", "filter-regex", "select", "count-by", "identity"];

/// A built-in operator instance with its state.
pub enum Builtin {
    /// Passes tuples whose value contains the substring.
    Filter(String),
    /// Passes tuples whose value matches the regular expression.
    FilterRegex(Regex),
    /// Emits the chosen CSV columns (0-based indices) joined by commas.
    Select(Vec<usize>, CsvSplitter),
    /// Running count per value of a CSV column (0-based).
    CountBy {
        /// Column index.
        col: usize,
        /// Counts so far.
        counts: HashMap<String, u64>,
        /// Reused splitter.
        csv: CsvSplitter,
    },
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

impl Builtin {
    /// Whether `name` is a built-in.
    pub fn is_known(name: &str) -> bool {
        NAMES.contains(&name)
    }

    /// Builds the operator, or says what is wrong with its name or arguments.
    pub fn from_spec(name: &str, args: &[String]) -> Result<Builtin, String> {
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
            "filter" => Ok(Builtin::Filter(one("a substring")?.clone())),
            "filter-regex" => {
                let re = one("a regular expression")?;
                Regex::new(re)
                    .map(Builtin::FilterRegex)
                    .map_err(|e| format!("bad regular expression: {e}"))
            }
            "select" => {
                let joined = args.join(",");
                if args.is_empty() {
                    return Err(
                        "select takes the columns to keep, e.g. \"3,4,5\" or \"3-5\"".into(),
                    );
                }
                Ok(Builtin::Select(
                    parse_cols(&joined)?,
                    CsvSplitter::default(),
                ))
            }
            "count-by" => Ok(Builtin::CountBy {
                col: parse_col(one("a 1-based CSV column")?)?,
                counts: HashMap::new(),
                csv: CsvSplitter::default(),
            }),
            "identity" => {
                if args.is_empty() {
                    Ok(Builtin::Identity)
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
        match (name, args) {
            ("count-by", [c]) => parse_col(c).ok(),
            _ => None,
        }
    }

    /// Processes one tuple, appending results to `out`.
    pub fn process(&mut self, t: Tuple, out: &mut Vec<Tuple>) {
        match self {
            Builtin::Filter(sub) => {
                if t.value.contains(sub.as_str()) {
                    out.push(t);
                }
            }
            Builtin::FilterRegex(re) => {
                if re.is_match(&t.value) {
                    out.push(t);
                }
            }
            Builtin::Select(cols, csv) => {
                csv.split(&t.value);
                let mut v = String::with_capacity(t.value.len() / 2);
                for (i, c) in cols.iter().enumerate() {
                    if i > 0 {
                        v.push(',');
                    }
                    push_field(&mut v, csv.field(*c).unwrap_or(""));
                }
                out.push(Tuple {
                    key: t.key,
                    value: v,
                });
            }
            Builtin::CountBy { col, counts, csv } => {
                csv.split(&t.value);
                let k = csv.field(*col).unwrap_or("");
                let n = match counts.get_mut(k) {
                    Some(n) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        counts.insert(k.to_string(), 1);
                        1
                    }
                };
                out.push(Tuple {
                    key: k.to_string(),
                    value: format!("{k},{n}"),
                });
            }
            Builtin::Identity => out.push(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: &mut Builtin, values: &[&str]) -> Vec<Tuple> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            op.process(Tuple::new(format!("f:{i}"), *v), &mut out);
        }
        out
    }

    #[test]
    fn filter_and_select() {
        let mut f = Builtin::from_spec("filter", &["Tele".into()]).unwrap();
        assert_eq!(run(&mut f, &["a,Telespar", "b,wood"]).len(), 1);
        let mut s = Builtin::from_spec("select", &["1,3-4".into()]).unwrap();
        let out = run(&mut s, &[r#"a,b,"c, d",e,f"#]);
        assert_eq!(out[0].value, r#"a,"c, d",e"#);
        assert_eq!(out[0].key, "f:0");
    }

    #[test]
    fn count_by_counts_per_column_value() {
        let mut c = Builtin::from_spec("count-by", &["2".into()]).unwrap();
        let out = run(&mut c, &["1,x", "2,y", "3,x"]);
        let vals: Vec<_> = out.iter().map(|t| t.value.as_str()).collect();
        assert_eq!(vals, ["x,1", "y,1", "x,2"]);
        assert_eq!(out[2].key, "x");
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(Builtin::from_spec("count-by", &["0".into()]).is_err());
        assert!(Builtin::from_spec("filter-regex", &["(".into()]).is_err());
        assert!(Builtin::from_spec("select", &["5-3".into()]).is_err());
        assert!(Builtin::from_spec("nope", &[]).is_err());
        assert_eq!(Builtin::routing_column("count-by", &["9".into()]), Some(8));
    }
}

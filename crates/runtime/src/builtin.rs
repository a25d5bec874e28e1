//! Built-in operators. They run inside the worker process on the task's own tokio task, so they
//! are plain synchronous state machines: one input tuple in, zero or more tuples out.

use crate::model::builtin::{BuiltinError, BuiltinSpec};
use crate::model::csv::{push_field, CsvSplitter};
use crate::model::partition::group_of;
use crate::model::tuple::Tuple;
use regex::Regex;
use std::collections::{BTreeSet, HashMap};

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

impl Builtin {
    /// Builds the operator, or says what is wrong with its name or arguments.
    pub fn from_spec(name: &str, args: &[String]) -> Result<Builtin, BuiltinError> {
        Ok(match BuiltinSpec::parse(name, args)? {
            BuiltinSpec::Filter(s) => Builtin::Filter(s),
            BuiltinSpec::FilterRegex(re) => Builtin::FilterRegex(re),
            BuiltinSpec::Select(cols) => Builtin::Select(cols, CsvSplitter::default()),
            BuiltinSpec::CountBy(col) => Builtin::CountBy {
                col,
                counts: HashMap::new(),
                csv: CsvSplitter::default(),
            },
            BuiltinSpec::Identity => Builtin::Identity,
        })
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
                    value: v.into(),
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
                    key: k.into(),
                    value: format!("{k},{n}").into(),
                });
            }
            Builtin::Identity => out.push(t),
        }
    }

    /// The state of key groups `groups` (they move to another task): every count of a value
    /// in one of them, sorted. Stateless built-ins hold none.
    pub fn export(&self, groups: &BTreeSet<usize>) -> Vec<(String, u64)> {
        let Builtin::CountBy { counts, .. } = self else {
            return Vec::new();
        };
        let mut out: Vec<(String, u64)> = counts
            .iter()
            .filter(|(k, _)| groups.contains(&group_of(k)))
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        out.sort();
        out
    }

    /// Drops the state of key groups `groups` (handed over to another task).
    pub fn forget(&mut self, groups: &BTreeSet<usize>) {
        if let Builtin::CountBy { counts, .. } = self {
            counts.retain(|k, _| !groups.contains(&group_of(k)));
        }
    }

    /// Takes in state another task exported ([`export`](Self::export)): each value's count
    /// replaces whatever this operator held for it.
    pub fn import(&mut self, state: Vec<(String, u64)>) {
        if let Builtin::CountBy { counts, .. } = self {
            counts.extend(state);
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
        let vals: Vec<_> = out.iter().map(|t| &*t.value).collect();
        assert_eq!(vals, ["x,1", "y,1", "x,2"]);
        assert_eq!(out[2].key, "x");
    }

    #[test]
    fn a_count_moves_with_its_group_and_continues_where_it_was() {
        let mut a = Builtin::from_spec("count-by", &["2".into()]).unwrap();
        let mut b = Builtin::from_spec("count-by", &["2".into()]).unwrap();
        run(&mut a, &["1,x", "2,y", "3,x"]);
        let moving: BTreeSet<usize> = [group_of("x")].into();
        let state = a.export(&moving);
        assert_eq!(state, vec![("x".to_string(), 2)]);
        b.import(state);
        let vals: Vec<_> = run(&mut b, &["4,x"]).into_iter().map(|t| t.value).collect();
        assert_eq!(vals, ["x,3"]);
        // Once forgotten the exporter no longer holds it; the other group stayed.
        assert_eq!(a.export(&moving).len(), 1);
        a.forget(&moving);
        assert!(a.export(&moving).is_empty());
        let rest: BTreeSet<usize> = (0..crate::model::groups::KEY_GROUPS).collect();
        assert_eq!(a.export(&rest), vec![("y".to_string(), 1)]);
    }
}

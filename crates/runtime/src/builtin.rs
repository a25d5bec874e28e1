//! Built-in operators. They run inside the worker process on the task's own tokio task, so they
//! are plain synchronous state machines: one input tuple in, zero or more tuples out.

use crate::model::builtin::{BuiltinError, BuiltinSpec};
use crate::model::csv::{push_field, CsvSplitter};
use crate::model::partition::group_of;
use crate::model::spec::OperatorSpec;
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
    /// Built-ins applied in turn inside one task (a job's `chain`): each step's output is the
    /// next step's input. Only the last step keeps state (the job was checked for it), so
    /// state calls go to it.
    Chain(Vec<Builtin>, Relay),
}

/// The two buffers a chain passes one tuple's results through, step to step, kept so a
/// chain allocates nothing per tuple.
#[derive(Default)]
pub struct Relay(Vec<Tuple>, Vec<Tuple>);

impl Builtin {
    /// Builds the operator a stage's spec names, built-in or chain; `None` for an executable,
    /// which is not a built-in. A bad name or argument is an error (the leader checked the
    /// spec, so this is only reached by a spec that skipped it).
    pub fn from_operator(op: &OperatorSpec) -> Option<Result<Builtin, BuiltinError>> {
        match op {
            OperatorSpec::Builtin { name, args } => Some(Builtin::from_spec(name, args)),
            OperatorSpec::Chain { steps } => Some(
                steps
                    .iter()
                    .map(|s| Builtin::from_spec(&s.name, &s.args))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|steps| Builtin::Chain(steps, Relay::default())),
            ),
            OperatorSpec::Exec { .. } => None,
        }
    }

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
                csv.split_upto(&t.value, cols.iter().max().map_or(0, |m| m + 1));
                let mut v = String::with_capacity(t.value.len() / 2);
                for (i, c) in cols.iter().enumerate() {
                    if i > 0 {
                        v.push(',');
                    }
                    push_field(&mut v, csv.field(*c).unwrap_or(""));
                }
                if cols.len() == 1 && v.is_empty() {
                    // One empty field is written `""`, as CSV writers do (Python's csv, and so
                    // the reference): an empty line would be a record of no fields.
                    v.push_str("\"\"");
                }
                out.push(Tuple {
                    key: t.key,
                    value: v.into(),
                });
            }
            Builtin::CountBy { col, counts, csv } => {
                csv.split_upto(&t.value, *col + 1);
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
                // Not `format!`: its machinery costs more than the line it writes.
                let mut value = String::with_capacity(k.len() + 21);
                value.push_str(k);
                value.push(',');
                value.push_str(itoa::Buffer::new().format(n));
                out.push(Tuple {
                    key: k.into(),
                    value: value.into(),
                });
            }
            Builtin::Identity => out.push(t),
            Builtin::Chain(steps, Relay(cur, next)) => {
                let Some((last, first)) = steps.split_last_mut() else {
                    return out.push(t);
                };
                cur.clear();
                cur.push(t);
                for step in first {
                    next.clear();
                    for t in cur.drain(..) {
                        step.process(t, next);
                    }
                    std::mem::swap(cur, next);
                }
                for t in cur.drain(..) {
                    last.process(t, out);
                }
            }
        }
    }

    /// The step that holds state: a chain's last (chains do not nest), or the operator itself.
    fn keeper(&self) -> Option<&Builtin> {
        match self {
            Builtin::Chain(steps, _) => steps.last(),
            other => Some(other),
        }
    }

    fn keeper_mut(&mut self) -> Option<&mut Builtin> {
        match self {
            Builtin::Chain(steps, _) => steps.last_mut(),
            other => Some(other),
        }
    }

    /// The state of key groups `groups` (they move to another task): every count of a value
    /// in one of them, sorted. Stateless built-ins hold none.
    pub fn export(&self, groups: &BTreeSet<usize>) -> Vec<(String, u64)> {
        let Some(Builtin::CountBy { counts, .. }) = self.keeper() else {
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
        if let Some(Builtin::CountBy { counts, .. }) = self.keeper_mut() {
            counts.retain(|k, _| !groups.contains(&group_of(k)));
        }
    }

    /// Takes in state another task exported ([`export`](Self::export)): each value's count
    /// replaces whatever this operator held for it.
    pub fn import(&mut self, state: Vec<(String, u64)>) {
        if let Some(Builtin::CountBy { counts, .. }) = self.keeper_mut() {
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
    fn a_lone_empty_field_is_selected_as_a_quoted_empty_field() {
        let mut one = Builtin::from_spec("select", &["2".into()]).unwrap();
        let vals: Vec<_> = run(&mut one, &["a,,c", "a", r#"a,"",c"#, "a,b"])
            .into_iter()
            .map(|t| t.value)
            .collect();
        assert_eq!(vals, [r#""""#, r#""""#, r#""""#, "b"]);
        // Two or more empty fields are their commas, as a CSV writer has them.
        let mut two = Builtin::from_spec("select", &["2-3".into()]).unwrap();
        assert_eq!(run(&mut two, &["a,,"])[0].value, ",");
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

    fn chain(steps: &[(&str, &[&str])]) -> Builtin {
        let op = OperatorSpec::Chain {
            steps: steps
                .iter()
                .map(|(name, args)| crate::model::spec::ChainStep {
                    name: name.to_string(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
        };
        Builtin::from_operator(&op).unwrap().unwrap()
    }

    /// A chain gives what its steps give one after the other, keys and order kept.
    #[test]
    fn a_chain_feeds_each_step_s_output_to_the_next() {
        let lines = ["1,Tele,a,b", "2,wood,c,d", "3,Telespar,e,f", "4,x,g,h"];
        let mut chained = chain(&[
            ("filter", &["Tele"]),
            ("select", &["1,3"]),
            ("identity", &[]),
        ]);
        let (mut f, mut s) = (
            Builtin::from_spec("filter", &["Tele".into()]).unwrap(),
            Builtin::from_spec("select", &["1,3".into()]).unwrap(),
        );
        let mut by_hand = Vec::new();
        for t in run(&mut f, &lines) {
            s.process(t, &mut by_hand);
        }
        let got = run(&mut chained, &lines);
        assert_eq!(got, by_hand);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].value, "3,e");
        assert_eq!(got[1].key, "f:2");
    }

    /// A chain's state is its last step's: a count after a filter moves with its group.
    #[test]
    fn a_chain_ending_in_a_count_hands_its_counts_over() {
        let mut a = chain(&[("filter", &["T"]), ("count-by", &["2"])]);
        let mut b = chain(&[("filter", &["T"]), ("count-by", &["2"])]);
        let vals: Vec<_> = run(&mut a, &["T,x", "w,x", "T,y", "T,x"])
            .into_iter()
            .map(|t| t.value)
            .collect();
        assert_eq!(vals, ["x,1", "y,1", "x,2"]);
        let moving: BTreeSet<usize> = [group_of("x")].into();
        b.import(a.export(&moving));
        a.forget(&moving);
        assert!(a.export(&moving).is_empty());
        let vals: Vec<_> = run(&mut b, &["T,x", "no,x"])
            .into_iter()
            .map(|t| t.value)
            .collect();
        assert_eq!(vals, ["x,3"]);
    }
}

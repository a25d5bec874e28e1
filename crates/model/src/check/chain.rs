//! The rules of a chain of built-ins (`OperatorSpec::Chain`): each step a valid built-in, and
//! state only where routing can find it. Upstream routes a stage's input by the keyed
//! step's column as it reads the stage's input, so a keyed step (`count-by`) must be the last
//! and may follow only steps that pass values unchanged; otherwise its key groups would not
//! be where the routing sends them, and state would split across tasks.

use super::Problem;
use crate::builtin::{BuiltinSpec, VALUE_PRESERVING};
use crate::spec::ChainStep;

/// The most steps one chain may have: enough for any pipeline of built-ins, few enough that
/// a listing shows them.
pub(super) const MAX_STEPS: usize = 16;

/// The field of step `j` (0-based) of stage `i` (0-based), as the job file writes it.
fn step_field(i: usize, j: usize, f: &str) -> String {
    format!("stages[{}].chain[{}].{f}", i + 1, j + 1)
}

/// Every problem of the chain `steps` of stage `i` (0-based).
pub(super) fn chain_problems(i: usize, steps: &[ChainStep]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let field = super::stage_field(i, "chain");
    if steps.is_empty() {
        problems.push(Problem::new(
            field,
            "[]",
            "list the built-ins to chain, e.g. [{ op = \"filter\", args = [\"x\"] }, \
             { op = \"select\", args = [\"1\"] }]",
        ));
        return problems;
    }
    if steps.len() > MAX_STEPS {
        // Said once; its steps are not each parsed (a regex compiled per step of a chain a
        // client made huge would be work done for nothing).
        problems.push(Problem::new(
            field,
            format!("({} steps)", steps.len()),
            format!("a chain has at most {MAX_STEPS} steps"),
        ));
        return problems;
    }
    for (j, st) in steps.iter().enumerate() {
        if let Err(e) = BuiltinSpec::parse(&st.name, &st.args) {
            let msg = e.to_string();
            problems.push(if BuiltinSpec::is_known(&st.name) {
                Problem::new(step_field(i, j, "args"), format!("{:?}", st.args), msg)
            } else {
                Problem::new(step_field(i, j, "op"), &st.name, msg)
            });
            continue;
        }
        if BuiltinSpec::routing_column(&st.name, &st.args).is_none() {
            continue;
        }
        if j + 1 < steps.len() {
            problems.push(Problem::new(
                step_field(i, j, "op"),
                &st.name,
                format!(
                    "{} keeps state per key, so it must be a chain's last step (its tasks are \
                     chosen by its key; put the steps after it in a stage of their own)",
                    st.name
                ),
            ));
        } else if let Some(k) = steps[..j]
            .iter()
            .position(|s| !VALUE_PRESERVING.contains(&s.name.as_str()))
        {
            problems.push(Problem::new(
                step_field(i, j, "op"),
                &st.name,
                format!(
                    "{} reads its key from the stage's input, where upstream routes by it, so \
                     only steps that pass values unchanged ({}) may come before it; step {} is \
                     {}: put {} in a stage of its own",
                    st.name,
                    VALUE_PRESERVING.join(", "),
                    k + 1,
                    steps[k].name,
                    st.name
                ),
            ));
        }
    }
    problems
}

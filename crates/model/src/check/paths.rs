//! The limits every path of a job obeys, whatever it names (a store object or a local file):
//! no NUL byte, each component at most [`MAX_COMPONENT`] bytes, the whole at most
//! [`MAX_PATH`] bytes — what a file system can name. A path beyond them would be accepted at
//! submit and fail only when the job reaches it (the sink, at the very end), so it is refused
//! at the door, naming the field.

use super::{stage_field, Problem};
use crate::spec::{JobSpec, OperatorSpec};

/// The longest component (a name between slashes) of a path, in bytes (`NAME_MAX`).
pub const MAX_COMPONENT: usize = 255;

/// The longest path, in bytes (`PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// What is wrong with `path` by the limits above, if anything (an empty path is the caller's
/// concern: it is "missing", not malformed).
pub fn path_problem(path: &str) -> Option<String> {
    if path.contains('\0') {
        return Some("contains a NUL byte, which no file or store path can hold".to_string());
    }
    if path.len() > MAX_PATH {
        return Some(format!(
            "is {} bytes long; a path may be at most {MAX_PATH} bytes",
            path.len()
        ));
    }
    let long = path.split('/').find(|c| c.len() > MAX_COMPONENT)?;
    Some(format!(
        "has a component of {} bytes ({}…); each name between slashes may be at most {MAX_COMPONENT} bytes",
        long.len(),
        long.chars().take(16).collect::<String>()
    ))
}

/// The path problems of a job: its source, its sink and each executable operator.
pub(super) fn check_paths(spec: &JobSpec) -> Vec<Problem> {
    let mut fields: Vec<(String, &str)> = vec![
        ("source.path".to_string(), spec.source_path.as_str()),
        ("sink.path".to_string(), spec.sink_path.as_str()),
    ];
    for (i, st) in spec.stages.iter().enumerate() {
        if let OperatorSpec::Exec { path, .. } = &st.operator {
            fields.push((stage_field(i, "exec"), path.as_str()));
        }
    }
    fields
        .into_iter()
        .filter_map(|(field, path)| {
            let msg = path_problem(path)?;
            // A NUL would reach a terminal raw: show the value escaped.
            let value = if path.contains('\0') {
                format!("{path:?}")
            } else {
                path.to_string()
            };
            Some(Problem::new(field, value, msg))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Delivery, PathMode, StageSpec};

    fn job(source: &str, sink: &str, exec: &str) -> JobSpec {
        JobSpec {
            name: None,
            delivery: Delivery::ExactlyOnce,
            source_path: source.into(),
            source_name: "in".into(),
            rate: 0.0,
            sink_path: sink.into(),
            stages: vec![StageSpec {
                tasks: 1,
                operator: OperatorSpec::Exec {
                    path: exec.into(),
                    args: vec![],
                },
                autoscale: Default::default(),
                stateless: false,
            }],
            paths: PathMode::Store,
            keep_logs: false,
            autoscale: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn a_nul_a_long_component_or_a_long_path_is_refused_naming_the_field() {
        let long_name = "x".repeat(300);
        let long_path = vec!["d".repeat(200); 30].join("/");
        let s = job(
            "in\0.txt",
            &format!("out/{long_name}"),
            &format!("ops/{long_path}"),
        );
        let got: Vec<(String, bool)> = super::super::check_spec(&s)
            .into_iter()
            .map(|p| (p.field, !p.message.is_empty()))
            .collect();
        assert_eq!(
            got,
            [
                ("source.path".to_string(), true),
                ("sink.path".to_string(), true),
                ("stages[1].exec".to_string(), true),
            ]
        );
        let p = check_paths(&s);
        assert!(p[0].message.contains("NUL") && p[0].value == "\"in\\0.txt\"");
        assert!(p[1].message.contains("300 bytes") && p[1].message.contains("255"));
        assert!(p[2].message.contains("4096"), "{}", p[2]);
    }

    #[test]
    fn paths_at_the_limits_are_accepted() {
        let name = "n".repeat(MAX_COMPONENT);
        let mut path = vec!["d".repeat(200); 20].join("/");
        path.truncate(MAX_PATH);
        assert_eq!(path_problem(&name), None);
        assert_eq!(path_problem(&path), None);
        assert!(check_paths(&job("in.txt", &format!("o/{name}"), "ops/op.py")).is_empty());
    }
}

//! The course's positional job syntax (`submit-args`):
//! `<Nstages> <Ntasks> (<op_exe> <op_args>)×Nstages <src> <dest> <exactly_once> <autoscale> <rate> [<LW> <HW>]`.
//! It builds the same [`JobSpec`] a job file would and runs the same validator on it.

use crate::autoscale::AutoscaleSpec;
use crate::builtin::BuiltinSpec;
use crate::check::{check_spec, InvalidJob, Problem};
use crate::spec::{Delivery, JobSpec, OperatorSpec, PathMode, StageSpec};

fn bad(field: &str, value: &str, message: &str) -> InvalidJob {
    InvalidJob(vec![Problem::new(field, value, message)])
}

fn flag(field: &str, word: &str) -> Result<bool, InvalidJob> {
    match word.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(field, word, "must be true or false")),
    }
}

/// Builds a job from the course's positional syntax. Each `op_args` is one argument split like
/// a shell would (`'7 "Punched Telespar"'`); `""` means no arguments. An `op_exe` that names a
/// built-in runs the built-in.
pub fn from_course_args(argv: &[String]) -> Result<JobSpec, InvalidJob> {
    let arg = |i: usize| argv.get(i).map_or("", String::as_str);
    let nstages: usize = arg(0)
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| bad("Nstages", arg(0), "must be an integer ≥ 1"))?;
    let ntasks: u32 = arg(1)
        .parse()
        .map_err(|_| bad("Ntasks_per_stage", arg(1), "must be an integer ≥ 1"))?;
    let need = 2 + 2 * nstages + 5;
    if argv.len() != need && argv.len() != need + 2 {
        return Err(bad(
            "(arguments)",
            &argv.len().to_string(),
            &format!(
                "expected {need} or {} arguments for {nstages} stages",
                need + 2
            ),
        ));
    }
    let mut stages = Vec::new();
    for i in 0..nstages {
        let exe = &argv[2 + 2 * i];
        let args_word = &argv[3 + 2 * i];
        let args = shlex::split(args_word)
            .ok_or_else(|| bad(&format!("op{}_args", i + 1), args_word, "unbalanced quotes"))?;
        let operator = if BuiltinSpec::is_known(exe) {
            OperatorSpec::Builtin {
                name: exe.clone(),
                args,
            }
        } else {
            OperatorSpec::Exec {
                path: exe.clone(),
                args,
            }
        };
        stages.push(StageSpec::new(ntasks, operator));
    }
    let rest = &argv[2 + 2 * nstages..];
    let exactly_once = flag("exactly_once", &rest[2])?;
    let autoscale = flag("autoscale", &rest[3])?;
    let rate: f64 = rest[4]
        .parse()
        .map_err(|_| bad("input_rate", &rest[4], "must be a number ≥ 0"))?;
    let autoscale = if autoscale {
        let lw = rest.get(5).map(|s| s.parse::<f64>());
        let hw = rest.get(6).map(|s| s.parse::<f64>());
        match (lw, hw) {
            (Some(Ok(lw)), Some(Ok(hw))) if lw >= 0.0 && hw > lw => {
                Some(AutoscaleSpec::new(lw, hw))
            }
            _ => {
                return Err(bad(
                    "LW/HW",
                    &rest[5..].join(" "),
                    "autoscale needs two numbers LW < HW (tuples/s per task)",
                ))
            }
        }
    } else {
        None
    };
    let spec = JobSpec {
        name: None,
        delivery: if exactly_once {
            Delivery::ExactlyOnce
        } else {
            Delivery::AtLeastOnce
        },
        source_path: rest[0].clone(),
        source_name: rest[0].clone(),
        rate,
        sink_path: rest[1].clone(),
        stages,
        paths: PathMode::Store,
        keep_logs: false,
        autoscale,
        limits: Default::default(),
    };
    let problems = check_spec(&spec);
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(InvalidJob(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::Autoscale;
    use crate::jobfile::{parse_job_toml, tests::APP2};
    use crate::spec::autoscale_of;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn course_syntax_builds_the_same_job() {
        let spec = from_course_args(&argv(&[
            "2",
            "3",
            "ops/filter.py",
            "7 'Punched Telespar'",
            "count-by",
            "9",
            "signs.csv",
            "out/app2.txt",
            "true",
            "false",
            "0",
        ]))
        .unwrap();
        let expect = parse_job_toml(APP2).unwrap();
        assert_eq!(spec.stages, expect.stages);
        assert_eq!(spec.source_path, "signs.csv");
        assert_eq!(spec.source_name, expect.source_name);
        assert_eq!(spec.delivery, Delivery::ExactlyOnce);
    }

    #[test]
    fn the_same_validator_runs_on_course_jobs() {
        let err = from_course_args(&argv(&[
            "1", "0", "count-by", "zero", "in", "out", "no", "no", "-1",
        ]))
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["source.rate", "stages[1].tasks", "stages[1].args"]);
    }

    fn course(words: &[&str]) -> Result<JobSpec, InvalidJob> {
        from_course_args(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn course_syntax_autoscale_true_with_watermarks_gives_the_table_with_defaults() {
        let spec = course(&[
            "1", "2", "identity", "", "in", "out", "true", "true", "0", "200", "800",
        ])
        .unwrap();
        assert_eq!(spec.autoscale, Some(AutoscaleSpec::new(200.0, 800.0)));
        assert_eq!(
            autoscale_of(&spec, 1),
            Some(Autoscale {
                low: 200.0,
                high: 800.0,
                min_tasks: 1,
                max_tasks: 8,
                cooldown_s: 5.0,
                scale_down_grace_s: 30.0,
            })
        );
        // `false` ignores watermarks given anyway, as before.
        let spec = course(&[
            "1", "2", "identity", "", "in", "out", "true", "false", "0", "200", "800",
        ])
        .unwrap();
        assert_eq!(spec.autoscale, None);
        // `true` needs two numbers LW < HW, as before.
        for tail in [&[][..], &["800", "200"], &["x", "800"]] {
            let mut w = vec!["1", "2", "identity", "", "in", "out", "true", "true", "0"];
            w.extend_from_slice(tail);
            let err = course(&w).unwrap_err();
            assert_eq!(err.0[0].field, "LW/HW", "{tail:?}: {err}");
        }
        // Past the course's own check, the validator's: a stage wider than the cap it can reach.
        let err = course(&[
            "1", "300", "identity", "", "in", "out", "true", "true", "0", "200", "800",
        ])
        .unwrap_err();
        assert_eq!(err.0[0].field, "stages[1].tasks");
    }
}

//! The job file's autoscale tables: parsing, resolution (`spec::autoscale_of`) and JSON.

use super::parse_job_toml;
use crate::autoscale::*;
use crate::spec::{autoscale_of, JobSpec};

const HEAD: &str = "[source]\npath = \"in.csv\"\n[sink]\npath = \"out.txt\"\n";

/// A job file: `HEAD`, then `rest`.
fn parse(rest: &str) -> Result<JobSpec, crate::check::InvalidJob> {
    parse_job_toml(&format!("{HEAD}{rest}"))
}

fn problems(rest: &str) -> Vec<String> {
    match parse(rest) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|p| p.to_string()).collect(),
    }
}

const BOTH_TABLES: &str = r#"
[autoscale]
low = 200
high = 800.5
max_tasks = 6
scale_down_grace_s = 10

[[stages]]
tasks = 2
op = "identity"

[[stages]]
tasks = 3
op = "count-by"
args = ["1"]
[stages.autoscale]
high = 1000
min_tasks = 2
cooldown_s = 2.5

[[stages]]
tasks = 1
exec = "ops/upper.py"
autoscale = false
"#;

#[test]
fn a_job_file_with_the_job_table_a_stage_override_and_an_opt_out() {
    let spec = parse(BOTH_TABLES).unwrap();
    assert_eq!(
        spec.autoscale,
        Some(AutoscaleSpec {
            max_tasks: Some(6),
            scale_down_grace_s: Some(10.0),
            ..AutoscaleSpec::new(200.0, 800.5)
        })
    );
    assert_eq!(spec.stages[0].autoscale, StageAutoscale::Inherit);
    assert_eq!(
        spec.stages[1].autoscale,
        StageAutoscale::Override(AutoscaleOverride {
            high: Some(1000.0),
            min_tasks: Some(2),
            cooldown_s: Some(2.5),
            ..Default::default()
        })
    );
    assert_eq!(spec.stages[2].autoscale, StageAutoscale::Off);
    // Resolved: the job's values, the stage's where it gave them, the defaults for the rest.
    assert_eq!(
        autoscale_of(&spec, 1),
        Some(Autoscale {
            low: 200.0,
            high: 800.5,
            min_tasks: DEFAULT_MIN_TASKS,
            max_tasks: 6,
            cooldown_s: DEFAULT_COOLDOWN_S,
            scale_down_grace_s: 10.0,
        })
    );
    assert_eq!(
        autoscale_of(&spec, 2),
        Some(Autoscale {
            low: 200.0,
            high: 1000.0,
            min_tasks: 2,
            max_tasks: 6,
            cooldown_s: 2.5,
            scale_down_grace_s: 10.0,
        })
    );
    assert_eq!(autoscale_of(&spec, 3), None, "opted out");
    assert_eq!(autoscale_of(&spec, 0), None, "the source never rescales");
    assert_eq!(autoscale_of(&spec, 4), None, "nor the sink");
    assert_eq!(
        autoscale_of(&spec, 9),
        None,
        "nor a stage that does not exist"
    );
    let a = autoscale_of(&spec, 2).unwrap();
    assert_eq!(
        (a.cooldown_ms(), a.grace_ms(), a.target()),
        (2500, 10_000, 600.0)
    );
}

#[test]
fn without_any_table_nothing_autoscales() {
    let spec = parse("[[stages]]\nop = \"identity\"\n").unwrap();
    assert_eq!(spec.autoscale, None);
    assert_eq!(autoscale_of(&spec, 1), None);
    // Opting out of nothing is harmless.
    let spec = parse("[[stages]]\nop = \"identity\"\nautoscale = false\n").unwrap();
    assert_eq!(autoscale_of(&spec, 1), None);
}

#[test]
fn a_stage_may_autoscale_alone_with_both_watermarks() {
    let spec = parse(
        "[[stages]]\nop = \"identity\"\n[[stages]]\ntasks = 2\nop = \"identity\"\n\
         autoscale = { low = 10, high = 50, max_tasks = 4 }\n",
    )
    .unwrap();
    assert_eq!(autoscale_of(&spec, 1), None);
    let a = autoscale_of(&spec, 2).unwrap();
    assert_eq!(
        (a.low, a.high, a.min_tasks, a.max_tasks),
        (10.0, 50.0, 1, 4)
    );
    assert_eq!(
        problems("[[stages]]\nop = \"identity\"\n[stages.autoscale]\nlow = 10\n"),
        [
            "stages[1].autoscale.high = (missing): the job has no [autoscale] table, so a \
             stage that autoscales gives both low and high (input tuples/s per task)"
        ]
    );
}

#[test]
fn the_default_max_is_eight_or_the_starting_count() {
    let spec = parse(
        "[autoscale]\nlow = 1\nhigh = 2\n[[stages]]\ntasks = 3\nop = \"identity\"\n\
         [[stages]]\ntasks = 12\nop = \"identity\"\n",
    )
    .unwrap();
    assert_eq!(autoscale_of(&spec, 1).unwrap().max_tasks, DEFAULT_MAX_TASKS);
    assert_eq!(autoscale_of(&spec, 2).unwrap().max_tasks, 12);
}

#[test]
fn job_file_mistakes_are_named_and_shown_as_written() {
    let got = problems(
        "[autoscale]\nlow = \"slow\"\nhgih = 800\nmin_tasks = -1\n\
         [[stages]]\nop = \"identity\"\nautoscale = 3\n\
         [[stages]]\nop = \"identity\"\nautoscale = { max_tasks = 2.5 }\n",
    );
    assert_eq!(
        got,
        [
            "autoscale.low = \"slow\": must be a number of input tuples/s per task from 0 to 1000000000",
            "autoscale.high = (missing): must be a number of input tuples/s per task from 0 to 1000000000",
            "autoscale.min_tasks = -1: must be an integer from 1 to 256 (a stage's task counts)",
            "autoscale.hgih = 800: unknown autoscale setting; use low, high, min_tasks, max_tasks, \
             cooldown_s or scale_down_grace_s",
            "stages[1].autoscale = 3: must be false (this stage never rescales) or a \
             [stages.autoscale] table of settings",
            "stages[2].autoscale.max_tasks = 2.5: must be an integer from 1 to 256 (a stage's \
             task counts)",
        ]
    );
    assert_eq!(
        problems("[[stages]]\nop = \"identity\"\nautoscale = true\n"),
        [
            "stages[1].autoscale = true: turns on the job's autoscale settings, but the job has \
             no [autoscale] table: add one, or give this stage its own [stages.autoscale] \
             table with low and high"
        ]
    );
    let err = parse_job_toml(&format!(
        "autoscale = [200, 800]\n{HEAD}[[stages]]\nop = \"identity\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        err.0.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["autoscale = [200, 800]: must be a table of autoscale settings ([autoscale] with low and high)"]
    );
    // The validator's rules apply to job files as to any spec.
    assert_eq!(
        problems("[autoscale]\nlow = 800\nhigh = 200\n[[stages]]\nop = \"identity\"\n"),
        ["autoscale.low = 800: must be below high (200): a stage shrinks below low and grows above high"]
    );
}

#[test]
fn specs_round_trip_through_json_and_old_records_still_read() {
    let spec = parse(BOTH_TABLES).unwrap();
    let text = serde_json::to_string(&spec).unwrap();
    let back: JobSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
    // A stage that inherits is written as nothing (older readers see the stage they know);
    // the opt-out as `false`.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["stages"][0].get("autoscale").is_none(), "{v}");
    assert_eq!(v["stages"][2]["autoscale"], serde_json::json!(false));
    assert_eq!(v["autoscale"]["max_tasks"], serde_json::json!(6));
    assert!(
        v["autoscale"].get("min_tasks").is_none(),
        "absent stays absent: {v}"
    );
    // A record from before the table: `[LW, HW]`, stages without `autoscale`.
    let mut old: serde_json::Value =
        serde_json::to_value(JobSpec::sample(vec![crate::spec::StageSpec::new(
            2,
            crate::spec::OperatorSpec::Builtin {
                name: "identity".into(),
                args: vec![],
            },
        )]))
        .unwrap();
    old["autoscale"] = serde_json::json!([200.0, 800.0]);
    let read: JobSpec = serde_json::from_value(old).unwrap();
    assert_eq!(read.autoscale, Some(AutoscaleSpec::new(200.0, 800.0)));
    assert_eq!(read.stages[0].autoscale, StageAutoscale::Inherit);
    assert_eq!(autoscale_of(&read, 1).map(|a| a.max_tasks), Some(8));
}

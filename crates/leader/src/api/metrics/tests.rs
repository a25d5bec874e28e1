use super::*;
use prometheus_client::registry::Registry;

fn encode(snap: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snap));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

#[test]
fn label_values_are_escaped_and_histograms_are_cumulative_in_seconds() {
    let mut latency = Hist::default();
    latency.record(80, 2); // ≤ 100 µs
    latency.record(3_000, 1); // ≤ 5 ms
    let job = JobSample {
        id: "job-1".into(),
        name: "a\"b\\c\nd".into(),
        status: "running",
        source_tuples: 3,
        sink_tuples: 3,
        recoveries: 0,
        failures: 0,
        latency: Some(latency),
    };
    let text = encode(Snapshot {
        jobs: vec![job],
        ..Default::default()
    });
    assert!(
        text.contains(r#"rainstorm_job_info{job="job-1",name="a\"b\\c\nd",status="running"} 1"#),
        "{text}"
    );
    let bucket = |le: &str| {
        let want = format!(
            "rainstorm_job_end_to_end_latency_seconds_bucket{{le=\"{le}\",job=\"job-1\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .unwrap_or_else(|| panic!("no bucket {le}: {text}"))
            .to_string()
    };
    assert_eq!(bucket("0.0001"), "2");
    assert_eq!(bucket("0.0025"), "2");
    assert_eq!(bucket("0.005"), "3");
    assert_eq!(bucket("+Inf"), "3");
    assert!(text.contains("rainstorm_job_end_to_end_latency_seconds_count{job=\"job-1\"} 3"));
    assert!(text.contains("rainstorm_job_end_to_end_latency_seconds_sum{job=\"job-1\"} 0.00316"));
    assert!(text.contains("rainstorm_job_source_tuples_total{job=\"job-1\"} 3"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn stages_show_their_tasks_input_rate_and_ended_rescales() {
    let text = encode(Snapshot {
        stages: vec![StageSample {
            job: "job-1".into(),
            stage: 1,
            tasks: 3,
            input_rate: 612.5,
        }],
        rescales: vec![("job-1".into(), 1, "done", 2)],
        ..Default::default()
    });
    for line in [
        "# TYPE rainstorm_stage_tasks gauge",
        r#"rainstorm_stage_tasks{job="job-1",stage="1"} 3"#,
        "# TYPE rainstorm_stage_input_rate gauge",
        r#"rainstorm_stage_input_rate{job="job-1",stage="1"} 612.5"#,
        "# TYPE rainstorm_rescales counter",
        r#"rainstorm_rescales_total{job="job-1",stage="1",outcome="done"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

use super::*;
use crate::builtin::BuiltinSpec;
use crate::spec::StageSpec;

fn builtin(name: &str, args: &[&str]) -> OperatorSpec {
    OperatorSpec::Builtin {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn step(name: &str, arg: &str) -> ChainStep {
    ChainStep {
        name: name.into(),
        args: vec![arg.into()],
    }
}

fn first_stage(op: OperatorSpec) -> Option<SourceFilter> {
    let rest = builtin("count-by", &["2"]);
    SourceFilter::of(&JobSpec::sample(vec![
        StageSpec::new(2, op),
        StageSpec::new(2, rest),
    ]))
}

/// Only filters at the very start of the first stage are pushed: a lone one, or a chain's
/// leading ones; never a filter after another step, a later stage's, or an executable.
#[test]
fn only_the_first_stage_s_leading_filters_are_pushed() {
    assert_eq!(
        first_stage(builtin("filter", &["x"])),
        Some(SourceFilter {
            steps: vec![step("filter", "x")]
        })
    );
    let chain = OperatorSpec::Chain {
        steps: vec![
            step("filter-regex", "^a"),
            step("filter", "b"),
            step("select", "1"),
            step("filter", "c"),
        ],
    };
    assert_eq!(
        first_stage(chain),
        Some(SourceFilter {
            steps: vec![step("filter-regex", "^a"), step("filter", "b")]
        })
    );
    let late = OperatorSpec::Chain {
        steps: vec![step("select", "1"), step("filter", "c")],
    };
    assert_eq!(first_stage(late), None);
    assert_eq!(first_stage(builtin("identity", &[])), None);
    assert_eq!(first_stage(builtin("count-by", &["1"])), None);
    let exec = OperatorSpec::Exec {
        path: "f.py".into(),
        args: vec!["x".into()],
    };
    assert_eq!(first_stage(exec), None);
    // Only the first stage: a filter in the second is not the source's business.
    let spec = JobSpec::sample(vec![
        StageSpec::new(1, builtin("identity", &[])),
        StageSpec::new(1, builtin("filter", &["x"])),
    ]);
    assert_eq!(SourceFilter::of(&spec), None);
}

/// The pushed filter keeps exactly what the stage's own filter keeps, on the line as the
/// source sends it (invalid UTF-8 replaced), and its test on raw bytes never drops a line
/// the text would keep: with needles that are ASCII, multi-byte, U+FFFD itself and empty,
/// against lines with truncated and stray bytes around and inside a match.
#[test]
fn a_pushed_filter_keeps_what_the_stage_s_filter_keeps() {
    let needles = [
        "Tele",
        "el\u{FFFD}e",
        "é",
        "\u{FFFD}",
        "\u{FFFD}x",
        "",
        "é,",
        "𝄞",
    ];
    let mut lines: Vec<Vec<u8>> = vec![
        b"Telespar,1".to_vec(),
        b"Tel\xffespar".to_vec(),
        b"\xe9,x".to_vec(),
        "é,x".as_bytes().to_vec(),
        b"\xc3".to_vec(),
        b"\xc3\xc3\xa9,".to_vec(),
        b"\xe2\x82x".to_vec(),
        b"\xf0\x9d\x84".to_vec(),
        "a𝄞b".as_bytes().to_vec(),
        b"\xf0\x9d\x84\x9e".to_vec(),
        b"\xef\xbf\xbdx".to_vec(),
        Vec::new(),
    ];
    // Every line again with a stray byte before and after it.
    for l in lines.clone() {
        let mut v = vec![0x80];
        v.extend(&l);
        v.push(0xc3);
        lines.push(v);
    }
    for needle in needles {
        let pushed = SourceFilter {
            steps: vec![step("filter", needle)],
        }
        .compile()
        .unwrap();
        for raw in &lines {
            let text = String::from_utf8_lossy(raw);
            let stage = text.contains(needle);
            assert_eq!(pushed.keeps(&text), stage, "{needle:?} in {raw:?}");
            if pushed.decided_by_bytes() {
                assert_eq!(
                    pushed.may_keep(raw),
                    stage,
                    "{needle:?} in {raw:?} by its bytes"
                );
            } else if stage {
                assert!(
                    pushed.may_keep(raw),
                    "{needle:?} in {raw:?} dropped by its bytes"
                );
            }
        }
    }
    let re = SourceFilter {
        steps: vec![step("filter-regex", "^T.l"), step("filter", "spar")],
    }
    .compile()
    .unwrap();
    let BuiltinSpec::FilterRegex(stage_re) =
        BuiltinSpec::parse("filter-regex", &["^T.l".into()]).unwrap()
    else {
        panic!("not a regex filter")
    };
    for raw in &lines {
        let text = String::from_utf8_lossy(raw);
        let both = stage_re.is_match(&text) && text.contains("spar");
        assert_eq!(re.may_keep(raw) && re.keeps(&text), both, "{raw:?}");
    }
}

/// A step that is not a filter is refused, not silently passed.
#[test]
fn a_step_that_is_not_a_filter_does_not_compile() {
    let bad = SourceFilter {
        steps: vec![step("select", "1")],
    };
    assert!(bad.compile().is_err());
}

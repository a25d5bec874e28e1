use super::*;

#[test]
fn frames_round_trip() {
    let frames = vec![
        Frame::Hello(Hello {
            job: "job-1".into(),
            from_stage: 1,
            from_index: 2,
            from_attempt: 3,
            to_stage: 2,
            to_index: 0,
            to_attempt: 4,
            epoch: 1,
            acked: 77,
            eos_acked: true,
            proof: vec![1, 2, 3],
        }),
        Frame::Challenge([7; 16]),
        Frame::Batch {
            first_seq: 7,
            emit_ns: 99,
            tuples: vec![Tuple::new("k", "v"), Tuple::new("", "ünïcode")],
        },
        Frame::Eos { last_seq: 8 },
        Frame::Ack {
            upto: 8,
            eos: true,
            seen: 9,
            by: 2,
        },
        Frame::Reject {
            retry: true,
            reason: "no such task".into(),
        },
    ];
    for f in frames {
        assert_eq!(Frame::decode(f.encode()).unwrap(), f);
    }
}

#[test]
fn truncated_frames_are_errors_not_panics() {
    let full = Frame::Batch {
        first_seq: 1,
        emit_ns: 0,
        tuples: vec![Tuple::new("key", "value")],
    }
    .encode();
    for cut in 0..full.len() {
        assert!(Frame::decode(full.slice(..cut)).is_err());
    }
    assert!(matches!(
        Frame::decode(Bytes::from_static(&[42])),
        Err(WireError::UnknownTag(42))
    ));
}

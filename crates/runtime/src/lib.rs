//! What runs a task attempt on a worker: the attempt lifecycle, built-in and executable
//! operators, the source and the sink, the input log and the store it lives in.

#![warn(missing_docs)]

use rainstorm_dataplane as dataplane;
use rainstorm_model as model;
use rainstorm_protocol as protocol;

pub mod builtin;
pub mod commit_clock;
pub mod env;
pub mod exec;
pub mod links;
pub mod sink;
pub mod source;
pub mod task;

pub use rainstorm_store::{client, fetch, log, marker, opcache, reach, seal, store};

/// The fault-injecting store of the tests (it lives with them).
#[cfg(test)]
#[path = "../../../tests/support/faulty_store.rs"]
mod faulty;

/// Log segments for the unit tests.
#[cfg(test)]
mod test_log {
    use crate::log::{encode_record, seal_segment, BatchRecord, LogRecord};
    use crate::model::tuple::Tuple;
    use crate::seal::SealKey;
    use bytes::{Bytes, BytesMut};

    /// A segment of one batch from link 0 whose tuples are `values` under `key`, sealed by
    /// `seal` for `path`.
    pub(crate) fn segment(seal: &SealKey, path: &str, key: &str, values: &[&str]) -> Bytes {
        let mut body = BytesMut::new();
        encode_record(
            &mut body,
            &LogRecord::Batch(BatchRecord {
                from: 0,
                first_seq: 1,
                emit_ns: 0,
                tuples: values.iter().map(|v| Tuple::new(key, *v)).collect(),
            }),
        );
        seal_segment(&body, 1, seal, path)
    }
}

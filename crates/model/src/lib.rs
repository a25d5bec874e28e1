//! The vocabulary every other layer speaks: ids, tuples and their hash, job specs and their one
//! validator, and how tuples are partitioned. No I/O and no async here.

#![warn(missing_docs)]

pub mod autoscale;
pub mod backoff;
pub mod builtin;
pub mod check;
pub mod course;
pub mod csv;
pub mod groups;
pub mod hist;
pub mod ids;
pub mod jobfile;
pub mod latency;
pub mod limits;
pub mod partition;
pub mod pushdown;
pub mod spec;
pub mod tuple;

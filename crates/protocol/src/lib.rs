//! What crosses process boundaries: control-plane and API messages, data-plane frames, the line
//! format of executable operators; and how a door reports what it refuses. Encodings only; no
//! sockets.

#![warn(missing_docs)]

use rainstorm_model as model;

pub mod api;
pub mod assignment;
pub mod auth;
pub mod control;
pub mod dest;
pub mod frame;
pub mod headers;
pub mod line;
pub mod meters;
pub mod refusal;
pub mod reroute;
pub mod routing;

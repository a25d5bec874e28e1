//! HTTP headers of the control plane beyond the bearer token: a worker-store request's
//! registration and session, and the size the leader's store answers with.

/// Header naming the worker registration a worker-store request (`/internal/store`) comes
/// from; [`SESSION_HEADER`] carries that registration's session key.
pub const WORKER_HEADER: &str = "x-rainstorm-worker";

/// Header carrying the session key of the registration [`WORKER_HEADER`] names.
pub const SESSION_HEADER: &str = "x-rainstorm-session";

/// The header in which the leader's store answers an object's size (to a HEAD as to a GET):
/// a worker learns how large a source is without moving it.
pub const OBJECT_SIZE_HEADER: &str = "x-object-size";

/// Header naming the task attempt a worker's write of a job's output speaks for
/// (`JOB/STAGE.INDEX@ATTEMPT`): the leader admits the write only while that attempt is the
/// job's current sink attempt, so a sink attempt that was replaced and writes late (a worker
/// paused between its fence check and its upload) cannot land over the output.
pub const CLAIM_HEADER: &str = "x-rainstorm-claim";

//! What a registering worker's data address must be: one peers can connect to and views can
//! show, and no other live worker's.

use super::super::state::lock;
use super::super::Leader;
use crate::model::ids::WorkerId;
use crate::protocol::control::WorkerState;

/// Whether a worker's data address can be one: `HOST:PORT`, the host made of the characters
/// of names and IP addresses. Peers connect to it and every view shows it, so anything else
/// (markup, control characters) is refused at registration.
pub(super) fn plausible_addr(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    addr.len() <= 300
        && port.parse::<u16>().is_ok()
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]%".contains(c))
}

/// The live worker (alive or draining) other than the one rejoining that already has data
/// address `addr`, if any. Tasks are reached by their worker's address, so two workers on one
/// address would send both's input to whichever listens there: a hostile probe registered a
/// second worker on a live one's address (`--advertise`), and every task placed on it waited
/// for input that never came, through restarts placed on it again.
pub(super) fn live_holder(
    l: &Leader,
    addr: &str,
    rejoin: Option<&crate::protocol::control::Rejoin>,
) -> Option<WorkerId> {
    let st = lock(&l.state);
    st.workers
        .iter()
        .filter(|(id, _)| rejoin.is_none_or(|r| &r.worker_id != *id))
        .find(|(_, w)| {
            w.data_addr == addr && matches!(w.state, WorkerState::Alive | WorkerState::Draining)
        })
        .map(|(id, _)| id.clone())
}

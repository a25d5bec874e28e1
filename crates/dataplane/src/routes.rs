//! Where each task of a job currently runs. The leader pushes a new table whenever placement
//! changes (start, restart); links watch it and reconnect when their destination moves.

use crate::model::ids::{JobId, TaskPos};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Task position → where it runs (address, attempt, finished).
pub type RouteTable = HashMap<TaskPos, Dest>;

pub use crate::protocol::control::{Dest, Route};

/// Route tables of all jobs this process takes part in.
#[derive(Default)]
pub struct Routes {
    jobs: Mutex<HashMap<JobId, (watch::Sender<RouteTable>, u64)>>,
}

impl Routes {
    /// Installs a job's table unless a newer version is already installed: commands that
    /// carry tables may be applied out of order, and a stale table would point a link at a
    /// dead worker forever.
    pub fn set(&self, job: &JobId, version: u64, table: RouteTable) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.get_mut(job) {
            Some((tx, v)) => {
                if version >= *v {
                    *v = version;
                    tx.send_replace(table);
                }
            }
            None => {
                jobs.insert(job.clone(), (watch::channel(table).0, version));
            }
        }
    }

    /// A receiver that follows the job's table (created empty if unknown yet).
    pub fn watch(&self, job: &JobId) -> watch::Receiver<RouteTable> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.entry(job.clone())
            .or_insert_with(|| (watch::channel(RouteTable::new()).0, 0))
            .0
            .subscribe()
    }

    /// Follows a job's table only if the job is known here (never creates an entry).
    pub fn watch_existing(&self, job: &JobId) -> Option<watch::Receiver<RouteTable>> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(job).map(|(tx, _)| tx.subscribe())
    }

    /// A job's current table and its version, in list form (to bring a worker up to date).
    pub fn snapshot(&self, job: &JobId) -> Option<(u64, Vec<Route>)> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(job).map(|(tx, v)| {
            let list = tx.borrow().iter().map(|(p, d)| (*p, d.clone())).collect();
            (*v, list)
        })
    }

    /// Forgets a job; its links see the channel close and stop waiting for routes.
    pub fn remove(&self, job: &JobId) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.remove(job);
    }
}

/// Shared handle.
pub type SharedRoutes = Arc<Routes>;

impl Routes {
    /// Installs a job's table from the list form used in control messages.
    pub fn set_many(&self, job: &JobId, version: u64, routes: &[Route]) {
        self.set(job, version, routes.iter().cloned().collect());
    }
}

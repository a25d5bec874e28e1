//! What the leader keeps on disk under `--data-dir`, so a restarted leader knows what the last
//! one did: the lock that makes one leader the only user of the directory, the durable job
//! counter (job ids are never reused), the job records, and the worker identities it handed
//! out with each worker's public key (so a restarted leader lets a worker rejoin only with it).
//!
//! The records live behind [`JobStore`], a small synchronous trait: [`RedbJobs`] (an embedded
//! transactional database, `DATA_DIR/leader.redb`) is the one backend today; a consensus store
//! (etcd, for standby leaders) would be a second implementation, not a rewrite. [`Persist`] is
//! the handle the leader holds: it runs the blocking calls off the async workers.

use crate::model::ids::{JobId, WorkerId};
use crate::model::spec::JobSpec;
use crate::protocol::auth::PeerKey;
use crate::protocol::control::JobStatus;
use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A job's durable record: everything `jobs` and `job` show once the job has ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredJob {
    /// Id.
    pub id: JobId,
    /// The spec as submitted (operators pinned).
    pub spec: JobSpec,
    /// Status.
    pub status: JobStatus,
    /// Failure cause.
    pub error: Option<String>,
    /// Tuples the source emitted.
    pub source_tuples: u64,
    /// Lines the sink wrote.
    pub sink_tuples: u64,
    /// Task failures seen.
    pub failures: u64,
    /// Task restarts done.
    pub recoveries: u64,
    /// The latest failure of a current attempt: which, and why.
    #[serde(default)]
    pub last_failure: Option<String>,
    /// Submission time, ms since the Unix epoch.
    pub submitted_ms: u64,
    /// End time, ms since the Unix epoch.
    pub ended_ms: Option<u64>,
    /// The last failure to remove the job's leftovers (retried until it succeeds).
    #[serde(default)]
    pub cleanup_error: Option<String>,
    /// The job's input logs may still be in the store: set at creation, cleared once they are
    /// removed (or kept on purpose). A restarted leader removes what is still flagged.
    #[serde(default)]
    pub logs_left: bool,
    /// See `JobInfo::output_replaced`.
    #[serde(default)]
    pub output_replaced: Option<String>,
    /// While the job runs: where its tasks run, so a restarted leader carries it on.
    #[serde(default)]
    pub run: Option<RunState>,
    /// Its latency summary as of this record: an ended job's, shown on by a restarted leader
    /// (which has none of its sink's reports; hostile probe 13 saw it go null).
    #[serde(default)]
    pub latency: Option<crate::model::latency::Latency>,
    /// Its `scaling` list as of this record (a restarted leader shows it on).
    #[serde(default)]
    pub scaling: Vec<crate::protocol::control::ScaleInfo>,
    /// See `JobInfo::discarded_tuples`: what its tasks had reported when it ended.
    #[serde(default)]
    pub discarded: u64,
    /// An ended job's tasks as they were at its end (`rainstorm tasks`), shown on by a
    /// restarted leader, which has none of their reports (hostile probe 13: they vanished).
    #[serde(default)]
    pub tasks: Vec<crate::protocol::control::TaskInfo>,
    /// Each pinned operator's store path (`blobs/sha256/…`) and the path it was submitted as,
    /// which listings show.
    #[serde(default)]
    pub operator_names: std::collections::BTreeMap<String, String>,
}

pub use crate::coordinator::record::{PlacedTask, RunState};

/// A worker identity as recorded: where it listened and the public key it registered with
/// (the only key a rejoin under its id is accepted with).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnownWorker {
    /// Data address.
    pub data_addr: String,
    /// Its public key; none for an identity recorded before workers had keys (it can no
    /// longer be rejoined: its worker gets a new identity).
    pub key: Option<PeerKey>,
}

/// Durable leader state: a job counter that only grows, and job records by id. Every call is
/// one transaction, durable when it returns.
pub trait JobStore: Send + Sync {
    /// Takes the next number (1, 2, …) of a named counter (`job`, `worker`); a number is
    /// never handed out twice, even if what it was for is never recorded.
    fn next_number(&self, counter: &str) -> anyhow::Result<u64>;
    /// Creates or replaces a job's record.
    fn put_job(&self, job: &StoredJob) -> anyhow::Result<()>;
    /// Forgets a job's record (retention).
    fn remove_job(&self, id: &JobId) -> anyhow::Result<()>;
    /// Every recorded job.
    fn load_jobs(&self) -> anyhow::Result<Vec<StoredJob>>;
    /// Records a worker identity this leader handed out (its data address and public key), so
    /// a restarted leader can take the worker back under it, and only that worker.
    fn put_worker(&self, id: &WorkerId, worker: &KnownWorker) -> anyhow::Result<()>;
    /// Every recorded worker identity.
    fn load_workers(&self) -> anyhow::Result<Vec<(WorkerId, KnownWorker)>>;
    /// Forgets a worker identity (a registration never used: nothing can rejoin under it).
    fn remove_worker(&self, id: &WorkerId) -> anyhow::Result<()>;
}

const JOBS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("jobs");
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
const WORKERS: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("workers");

/// [`JobStore`] in a redb database: table `jobs` (id → JSON of [`StoredJob`]), table
/// `meta` (counter name, `job` or `worker` → the last number handed out) and table `workers`
/// (id → JSON of [`KnownWorker`]; a plain data address in records from before worker keys).
pub struct RedbJobs {
    db: redb::Database,
    /// Commits reach the disk before they return (`Durability::Immediate`); not for a
    /// scratch data dir ([`Persist::open_dir`]).
    durable: bool,
}

impl RedbJobs {
    /// Opens (or creates) the database at `path`; `durable`: every commit synced.
    pub fn open(path: &Path, durable: bool) -> anyhow::Result<RedbJobs> {
        let db = redb::Database::create(path)
            .with_context(|| format!("opening the leader's database {}", path.display()))?;
        let jobs = RedbJobs { db, durable };
        let tx = jobs.begin_write()?;
        tx.open_table(JOBS)?;
        tx.open_table(META)?;
        tx.open_table(WORKERS)?;
        tx.commit()?;
        Ok(jobs)
    }

    /// A write transaction, synced at commit unless the database is scratch.
    fn begin_write(&self) -> anyhow::Result<redb::WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        if !self.durable {
            tx.set_durability(redb::Durability::None)?;
        }
        Ok(tx)
    }
}

impl JobStore for RedbJobs {
    fn next_number(&self, counter: &str) -> anyhow::Result<u64> {
        let tx = self.begin_write()?;
        let n = {
            let mut meta = tx.open_table(META)?;
            let n = meta.get(counter)?.map_or(0, |v| v.value()) + 1;
            meta.insert(counter, n)?;
            n
        };
        tx.commit()?;
        Ok(n)
    }

    fn put_job(&self, job: &StoredJob) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(job)?;
        let tx = self.begin_write()?;
        tx.open_table(JOBS)?
            .insert(job.id.0.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn remove_job(&self, id: &JobId) -> anyhow::Result<()> {
        let tx = self.begin_write()?;
        tx.open_table(JOBS)?.remove(id.0.as_str())?;
        tx.commit()?;
        Ok(())
    }

    fn load_jobs(&self) -> anyhow::Result<Vec<StoredJob>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(JOBS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let job: StoredJob = serde_json::from_slice(v.value())
                .with_context(|| format!("job record {} is unreadable", k.value()))?;
            out.push(job);
        }
        Ok(out)
    }

    fn put_worker(&self, id: &WorkerId, worker: &KnownWorker) -> anyhow::Result<()> {
        let text = serde_json::to_string(worker)?;
        let tx = self.begin_write()?;
        tx.open_table(WORKERS)?
            .insert(id.0.as_str(), text.as_str())?;
        tx.commit()?;
        Ok(())
    }

    fn remove_worker(&self, id: &WorkerId) -> anyhow::Result<()> {
        let tx = self.begin_write()?;
        tx.open_table(WORKERS)?.remove(id.0.as_str())?;
        tx.commit()?;
        Ok(())
    }

    fn load_workers(&self) -> anyhow::Result<Vec<(WorkerId, KnownWorker)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(WORKERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let text = v.value();
            let worker = if text.starts_with('{') {
                serde_json::from_str(text)
                    .with_context(|| format!("worker record {} is unreadable", k.value()))?
            } else {
                // A record from before worker keys held the data address alone.
                KnownWorker {
                    data_addr: text.to_string(),
                    key: None,
                }
            };
            out.push((WorkerId(k.value().to_string()), worker));
        }
        Ok(out)
    }
}

/// The leader's handle on its durable state; blocking calls run on tokio's blocking pool.
#[derive(Clone)]
pub struct Persist(Arc<dyn JobStore>);

impl Persist {
    /// Wraps a backend.
    pub fn new(store: Arc<dyn JobStore>) -> Persist {
        Persist(store)
    }

    /// The redb backend at `DATA_DIR/leader.redb`; `scratch`: the data dir lives and dies
    /// with this process (`rainstorm run`), so commits are not synced (`LeaderConfig.scratch`).
    pub fn open_dir(data_dir: &Path, scratch: bool) -> anyhow::Result<Persist> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
        Ok(Persist(Arc::new(RedbJobs::open(
            &data_dir.join("leader.redb"),
            !scratch,
        )?)))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn JobStore) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let s = self.0.clone();
        tokio::task::spawn_blocking(move || f(s.as_ref()))
            .await
            .context("the leader's database call panicked")?
    }

    /// The next job number (job ids are `job-N-…`).
    pub async fn next_job_number(&self) -> anyhow::Result<u64> {
        self.blocking(|s| s.next_number("job")).await
    }

    /// The next worker number (worker ids are `wN`, never reused, so a worker registered with
    /// an earlier leader cannot be mistaken for one registered with this one).
    pub async fn next_worker_number(&self) -> anyhow::Result<u64> {
        self.blocking(|s| s.next_number("worker")).await
    }

    /// See [`JobStore::put_job`].
    pub async fn put_job(&self, job: StoredJob) -> anyhow::Result<()> {
        self.blocking(move |s| s.put_job(&job)).await
    }

    /// See [`JobStore::remove_job`].
    pub async fn remove_job(&self, id: JobId) -> anyhow::Result<()> {
        self.blocking(move |s| s.remove_job(&id)).await
    }

    /// See [`JobStore::load_jobs`].
    pub async fn load_jobs(&self) -> anyhow::Result<Vec<StoredJob>> {
        self.blocking(|s| s.load_jobs()).await
    }

    /// See [`JobStore::put_worker`].
    pub async fn put_worker(&self, id: WorkerId, worker: KnownWorker) -> anyhow::Result<()> {
        self.blocking(move |s| s.put_worker(&id, &worker)).await
    }

    /// See [`JobStore::load_workers`].
    pub async fn load_workers(&self) -> anyhow::Result<Vec<(WorkerId, KnownWorker)>> {
        self.blocking(|s| s.load_workers()).await
    }

    /// See [`JobStore::remove_worker`].
    pub async fn remove_worker(&self, id: WorkerId) -> anyhow::Result<()> {
        self.blocking(move |s| s.remove_worker(&id)).await
    }
}

/// An exclusive `flock` on `DATA_DIR/leader.lock`, held for the leader's life (the kernel
/// drops it when the process dies, however it dies). The file holds the holder's pid, so a
/// refused leader can name it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

impl DirLock {
    /// Takes the lock, or fails at once naming the directory and the pid holding it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
        let path = data_dir.join("leader.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "unknown pid".to_string(),
                    pid => format!("pid {pid}"),
                };
                anyhow::bail!(
                    "the data dir {} is in use by another leader ({holder}; lock file {})",
                    data_dir.display(),
                    path.display()
                );
            }
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(DirLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests;

//! The leader's first word with its store: the cluster id, read or written before anything
//! is served. A store that does not answer (an S3 endpoint down, a partition) is waited for
//! in short tries, each one logged, so an operator sees at once why the leader is not up,
//! instead of a port held in silence until the client's own retries give up (hostile probe 9).

use anyhow::Context;
use rainstorm_store::store::Store;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// How long one try may take before it is logged as unanswered and made again.
const TRY: Duration = Duration::from_secs(10);
/// How long the leader waits for its store in all before it gives up.
const WAIT: Duration = Duration::from_secs(180);
/// The pause between two tries.
const PAUSE: Duration = Duration::from_secs(2);

/// The cluster id the store holds (`fresh` written first if it holds none). A store that
/// answers with an error fails at once (a bucket missing, a refusal); one that does not
/// answer within a try is waited for, logged each try, for at most `WAIT`.
pub(crate) async fn cluster_id(store: &Store, fresh: &str) -> anyhow::Result<String> {
    cluster_id_within(store, fresh, TRY, WAIT).await
}

async fn cluster_id_within(
    store: &Store,
    fresh: &str,
    try_for: Duration,
    wait: Duration,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let what = || {
        format!(
            "reading or writing the cluster id in the store ({})",
            store.describe()
        )
    };
    loop {
        match tokio::time::timeout(try_for, rainstorm_store::marker::ensure(store, fresh)).await {
            Ok(answer) => return answer.with_context(what),
            Err(_) if started.elapsed() + try_for > wait => {
                anyhow::bail!(
                    "{}: no answer in {} s; is the store up and reachable?",
                    what(),
                    started.elapsed().as_secs()
                );
            }
            Err(_) => {
                warn!(
                    store = %store.describe(),
                    waited_s = started.elapsed().as_secs(),
                    gives_up_s = wait.as_secs(),
                    "the store does not answer; the leader serves once it does"
                );
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that holds every request without an answer (an endpoint that accepts TCP and
    /// says nothing): each try is cut short and made again, and the wait ends with an error
    /// that says what was waited for.
    #[tokio::test]
    async fn a_store_that_never_answers_is_waited_for_in_tries_then_given_up() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let store = Store::http(&format!("http://{addr}"));
        let started = std::time::Instant::now();
        let err = cluster_id_within(
            &store,
            "fresh",
            Duration::from_millis(300),
            Duration::from_millis(700),
        )
        .await
        .unwrap_err();
        let said = format!("{err:#}");
        assert!(
            said.contains("no answer in") && said.contains("cluster id"),
            "{said}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        drop(silent);
    }
}

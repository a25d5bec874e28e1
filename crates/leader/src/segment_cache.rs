//! The decoded text of sink-log objects, shared by every follower of the leader.
//!
//! A follower reads a running job's committed output object by object (`committed.rs`), and
//! each object is up to a log segment's size (8 MiB). Each follower once read and decoded its
//! own copy: 120 followers of one job held 120 copies of the object at the head of its log
//! (the leader at 620 MB; hostile probe 13). Here the first follower to reach an object reads
//! it, and the others take the same reference-counted text.
//!
//! An object's path names the same text for as long as the object exists: a log segment is
//! written once by one attempt, and a compacted object holds the same slots' text as the
//! segments it replaced. So a cached text is never wrong, only possibly of an object that has
//! since been compacted away; a cursor that lists the log again reads the new one.
//!
//! The cache holds at most [`BUDGET`] bytes, the least recently used object leaving first; an
//! object larger than the budget is not kept. A follower keeps the text of the object it is
//! inside whether or not the cache still does.

use axum::body::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most bytes of decoded text the cache keeps.
pub const BUDGET: usize = 64 << 20;

/// Decoded sink-log objects by store path (see the module doc).
#[derive(Default)]
pub struct SegmentCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each object's segments' text, its size, and when it was last used (a counter).
    objects: HashMap<String, (Vec<Bytes>, usize, u64)>,
    /// Bytes held.
    held: usize,
    /// The use counter.
    clock: u64,
}

impl SegmentCache {
    /// The text of each segment of the object at `path`, if it is kept.
    pub fn get(&self, path: &str) -> Option<Vec<Bytes>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.clock += 1;
        let now = g.clock;
        let (texts, _, used) = g.objects.get_mut(path)?;
        *used = now;
        Some(texts.clone())
    }

    /// Keeps the text of the object at `path`, making room by dropping the least recently used.
    pub fn put(&self, path: &str, texts: &[Bytes]) {
        self.put_within(path, texts, BUDGET)
    }

    fn put_within(&self, path: &str, texts: &[Bytes], budget: usize) {
        let size: usize = texts.iter().map(Bytes::len).sum();
        if size > budget {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.clock += 1;
        let now = g.clock;
        if let Some((_, old, _)) = g.objects.remove(path) {
            g.held -= old;
        }
        while g.held + size > budget {
            let Some(oldest) = (g.objects.iter())
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some((_, n, _)) = g.objects.remove(&oldest) {
                g.held -= n;
            }
        }
        g.held += size;
        g.objects
            .insert(path.to_string(), (texts.to_vec(), size, now));
    }

    /// Drops every object under `prefix` (an ended job's logs: its followers read its output
    /// file from then on, and the text stayed until evicted; hostile probe 19).
    pub fn forget_under(&self, prefix: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = g
            .objects
            .keys()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        for p in gone {
            if let Some((_, n, _)) = g.objects.remove(&p) {
                g.held -= n;
            }
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<Bytes> {
        vec![Bytes::from(vec![b'x'; n])]
    }

    /// Two readers of one object share one copy of its text; the least recently used object
    /// leaves first when the budget is reached, and one larger than the budget is not kept.
    #[test]
    fn readers_share_one_copy_and_the_least_recently_used_leaves_first() {
        let c = SegmentCache::default();
        c.put_within("a", &text(40), 100);
        let first = c.get("a").unwrap();
        let second = c.get("a").unwrap();
        assert_eq!(first[0].as_ptr(), second[0].as_ptr(), "one copy");
        c.put_within("b", &text(40), 100);
        // "a" used after "b" was put: "b" is the least recently used.
        c.get("a").unwrap();
        c.put_within("c", &text(40), 100);
        assert!(c.get("b").is_none());
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert_eq!(c.held(), 80);
        c.put_within("huge", &text(101), 100);
        assert!(c.get("huge").is_none());
        assert_eq!(c.held(), 80);
        // Put again under the same path: counted once.
        c.put_within("a", &text(40), 100);
        assert_eq!(c.held(), 80);
    }

    #[test]
    fn an_ended_job_s_text_leaves_the_cache() {
        let c = SegmentCache::default();
        c.put("logs/job-1/2.0/a.seg", &text(10));
        c.put("logs/job-12/2.0/a.seg", &text(20));
        c.forget_under("logs/job-1/");
        assert!(c.get("logs/job-1/2.0/a.seg").is_none());
        assert!(c.get("logs/job-12/2.0/a.seg").is_some());
        assert_eq!(c.held(), 20);
    }
}

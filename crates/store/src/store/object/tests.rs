//! Unit tests of `object`.

use super::super::{clean_path, Store};
use super::*;

async fn names(store: &Store, prefix: &str) -> Vec<String> {
    let all = store.list(prefix).await.unwrap();
    all.into_iter().map(|o| o.path).collect()
}

#[tokio::test]
async fn local_put_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    store
        .put("a/b/one", Bytes::from_static(b"1"))
        .await
        .unwrap();
    store.put("a/two", Bytes::from_static(b"22")).await.unwrap();
    store.put("c", Bytes::from_static(b"")).await.unwrap();
    assert_eq!(&store.get("a/b/one").await.unwrap()[..], b"1");
    assert_eq!(names(&store, "").await, ["a/b/one", "a/two", "c"]);
    assert_eq!(names(&store, "a/").await, ["a/b/one", "a/two"]);
    let (mut removed, err) = store.delete_report("a").await;
    removed.sort();
    assert!(err.is_none());
    assert_eq!(removed, ["a/b/one", "a/two"]);
    assert!(matches!(
        store.get("a/two").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!dir.path().join("a").exists());
    assert!(clean_path("../etc/passwd").is_err());
    assert_eq!(clean_path("/x/./y").unwrap(), "x/y");
}

/// An in-memory object store that cannot delete one object (as a bucket policy or a
/// failing disk may refuse), so a delete stops part-way deterministically.
#[derive(Debug)]
struct Undeletable {
    inner: Arc<object_store::memory::InMemory>,
    stuck: &'static str,
}

impl std::fmt::Display for Undeletable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Undeletable({})", self.stuck)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Undeletable {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        let inner = self.inner.clone();
        let stuck = self.stuck;
        locations
            .then(move |p| {
                let inner = inner.clone();
                async move {
                    let p = p?;
                    if p.as_ref() == stuck {
                        return Err(object_store::Error::Generic {
                            store: "undeletable",
                            source: format!("{p}: permission denied").into(),
                        });
                    }
                    inner.delete(&p).await.map(|()| p)
                }
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn a_delete_that_stops_part_way_reports_what_it_removed() {
    let store = Store::from(super::super::Backend::Object(Arc::new(Objects {
        inner: Arc::new(Undeletable {
            inner: Arc::default(),
            stuck: "d/b",
        }),
        root: None,
        url: "undeletable".into(),
    })));
    for p in ["d/a", "d/b", "d/c", "e"] {
        store.put(p, Bytes::from_static(b"x")).await.unwrap();
    }
    let (mut removed, err) = store.delete_report("d").await;
    removed.sort();
    assert_eq!(
        removed,
        ["d/a", "d/c"],
        "exactly what was removed is reported"
    );
    let err = err.expect("the delete must report its failure");
    assert!(err.to_string().contains("d/b"), "{err}");
    // What could not go is left, and nothing outside `d` was touched.
    assert_eq!(names(&store, "").await, ["d/b", "e"]);
    // The same delete through `delete_prefix` is an error, not a silent success.
    assert!(store.delete_prefix("d").await.is_err());
}

#[tokio::test]
async fn store_listing_cannot_escape_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path().join("store")).unwrap();
    std::fs::write(dir.path().join("secret"), b"x").unwrap();
    for p in ["../", "../../etc/", "a/../../", "./..", "a/./b"] {
        assert!(
            matches!(store.list(p).await, Err(StoreError::BadPath(_))),
            "{p}"
        );
    }
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn streamed_put_writes_whole_objects_small_and_large() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..20).map(|_| Ok(chunk.clone())).collect();
    let n = store
        .put_stream("big/file", futures::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(n, 20 << 20);
    assert_eq!(store.size("big/file").await.unwrap(), 20 << 20);
    let small: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"hi"))];
    store
        .put_stream("small", futures::stream::iter(small))
        .await
        .unwrap();
    assert_eq!(&store.get("small").await.unwrap()[..], b"hi");
    assert_eq!(names(&store, "").await, ["big/file", "small"]);
}

#[tokio::test]
async fn a_broken_upload_leaves_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let chunk = Bytes::from(vec![1u8; 1 << 20]);
    let mut chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..12).map(|_| Ok(chunk.clone())).collect();
    chunks.push(Err(std::io::Error::other("client went away")));
    let err = store
        .put_stream("half", futures::stream::iter(chunks))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upload broke"), "{err}");
    assert!(!store.exists("half").await.unwrap());
    assert!(names(&store, "").await.is_empty());
}

/// The S3 code path (no local root), on an in-memory object store: a body that breaks
/// commits nothing, whether it would have been one request or a multipart upload, and an
/// object already there keeps its whole content.
#[tokio::test]
async fn a_broken_upload_to_an_object_store_commits_nothing() {
    let store = Store::from(super::super::Backend::Object(Arc::new(Objects {
        inner: Arc::new(object_store::memory::InMemory::new()),
        root: None,
        url: "memory".into(),
    })));
    store
        .put("o", Bytes::from_static(b"whole\n"))
        .await
        .unwrap();
    let chunk = Bytes::from(vec![3u8; 1 << 20]);
    // Under SINGLE_PUT (one request) and beyond it (multipart, aborted).
    for chunks in [2, SINGLE_PUT / (1 << 20) + 4] {
        for path in ["o", "new"] {
            let mut body: Vec<Result<Bytes, std::io::Error>> =
                (0..chunks).map(|_| Ok(chunk.clone())).collect();
            body.push(Err(std::io::Error::other("gone")));
            let err = store
                .put_stream(path, futures::stream::iter(body))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("upload broke"), "{err}");
        }
        assert_eq!(&store.get("o").await.unwrap()[..], b"whole\n");
        assert!(!store.exists("new").await.unwrap());
    }
}

/// A symbolic link planted in a local store's directory, to a file and to a directory outside
/// it, cannot be read, written, listed or deleted through: every such path is refused, and
/// nothing outside the store is read or changed.
#[tokio::test]
async fn a_symlink_inside_the_store_directory_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"private").unwrap();
    let store = Store::local(dir.path().join("store")).unwrap();
    store
        .put("real/ok", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    let root = dir.path().join("store");
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("file")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("real/link")).unwrap();
    let refused = |r: Result<(), StoreError>, what: &str| {
        assert!(matches!(r, Err(StoreError::Symlink(_))), "{what}: {r:?}");
    };
    for p in ["evil/secret", "file", "real/link"] {
        refused(store.get(p).await.map(drop), &format!("get {p}"));
        refused(store.open(p).await.map(drop), &format!("open {p}"));
        refused(store.size(p).await.map(drop), &format!("size {p}"));
        refused(store.local_path(p).map(drop), &format!("local_path {p}"));
    }
    refused(
        store.put("evil/new", Bytes::from_static(b"x")).await,
        "put through a linked directory",
    );
    refused(
        store.put("evil/secret", Bytes::from_static(b"x")).await,
        "put over a file through a linked directory",
    );
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"y"))]);
    refused(
        store.put_stream("evil/streamed", body).await.map(drop),
        "streamed put through a linked directory",
    );
    let (removed, err) = store.delete_report("evil").await;
    assert!(removed.is_empty(), "{removed:?}");
    refused(err.map_or(Ok(()), Err), "delete through a link");
    // A listing shows only what really is in the store.
    assert_eq!(names(&store, "").await, ["real/ok"]);
    assert_eq!(names(&store, "evil/").await, Vec::<String>::new());
    // Nothing outside changed, and the store's own files still work.
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"private");
    let mut left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["secret"]);
    assert_eq!(&store.get("real/ok").await.unwrap()[..], b"ok");
}

/// A NUL byte in a store path is refused as a bad path, saying why, before any file system
/// call could fail on it.
#[tokio::test]
async fn a_nul_in_a_store_path_is_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let e = clean_path("a/b\0c").unwrap_err();
    assert!(matches!(e, StoreError::BadByte { .. }), "{e:?}");
    assert!(e.to_string().contains("NUL"), "{e}");
    let got = store.get("x\0").await;
    assert!(matches!(got, Err(StoreError::BadByte { .. })), "{got:?}");
}

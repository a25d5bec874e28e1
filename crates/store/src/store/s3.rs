//! The S3 side of the object backend: parsing `--store s3://bucket/prefix` and building an
//! `object_store` client for any S3-compatible service from the usual AWS environment (with an
//! endpoint override, and plain HTTP only to a loopback endpoint). Apart from `object.rs`
//! because none of it runs for a local store; once built, an S3 store is an [`Objects`] like
//! any other.

use super::object::Objects;
use super::{clean_path, install_crypto, StoreError};
use object_store::ObjectStore;
use std::sync::Arc;

/// A parsed `s3://bucket/prefix` store location and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// Endpoint override (an S3-compatible service), else `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`.
    pub endpoint: Option<String>,
}

/// What is wrong with a store URL.
#[derive(Debug, thiserror::Error)]
pub enum S3UrlError {
    /// Not `s3://…`.
    #[error("{0:?}: a store URL is s3://BUCKET[/PREFIX]")]
    NotS3(String),
    /// `s3://` with nothing after it.
    #[error("{0:?}: no bucket")]
    NoBucket(String),
    /// A prefix that is not a clean store path.
    #[error(transparent)]
    BadPrefix(#[from] StoreError),
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str, endpoint: Option<String>) -> Result<S3Location, S3UrlError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| S3UrlError::NotS3(url.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3UrlError::NoBucket(url.to_string()));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            clean_path(&prefix)?;
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
            endpoint,
        })
    }
}

/// Whether an `http://` endpoint names this host (plain HTTP is allowed only there).
fn loopback_http(ep: &str) -> bool {
    let Some(rest) = ep.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    let host = if rest.starts_with('[') {
        rest.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Objects {
    /// An S3-compatible bucket (see [`super::Store::s3`]).
    pub(super) fn s3(loc: &S3Location) -> Result<Objects, StoreError> {
        use object_store::aws::AmazonS3Builder;
        install_crypto();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&loc.bucket);
        let endpoint = loc
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        if let Some(ep) = &endpoint {
            b = b.with_endpoint(ep);
            if loopback_http(ep) {
                b = b.with_allow_http(true);
            }
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            b = b.with_region("us-east-1");
        }
        let s3 = b.build().map_err(|e| StoreError::Object {
            path: format!("s3://{}", loc.bucket),
            msg: e.to_string(),
        })?;
        let inner: Arc<dyn ObjectStore> = if loc.prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                s3,
                loc.prefix.as_str(),
            ))
        };
        let url = match loc.prefix.as_str() {
            "" => format!("s3://{}", loc.bucket),
            p => format!("s3://{}/{p}", loc.bucket),
        };
        Ok(Objects {
            inner,
            root: None,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse() {
        let l = S3Location::parse("s3://bkt/some/prefix/", None).unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("bkt", "some/prefix")
        );
        assert!(S3Location::parse("s3://", None).is_err());
        assert!(S3Location::parse("/dir", None).is_err());
        assert!(S3Location::parse("s3://b/../x", None).is_err());
    }

    #[test]
    fn plain_http_only_for_a_loopback_endpoint() {
        for ep in [
            "http://127.0.0.1:5000",
            "http://localhost:9000/",
            "http://[::1]:9",
        ] {
            assert!(loopback_http(ep), "{ep}");
        }
        for ep in [
            "http://example.com",
            "https://127.0.0.1:5000",
            "http://10.0.0.1",
        ] {
            assert!(!loopback_http(ep), "{ep}");
        }
    }
}

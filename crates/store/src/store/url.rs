//! A store path in a URL.

/// Bytes a store path keeps as they are in a URL: letters, digits, `-._~` and the `/` between
/// its segments. Every other byte is percent-encoded.
const URL_KEEPS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `path` as it goes into a URL's path (`/api/store/{this}`): a `?` or `#` in a store path
/// would otherwise start the URL's query or fragment, and `%41` be read as `A` (a probe saw
/// `put A 'r/f?1'` and `put B 'r/f?2'` both write `r/f`).
pub fn url_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, URL_KEEPS).to_string()
}

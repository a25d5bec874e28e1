//! The dashboard's files, checked as text: values reach the page only as text, and the policy
//! runs no inline code.

use super::*;

/// Ways a script turns a string into markup or code.
const HTML_SINKS: &[&str] = &[
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
    "eval(",
    "new Function",
    "setAttribute('on",
    "setAttribute(\"on",
];

#[test]
fn the_script_builds_cells_as_text_never_as_html() {
    for sink in HTML_SINKS {
        assert!(!SCRIPT.contains(sink), "dashboard.js uses {sink}");
    }
    assert!(SCRIPT.contains(".textContent = "));
}

/// Every `<tag …>` of the page, as written.
fn tags(page: &str) -> Vec<&str> {
    page.split('<')
        .skip(1)
        .filter_map(|t| t.split_once('>').map(|(tag, _)| tag))
        .collect()
}

#[test]
fn the_page_has_no_inline_script_style_or_handler() {
    for tag in tags(PAGE) {
        let lower = tag.to_ascii_lowercase();
        let attrs: Vec<&str> = lower.split_whitespace().skip(1).collect();
        assert!(
            !attrs
                .iter()
                .any(|a| a.starts_with("on") || a.starts_with("style=")),
            "<{tag}>"
        );
        if lower.starts_with("script") {
            assert!(
                lower.contains(&format!("src=\"{SCRIPT_ROUTE}\"")),
                "<{tag}>"
            );
        }
        assert!(!lower.starts_with("style"), "an inline <style>");
    }
    // Nothing between a script's tags.
    for part in PAGE.split("<script").skip(1) {
        let (_, inner) = part.split_once('>').unwrap();
        assert!(
            inner.trim_start().starts_with("</script>"),
            "inline script: {inner}"
        );
    }
}

#[test]
fn the_policy_runs_only_this_origins_files() {
    let script_src = POLICY
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap();
    assert_eq!(script_src, "script-src 'self'");
    assert!(!POLICY.contains("unsafe"));
    assert!(POLICY.contains("default-src 'none'"));
}

#[test]
fn the_script_adds_handlers_with_add_event_listener_only() {
    // A handler property (`el.onclick = …`) is not blocked by the policy, but the page's rule
    // is one way in: addEventListener.
    let bytes = SCRIPT.as_bytes();
    for (i, _) in SCRIPT.match_indices(".on") {
        let name: String = SCRIPT[i + 3..]
            .chars()
            .take_while(char::is_ascii_lowercase)
            .collect();
        let after = SCRIPT[i + 3 + name.len()..].trim_start();
        assert!(
            name.is_empty() || !after.starts_with('=') || after.starts_with("=="),
            "a handler property .on{name} at byte {i}: {:?}",
            String::from_utf8_lossy(&bytes[i..(i + 40).min(bytes.len())])
        );
    }
    assert!(SCRIPT.contains("addEventListener('click'"));
    // Styles only through the CSSOM, which `style-src 'self'` allows.
    assert!(!SCRIPT.contains("setAttribute('style'") && !SCRIPT.contains("cssText"));
}

#[test]
fn every_element_the_script_looks_up_is_on_the_page() {
    let ids: Vec<&str> = SCRIPT
        .split("getElementById('")
        .skip(1)
        .filter_map(|s| s.split('\'').next())
        .collect();
    assert!(ids.len() >= 4, "{ids:?}");
    for id in ids {
        assert!(
            PAGE.contains(&format!("id=\"{id}\"")),
            "no #{id} in page.html"
        );
    }
}

#[test]
fn the_bottleneck_is_decided_in_one_function_and_marked_for_tests() {
    assert_eq!(SCRIPT.matches("function bottleneck(").count(), 1);
    assert_eq!(SCRIPT.matches("bottleneck(sums").count(), 1);
    assert!(SCRIPT.contains("THE BOTTLENECK RULE"));
    for attr in [
        "dataset.stage = ",
        "dataset.bottleneck = ",
        "dataset.job = ",
        "dataset.stageTasks = ",
    ] {
        assert!(SCRIPT.contains(attr), "the script never sets {attr}");
    }
}

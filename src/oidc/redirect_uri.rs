//! Redirect URI registration and matching. The registration rules
//! themselves live with the client record in the store, where the settings
//! check and the CLI reach them without going through the HTTP layer.
//!
//! Matching is **exact string comparison** (RFC 9700 §2.1 and §4.1.3; OIDC
//! Core §3.1.2.1; ASVS 10.4.1): no wildcard, prefix, suffix, or "parse both
//! and compare the parts", which is how `..;/`, `@`, look-alike hosts and
//! backslash tricks got through in Keycloak (CVE-2024-8883, CVE-2026-3872,
//! CVE-2026-7504) and oauth2-proxy (CVE-2020-5233). The single exception is
//! the one RFC 8252 §7.3 requires: a native app's loopback redirect on an IP
//! literal may use any port.

use url::Url;

use crate::store::Client;
pub use crate::store::{validate_registration, validate_web_origin};

/// The origin of an absolute URI as browsers serialize it (RFC 6454 §6.2);
/// `None` for a URI whose origin is opaque (a private-use scheme).
pub fn origin_of(uri: &str) -> Option<String> {
    let origin = Url::parse(uri).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Whether a browser on `origin` may read `client`'s answers from the
/// token endpoint (CORS): one of its web origins, or the origin of one of
/// its redirect URIs, where a single-page app runs (as Auth0 allows its
/// callback URLs' origins by default).
pub fn cors_allowed(client: &Client, origin: &str) -> bool {
    client.web_origins.iter().any(|o| o == origin)
        || client
            .redirect_uris
            .iter()
            .any(|uri| origin_of(uri).as_deref() == Some(origin))
}

/// True when `requested` is one of `registered`, compared as strings.
pub fn matches(registered: &[String], requested: &str) -> bool {
    registered
        .iter()
        .any(|r| r == requested || loopback_port_match(r, requested))
}

/// RFC 8252 §7.3: `http://127.0.0.1:{any port}/path` matches
/// `http://127.0.0.1/path` (and likewise for `[::1]`). Everything but the
/// port is still compared as an exact string.
fn loopback_port_match(registered: &str, requested: &str) -> bool {
    for host in ["http://127.0.0.1", "http://[::1]"] {
        if let (Some(r), Some(q)) = (registered.strip_prefix(host), requested.strip_prefix(host)) {
            let (r, q) = (strip_port(r), strip_port(q));
            if let (Some(r), Some(q)) = (r, q) {
                return r == q && (q.is_empty() || q.starts_with('/'));
            }
        }
    }
    false
}

/// `":8080/cb"` → `Some("/cb")`; `"/cb"` → `Some("/cb")`; anything else after
/// the host (`".evil.com/"`, `"@evil/"`) → `None`.
fn strip_port(rest: &str) -> Option<&str> {
    match rest.strip_prefix(':') {
        Some(after) => {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            (digits > 0 && digits <= 5).then(|| &after[digits..])
        }
        None => (rest.is_empty() || rest.starts_with('/')).then_some(rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_may_change_only_the_port() {
        let reg = vec!["http://127.0.0.1/callback".to_string()];
        assert!(matches(&reg, "http://127.0.0.1:51004/callback"));
        assert!(matches(&reg, "http://127.0.0.1/callback"));
        assert!(!matches(&reg, "http://127.0.0.1:51004/callback/x"));
        assert!(!matches(&reg, "http://127.0.0.1.evil.com/callback"));
        assert!(!matches(&reg, "http://127.0.0.1:80@evil.com/callback"));
        assert!(!matches(&reg, "http://localhost:51004/callback"));
    }

    #[test]
    fn registration_refuses_what_cannot_be_a_safe_redirect() {
        assert!(validate_registration("https://app.example.com/cb").is_ok());
        assert!(validate_registration("com.example.app:/oauth").is_ok());
        assert!(validate_registration("http://127.0.0.1/cb").is_ok());
        for bad in [
            "https://app.example.com/cb#x",
            "http://app.example.com/cb",
            "http://localhost/cb",
            "https://user@app.example.com/cb",
            "javascript:alert(1)",
            "myapp:/cb",
            "/relative",
            "https://app.example.com/a b",
            "https://app.example.com\\@evil.com/",
        ] {
            assert!(
                validate_registration(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn web_origins_are_bare_origins() {
        assert!(validate_web_origin("https://app.example.com").is_ok());
        assert!(validate_web_origin("https://app.example.com:8443").is_ok());
        assert!(validate_web_origin("http://127.0.0.1:3000").is_ok());
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/spa",
            "https://app.example.com:443",
            "https://APP.example.com",
            "http://app.example.com",
            "http://localhost:3000",
            "com.example.app:",
            "*",
            "null",
        ] {
            assert!(validate_web_origin(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            origin_of("https://app.example.com:8443/cb?x=1").as_deref(),
            Some("https://app.example.com:8443")
        );
        assert_eq!(origin_of("com.example.app:/oauth"), None);
    }
}

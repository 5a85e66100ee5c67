//! Switchyard's test kit: what the integration tests (`tests/api`) and the
//! benches (`benches/`) share, in one crate instead of files included by
//! path. It does not depend on `switchyard`, so the product's types exist
//! once in a test binary; helpers that need them (starting the app, adding
//! its users and clients) stay with the tests.
//!
//! - [`fake`]: fake upstream identity providers, one [`fake::FakeUpstream`]
//!   per vendor ([`fake::Flavor`]), served over real HTTP on `127.0.0.1:0`.
//!   Each follows its vendor's own documentation rather than the textbook:
//!   - Auth0: the Authentication API (authorization-code flow with PKCE,
//!     the `password-realm` grant, `/v2/logout`, its 403 `invalid_grant`
//!     and rate-limit headers) and the Management API v2 (`/api/v2/users`
//!     with its 1,000-result limit, `PATCH /api/v2/users/{id}`, user-export
//!     jobs);
//!   - Okta: the OpenID Connect & OAuth 2.0 API of a custom authorization
//!     server (`/oauth2/default/v1/…`, JWT access tokens, `00u…` ids) and
//!     the Users API (`/api/v1/users`, the cursor in the `Link` header,
//!     partial profile updates, `SSWS` tokens);
//!   - Keycloak: a realm's OpenID Connect endpoints
//!     (`/realms/{realm}/protocol/openid-connect/…`, 401 for a wrong
//!     password, refresh tokens on every grant) and the Admin REST API
//!     (`/admin/realms/{realm}/users`);
//!   - AWS Cognito: the user-pool endpoints of the hosted UI
//!     (`/oauth2/…`, `/logout`), the Amazon Cognito Identity Provider API
//!     Reference (`InitiateAuth`, `ListUsers`, `AdminUpdateUserAttributes`,
//!     AWS JSON 1.1) and the AWS General Reference for Signature Version 4;
//!   - Generic: OpenID Connect Core and Discovery with RFC 6749, RFC 7636
//!     (PKCE), RFC 7009 (revocation) and RFC 9207 (`iss` in the response).
//! - [`http`]: the client side of a test: PKCE pairs, `Location` and query
//!   parsing, the forms of login pages, cookies carried by hand, and the
//!   two kinds of `reqwest` client (a browser tab, an application's back
//!   end).
//! - [`isolation`]: a database and session namespace per test (a SQLite
//!   file in a temporary directory, or a fresh PostgreSQL schema and Redis
//!   key prefix), cleaned up when the test ends.
//! - [`smtp`]: an SMTP sink on `127.0.0.1:0` that keeps each message, can
//!   answer with a temporary or permanent error, and reads a message's
//!   parts and reset link.
//! - [`process`]: programs a test starts for itself (aiosmtpd, moto, a
//!   private `redis-server`), on a free port, killed when dropped.
//! - [`chrome`]: a headless Chromium driven over the W3C WebDriver protocol.
//! - [`cpu`] and [`stats`]: CPU accounting from /proc and percentiles, for
//!   the benches.

pub mod chrome;
pub mod cpu;
pub mod fake;
pub mod http;
pub mod isolation;
pub mod process;
pub mod smtp;
pub mod stats;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 256 random bits, base64url without padding (43 characters), as
/// Switchyard's own tokens are.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

//! Everything Switchyard signs or hands out.
//!
//! - [`keys`]: signing keys (generation, storage, rotation, the JWKS).
//! - [`jwt`]: ID tokens and RFC 9068 access tokens, minted and verified.
//! - [`grants`]: the short-lived records behind codes, sessions and refresh
//!   families, kept in the session store.
//! - [`pool`]: the threads RSA signatures run on.

pub mod grants;
pub mod jwt;
pub mod keys;
pub mod pool;

//! cvbench's registry side: push images from the local store to an OCI distribution registry
//! and pull them back ([`client`]), after checking what the registry sent ([`media`]); and a
//! private registry process of our own for the tests and the bench ([`server`]).
//!
//! The HTTP side is `oci-client` (the ORAS project's Rust client, the one krustlet, wasmCloud
//! and Kubewarden use): it speaks the distribution API, the bearer-token dance a registry asks
//! for with `WWW-Authenticate`, chunked uploads and range reads, and is kept up to date with
//! the spec, none of which is what this benchmark is about. It is built with `native-tls`
//! (the system OpenSSL) rather than rustls, which keeps the build light on our 2-core hosts.
//! What we own is everything the store must trust: the manifest kinds and media types we
//! accept, the linux/amd64 choice, the size and digest check of every blob before it is
//! renamed into the store, and leaving nothing behind when a pull fails.

pub mod client;
pub mod media;
pub mod server;

pub use client::{Client, Options, PullReport, PushReport};
pub use server::LocalRegistry;

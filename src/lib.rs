//! hoist: a monorepo's container-image pipeline, from commit to production
//! tag.
//!
//! The pure core parses and decides ([`workflow`], [`pattern`], [`dialect`], [`gitea`],
//! [`changes`], [`lint`], [`config`]); the edges talk to the world ([`git`],
//! [`ci`]); [`cmd`] wires one command from the two.

pub mod build;
pub mod build_log;
pub mod canary;
pub mod changes;
pub mod ci;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod context;
pub mod deps;
pub mod dialect;
pub mod dirty;
pub mod docker;
pub mod dockerignore;
pub mod error;
pub mod export;
pub mod filesync;
pub mod git;
pub mod gitea;
pub mod https;
pub mod init;
pub mod layer_cache;
pub mod lint;
pub mod manifest;
pub mod pattern;
pub mod promote;
pub mod publish;
pub mod push;
pub mod registry;
pub mod secret;
pub mod session;
pub mod workflow;

//! # panther-triage
//!
//! A daemon that triages Panther SIEM alerts: it reads alerts, enriches their indicators against
//! threat-intel lookup tables, decides a verdict, and writes the investigation back to Panther.
//!
//! # Layout
//! - [`indicator`]: indicator kinds and their normalization (ENRICHMENT.md), IP parsing as Python does it.
//! - [`tables`]: loading lookup tables (anomali, csv, list) into an immutable index; the winner rule.
//! - [`enrich`]: the pure function from an alert's events and the tables to matches and skipped values.
//! - [`json`]: borrowed JSON pieces for the hot paths (no `serde_json::Value` trees).
//! - [`chunks`]: reading big line-oriented files in chunks on a thread of their own.
//! - [`health`]: what `/readyz` answers (ledger open, tables loaded, a recent successful poll).
//! - [`metrics`]: the Prometheus metric names, their help text, and helpers to record them.
//! - [`server`]: the health and metrics HTTP server (`/healthz`, `/readyz`, `/metrics`).
//! - [`cli`]: the commands; [`bench`]: the speed comparison with the Python reference; [`bench_api`]:
//!   API calls per alert and throughput per transport.
//!
//! See ARCHITECTURE.md for the data flow and the invariants.

pub mod app;
pub mod bench;
pub mod bench_api;
pub mod chunks;
pub mod cli;
pub mod config;
pub mod enrich;
pub mod fake_panther;
pub mod filter;
pub mod health;
pub mod indicator;
pub mod json;
pub mod ledger;
pub mod metrics;
pub mod panther;
pub mod poller;
pub mod private_file;
pub mod regex;
pub mod render;
pub mod retriage;
pub mod server;
pub mod sync;
pub mod tables;
pub mod triage;
pub mod webhook;

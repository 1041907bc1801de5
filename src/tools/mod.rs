//! Offline tools: they read files and configs, never the network, and nothing here runs on the
//! request path.
//!
//! - [`dataset`]: `tailor dataset check`, the upload's validation and price of a dataset file.
//! - [`simulate`]: recorded traffic replayed through a candidate config, with projected cost.

pub mod dataset;
pub mod simulate;

//! Does the fine-tune pay for itself? Counted per arm by the [`ledger`] and exported as
//! counters ([`export`]); read back for the whole fleet from Prometheus ([`fleet`]) or for this
//! replica from its ledger; judged by the pure [`report`]; shown by `/economics` (JSON), the
//! status [`page`], `tailor report` and the `tailor_finetune_*` gauges. [`stats`]: the 95%
//! intervals that say how sure an answer is.

mod chart;
pub mod export;
pub mod fleet;
pub mod ledger;
pub mod page;
pub mod report;
pub mod stats;

pub use ledger::{ArmStats, Counts, Ledger, Snapshot, Traffic};
pub use page::render_html;
pub use report::{publish, report, Report};

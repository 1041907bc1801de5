//! Does the fine-tune pay for itself? Counted per arm by the [`ledger`], judged by the pure
//! [`report`], shown by `/economics` (JSON), the status [`page`] and the `tailor_finetune_*`
//! gauges. [`stats`]: the 95% intervals that say how sure an answer is.

pub mod ledger;
pub mod page;
pub mod report;
pub mod stats;

pub use ledger::{ArmStats, Counts, Ledger, Snapshot, Traffic};
pub use page::render_html;
pub use report::{publish, report, Report};

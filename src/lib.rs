//! cvbench: the harness library behind the `cvbench` CLI and the criterion
//! benches. It runs one static workload binary on several backends (native,
//! containers, micro-VMs, and peer systems), records every run in one schema,
//! and turns result sets into reports.

pub mod backend;
pub mod bench;
pub mod doctor;
pub mod env;
pub mod figures;
pub mod footprint;
pub mod group_hold;
pub mod hostkind;
pub mod lab;
pub mod paths;
pub mod record;
pub mod report;
pub mod results;
pub mod runner;
pub mod stats;
pub mod swarm;
pub mod workload;

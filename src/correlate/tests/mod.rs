//! Engine rules, fed event by event, one file per concern; builders in `fixtures`.

pub(in crate::correlate) mod fixtures;

mod canary;
mod causes;
mod daemonset;
mod joins;
mod memory;
mod reconcile;
mod relist;
mod rollout;
mod setbacks;
mod source;
mod traffic;
mod verdict;
mod workloads;

//! The end-to-end tests, as one test binary so that the AWS SDKs are linked once (not once per
//! file). Each module is one former `tests/*.rs` file; `support` is what they share: the local
//! AWS (the project's emulator, moto underneath), the real iotreg binary run against it, drift
//! made from outside, and the fault-injecting proxy.
//!
//! Tests from every module run in one process, in parallel: nothing here may rely on
//! process-wide state (environment variables, the current directory, fixed ports, statics).
//! Each test starts its own emulator on a port of its own and runs iotreg as a child process
//! with its own environment and working directory.

mod support;

mod analytics;
mod bad_input;
mod bulk;
mod claim;
mod converge;
mod crash;
mod device;
mod fault_proxy;
mod faults;
mod first_run;
mod fleet;
mod fleet_pages;
mod hardening;
mod jobs;
mod jobs_device;
mod monitoring;
mod permissions;
mod plan;
mod provisioning;
mod state;
mod up_down;
mod verify;

//! iotreg: provision, verify and tear down an AWS IoT device-registry stack as code.

mod aws;
mod cli;
mod commands;
mod config;
mod deployment;
mod device;
mod engine;
mod fsutil;
mod http_get;
mod keys;
mod lint;
mod manifest;
mod output;
mod plan;
mod ratelimit;
mod resources;
mod retry;
mod settings;
mod state;
mod templates;
mod verify;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

use commands::ExitStatus;

fn main() {
    let cli = cli::Cli::parse();
    let code = match settings::Settings::resolve(cli) {
        Err(e) => {
            eprintln!("iotreg: error: {e}");
            ExitStatus::BadInput
        }
        Ok(settings) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async {
                let cancel = Arc::new(AtomicBool::new(false));
                tokio::spawn(watch_signals(cancel.clone()));
                commands::run(settings, cancel).await.unwrap_or_else(|e| {
                    // Each error in the chain is a short line of its own (AWS failures
                    // included: their long detail goes to stderr with -v only).
                    eprintln!("iotreg: error: {e:#}");
                    ExitStatus::of_error(&e)
                })
            })
        }
    };
    std::process::exit(code as i32);
}

/// First Ctrl-C (or SIGTERM): start nothing new, let in-flight steps finish and save state.
/// Second: exit at once; state is still consistent, as it is saved atomically after each step.
async fn watch_signals(cancel: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut count = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        count += 1;
        if count == 1 {
            cancel.store(true, Ordering::SeqCst);
            eprintln!("iotreg: interrupted; finishing the steps in flight and saving state (Ctrl-C again to exit now)");
        } else {
            // A lock in S3 outlives the process: let it go first (a local one goes anyway).
            state::release_held_locks();
            std::process::exit(ExitStatus::Interrupted as i32);
        }
    }
}

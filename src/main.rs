use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use obrec::cli::{Cli, Command, RecordArgs};
use obrec::shutdown::Shutdown;
use obrec::{demo, health, interop, logging, recorder, replay, serve, sim};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("obrec: {err:#}");
            exit_code(&err)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("cannot install signal handlers")?;
    match cli.command {
        None => record(&cli.record, &shutdown),
        Some(Command::Record(args)) => record(&args, &shutdown),
        Some(Command::Replay(args)) => {
            let _log = logging::to_stderr("warn")?;
            Ok(passed(replay::run(&args)?))
        }
        Some(Command::Export(args)) => Ok(passed(interop::run_export(&args)?)),
        Some(Command::Import(args)) => Ok(passed(interop::run_import(&args)?)),
        Some(Command::Sim(args)) => {
            let _log = logging::to_stderr("info")?;
            sim::run(&args, &shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve(args)) => {
            let _log = logging::to_stderr("info")?;
            serve::run(&args, &shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Health(args)) => match health::check(&args, std::time::SystemTime::now())? {
            None => {
                println!("healthy");
                Ok(ExitCode::SUCCESS)
            }
            Some(reason) => {
                println!("unhealthy: {reason}");
                Ok(ExitCode::FAILURE)
            }
        },
        Some(Command::Demo(args)) => {
            demo::run(&args, &shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn record(args: &RecordArgs, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let config = args.config();
    config.preflight()?;
    let _log = logging::to_files(&args.log_options())?;
    recorder::run(&config, shutdown).context("recording failed")?;
    Ok(ExitCode::SUCCESS)
}

/// 0 when a check passed, 1 when it found a problem.
fn passed(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// 2 for input the user can fix, 1 for failures at run time.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<obrec::Error>() {
        Some(obrec::Error::Invalid(_)) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

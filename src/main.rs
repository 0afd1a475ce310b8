#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match obrec::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("obrec: {err:#}");
            exit_code(&err)
        }
    }
}

/// 2 for input the user can fix, 1 for failures at run time.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<obrec::Error>() {
        Some(obrec::Error::Invalid(_)) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

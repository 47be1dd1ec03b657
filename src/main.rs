use clap::Parser;
use hoist::ci::Ci;
use hoist::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ci = Ci::from_env();
    match hoist::cmd::run(cli, &ci) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            ci.error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}

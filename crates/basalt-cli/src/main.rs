//! The `basalt` binary: parses arguments, resolves settings once, and hands over to one command
//! module per subcommand.

mod commands;
mod settings;
mod startup;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Command;
use crate::settings::{GlobalArgs, Settings};

/// Basalt: a self-hosted platform for generative AI over private documents.
#[derive(Debug, Parser)]
#[command(name = "basalt", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  basalt models fetch                     install the default local models
  basalt models list --verify             show installed models and check their hashes
  basalt embed --json \"What is basalt?\"   print an embedding as JSON
  basalt generate \"Name three rocks.\"     stream an answer from the local chat model
  basalt bench models --json              measure the local engines";

fn main() -> ExitCode {
    startup::settle_openmp_waits();
    let cli = Cli::parse();
    settings::init_tracing(cli.global.verbose);
    basalt_ingest::quiet_parser_panics();
    // Making a master key reads none: a key file configured but not made yet is what it is for.
    let mut global = cli.global;
    if matches!(
        cli.command,
        commands::Command::Keys(commands::security::KeysCommand::GenerateMaster { .. })
    ) {
        global.master_key_file = None;
    }
    let settings = match Settings::resolve(&global) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    match commands::run(cli.command, &settings) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "while …: cause".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

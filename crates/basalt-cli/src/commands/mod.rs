//! One module per subcommand; each exposes its clap arguments and a `run` function.

mod bench;
mod embed;
mod generate;
mod models;

use std::process::ExitCode;

use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Install, list and check the local models
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Embed texts with the local embedding model
    Embed(embed::EmbedArgs),
    /// Generate text with the local chat model
    Generate(generate::GenerateArgs),
    /// Measure Basalt's engines (and, with --peers, the reference engines)
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub(crate) fn run(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Models(command) => models::run(command, settings),
        Command::Embed(args) => embed::run(&args, settings),
        Command::Generate(args) => generate::run(&args, settings),
        Command::Bench(command) => bench::run(command, settings),
    }
}

/// Prints a line to stdout, where answers and JSON go. A closed pipe (`basalt … | head`) ends the
/// program quietly instead of panicking.
pub(crate) fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

//! The `panther-triage` binary: parses the command line and hands it to the library.

use clap::Parser as _;

fn main() {
    let cli = panther_triage::cli::Cli::parse();
    std::process::exit(panther_triage::cli::run(cli));
}

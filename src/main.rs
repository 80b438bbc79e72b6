//! The `weft` command: the controller and the one-shot commands share one binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Supply-chain integrity for Argo CD: verify, sign, publish and record what gets deployed"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "WEFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Watch Argo CD Applications and IntegrityProfiles and record ApplicationProvenance.
    Controller(weft::kubernetes::controller::Options),
    /// Serve the validating admission webhook: admit only what matches the signed manifests of a verified
    /// revision.
    Webhook(weft::admission::webhook::Options),
    /// Print the CustomResourceDefinitions (YAML) Weft needs.
    Crds,
    /// Verify a git revision against a profile's source policies (exit 0 verified, 1 failed, 2 bad input).
    VerifySource(weft::commands::verify_source::Args),
    /// Verify container images (listed, or used by rendered manifests) against a profile's image policies
    /// (exit 0 verified, 1 failed, 2 bad input).
    VerifyImages(weft::commands::verify_images::Args),
    /// The whole pipeline for one Application without a cluster: verify, render, sign, publish.
    Run(weft::commands::run::Args),
    /// Re-check recorded provenance end to end (exit 0 when it holds, 1 when not, 2 for bad input).
    Provenance(weft::commands::provenance::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Crds => match weft::crds::stream() {
            Ok(yaml) => {
                weft::commands::print_out(format_args!("{yaml}"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs: {e}");
                ExitCode::from(2)
            }
        },
        Command::VerifySource(args) => ExitCode::from(weft::commands::verify_source::run(args)),
        Command::VerifyImages(args) => ExitCode::from(weft::commands::verify_images::run(args)),
        Command::Run(args) => ExitCode::from(weft::commands::run::run(args)),
        Command::Provenance(args) => ExitCode::from(weft::commands::provenance::run(args)),
        Command::Webhook(opts) => {
            match tokio::runtime::Runtime::new().map(|rt| rt.block_on(weft::admission::webhook::run(opts))) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "webhook stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Controller(opts) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(weft::kubernetes::controller::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "controller stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info,oci_client=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
